"""The settings, as frozen dataclasses: each field's default, its rule (``checks.Rule``) and a comment.

These defaults are the only ones: ``conf/local.yaml`` holds just what the embedded default changes,
and docs/configuration.md is generated from this file (``tools/config_reference.py``).
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sparkrec.config.checks import ConfigError, Rule

# The choices of the settings that name a mode; the modules that act on them read them from here.
METASTORES = ("in-memory", "hive")
POOLINGS = ("mean", "cls")
LONG_TEXT = ("truncate", "chunk")
CUDA_PRECISIONS = ("fp16", "bf16", "fp32")
HISTORY_MODES = ("earlier", "others")
LABEL_MODES = ("latest", "random")
COLLABORATIVE_MODELS = ("auto", "ease", "knn")
RANKERS = ("learned", "retrieval")
FALLBACK_SEGMENTS = ("category", "global")

IDENTIFIER = r"[A-Za-z_][A-Za-z0-9_]*"
ALIAS = r"[A-Za-z0-9_-]+"
URI_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:/")


def setting(default: Any, **rule: Any) -> Any:
    """A dataclass field: its default and the ``Rule`` (``at_least=1``, ``choices=(...)``) its value keeps."""
    metadata = {"rule": Rule(**rule)} if rule else {}
    if isinstance(default, dict | list):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class SparkConfig:
    # Spark master URL: local[*] for the embedded default, spark://host:7077, yarn, k8s://...;
    # empty: leave it to the environment. Under spark-submit, --master decides and this is not used.
    master: str = "local[*]"
    # Application name shown in the Spark UI and logs.
    app_name: str = setting("sparkrec", pattern=r".+", meaning="a name")
    # Driver JVM heap; only takes effect when sparkrec starts the JVM (not under spark-submit).
    driver_memory: str = setting("4g", pattern=r"(?i)\d+([kmgtp]b?)?", meaning="a size such as 4g or 512m")
    # Shuffle partitions: a few per core on one machine, more on a cluster.
    shuffle_partitions: int = setting(4, at_least=1, at_most=100_000)
    # Show Spark's console progress bar for long stages.
    show_progress: bool = True
    # Version of the Delta jar (io.delta:delta-spark_<spark>_2.13) when it must differ from the
    # delta-spark pip package: 4.4.1 is on PyPI, but Maven Central's newest jar is 4.4.0 (the Python
    # code of the two is identical). Empty: the pip package's own version.
    delta_jar_version: str = setting("4.4.0", pattern=r"(\d+\.\d+\.\d+\S*)?", meaning="a version such as 4.4.0")
    # Any further Spark settings, passed as they are (e.g. spark.executor.memory).
    conf: dict[str, str] = setting({})


@dataclass(frozen=True)
class LakehouseConfig:
    # Root folder (or URI) of the Delta tables; each table lives at <root>/<table>.
    root: str = setting("./lakehouse", pattern=r".+", meaning="a folder or URI")
    # A run holds its landing days' locks (<root>/_locks) for at most this long; a later run takes
    # over an older lock (its run died without removing it).
    run_lock_hours: int = setting(24, at_least=1, at_most=24 * 30)


@dataclass(frozen=True)
class LandingConfig:
    # Root of the landing zone: <root>/events/ds=YYYY-MM-DD/ and <root>/items/ds=YYYY-MM-DD/.
    root: str = setting("./landing", pattern=r".+", meaning="a folder or URI")


@dataclass(frozen=True)
class CatalogConfig:
    # Database (schema) in which every session registers the tables by name (SQL: sparkrec.recommendations).
    database: str = setting("sparkrec", pattern=IDENTIFIER, meaning="a name of letters, digits and _")
    # Catalog of three-level names (Unity Catalog: main gives main.sparkrec.recommendations); empty:
    # two-level names in the session's current catalog.
    name: str = setting("", pattern=f"({IDENTIFIER})?", meaning="a name of letters, digits and _, or empty")
    # "in-memory": tables are registered in each new session; "hive": a persistent metastore keeps
    # them, registered once and visible by name from any session that uses it.
    metastore: str = setting("in-memory", choices=METASTORES)
    # With metastore hive: the JDBC URL of the metastore's database (tools/metastore.sh starts a
    # PostgreSQL one: jdbc:postgresql://127.0.0.1:5433/sparkrec_metastore?user=sparkrec). Empty:
    # Spark's own settings decide (hive-site.xml, spark.hadoop.hive.metastore.uris, a cluster's).
    metastore_url: str = setting("", pattern=r"(jdbc:\w+:.+)?", meaning="a JDBC URL (jdbc:postgresql://…) or empty")
    # The metastore database's user (or user= in the URL).
    metastore_user: str = ""
    # Its password: from ${ENV}, never written in a file (masked wherever the config is shown).
    metastore_password: str = ""
    # Delta's change data feed on the recommendations table (table_changes: a day's inserted and
    # removed rows), for downstream stores that sync incrementally.
    change_data_feed: bool = True

    @property
    def namespace(self) -> str:
        """Where the tables are named in SQL: ``sparkrec``, or ``main.sparkrec`` with a catalog name."""
        return f"{self.name}.{self.database}" if self.name else self.database


@dataclass(frozen=True)
class SqlServerConfig:
    # `sparkrec sql-server start`: Spark's Thrift JDBC/ODBC server (HiveServer2 protocol) and a Spark
    # Connect server in one process, over the tables of this config. Bound to this address only; they
    # ask no password, so another address belongs behind a proxy that authenticates.
    host: str = setting("127.0.0.1", pattern=r"[A-Za-z0-9_.:-]+", meaning="a host name or address")
    # JDBC/ODBC clients: jdbc:hive2://host:port (beeline, BI tools).
    port: int = setting(10000, at_least=1, at_most=65535)
    # Spark Connect clients: sc://host:connect_port.
    connect_port: int = setting(15002, at_least=1, at_most=65535)
    # The server's driver heap (it runs every query of its clients, in local mode).
    driver_memory: str = setting("2g", pattern=r"(?i)\d+([kmgtp]b?)?", meaning="a size such as 2g or 512m")
    # The server's process id, log and ports live here (a local folder).
    state_dir: str = setting("./.sql-server", pattern=r".+", meaning="a folder")


@dataclass(frozen=True)
class MlflowConfig:
    # Tracking URI: a SQLite file by default; an http(s) server or "databricks" by config.
    tracking_uri: str = setting("sqlite:///./mlflow.db", pattern=r".+", meaning="a tracking URI")
    # Where run artifacts (models, plots) go for experiments sparkrec creates.
    artifact_location: str = "./mlartifacts"
    # Experiment that every stage logs into.
    experiment: str = setting("sparkrec", pattern=r".+", meaning="a name")
    # Registered model name of the two-tower model.
    registered_model: str = setting("sparkrec_two_tower", pattern=r".+", meaning="a name")
    # Alias the train stage gives every newly trained version.
    candidate_alias: str = setting("candidate", pattern=ALIAS, meaning="an alias of letters, digits, _ and -")
    # Alias of the served model; the evaluate stage's promotion gate moves it.
    champion_alias: str = setting("champion", pattern=ALIAS, meaning="an alias of letters, digits, _ and -")


@dataclass(frozen=True)
class CleanConfig:
    # Event types accepted; anything else is quarantined as unknown_event_type.
    event_types: tuple[str, ...] = setting(
        ("view", "click", "cart", "purchase", "rating", "return"), pattern=r".+", meaning="a name", min_items=1
    )
    # Training weight of each event type (a return is kept as an interaction with no weight); a type
    # without one weighs 1.
    event_weights: dict[str, float] = setting(
        {"view": 0.1, "click": 0.3, "cart": 0.5, "purchase": 1.0, "rating": 1.0, "return": 0.0}, at_least=0
    )
    # Events older than this many days before the landing day are quarantined as too_late;
    # 0 accepts any age (historical exports that land at once, e.g. MovieLens).
    late_days: int = setting(7, at_least=0)
    # Events more than this many hours after the end of the landing day are future_timestamp.
    future_tolerance_hours: int = setting(24, at_least=0)
    # Regular expression of item ids that are not products (fees, postage); set per data set.
    non_product_items: str = ""
    # A user with more clean events than this in one clock hour of a landing day is a bot for that
    # day: kept with is_bot = true, counted as bot_rows, left out of training and evaluation.
    # 0 switches the rule off (rating exports, where people rate dozens of films a minute).
    bot_max_events_per_hour: int = setting(1000, at_least=0)
    # An event whose context carries a price of zero or less (or not a number) is bad_price.
    require_positive_price: bool = True
    # An event whose item is in neither the items table nor the day's catalog is unknown_item;
    # the rule is skipped while there is no catalog at all.
    require_known_items: bool = True
    # A run that would leave a landing day with no clean rows, or quarantine more than this share of
    # its raw rows (an empty export, an upstream that renamed user_id), replaces nothing and fails;
    # its counts go to run_metrics as stage clean_refused.
    max_quarantine_share: float = setting(0.5, at_least=0, at_most=1)
    # Replace the day anyway (the --allow-empty flag of the stage commands).
    allow_empty: bool = False


@dataclass(frozen=True)
class EmbedConfig:
    # Folder of a BERT-family model (config.json, tokenizer, weights); empty = packaged MiniLM.
    model_path: str = ""
    # Pooling of token vectors: "mean" (sentence-transformers style) or "cls".
    pooling: str = setting("mean", choices=POOLINGS)
    # Texts per forward pass.
    batch_size: int = setting(64, at_least=1, at_most=100_000)
    # Longest token sequence fed to the model at once.
    max_length: int = setting(128, at_least=8, at_most=8192)
    # Texts longer than max_length tokens: "truncate" (keep the start) or "chunk" (embed every
    # max_length window and average them).
    long_text: str = setting("truncate", choices=LONG_TEXT)
    # Item fields joined (". " between the non-empty ones) into the text that is embedded, in order.
    text_fields: tuple[str, ...] = ("title", "description", "category", "tags")
    # Instead of text_fields: a template such as "{title} ({category}): {description}"; absent
    # fields are empty. Empty = use text_fields.
    template: str = ""
    # Autocast on CUDA: "fp16", "bf16" or "fp32" (none). The CPU always runs fp32.
    cuda_precision: str = setting("fp16", choices=CUDA_PRECISIONS)


@dataclass(frozen=True)
class ModelConfig:
    # Size of the shared user/item vector space.
    dim: int = setting(64, at_least=1, at_most=4096)
    # Items of a user's history that the user tower pools (most recent first).
    history_length: int = setting(20, at_least=1, at_most=1000)
    # Softmax temperature of the in-batch retrieval loss.
    temperature: float = setting(0.1, above=0, at_most=100)
    # Items drawn uniformly from the vocabulary as extra negatives each step, beside the batch's own
    # targets (mixed negative sampling; 0: in-batch negatives only).
    sampled_negatives: int = setting(128, at_least=0, at_most=1_000_000)
    # Dropout on the fused item vectors during training.
    dropout: float = setting(0.1, at_least=0, below=1)
    # Fuse the items' category tokens and price bucket into the item tower (when the catalogue has them).
    attributes: bool = True
    # Extra item vector columns fused into the item tower beside the text (image or other embeddings):
    # column name -> where it is (a Delta table folder, a Parquet file or folder, or a catalog table
    # name) holding ``item_id`` and that column, an array of numbers of one size. An item a source does
    # not hold has no signal from it.
    item_vectors: dict[str, str] = setting({}, pattern=r".+", meaning="a Delta folder, Parquet path or table name")
    # Add the user's features (``encoding.USER_FEATURES``: activity, tenure) to the user vector.
    user_features: bool = True
    # Ablations (true is the model): the BERT text vector in the item tower, attention pooling of the
    # history (false: a plain mean), the logQ correction of the in-batch softmax for popular items.
    text: bool = True
    history_attention: bool = True
    logq_correction: bool = True


@dataclass(frozen=True)
class RankerConfig:
    # Train the DCN-v2 ranker with the towers (L = L_retrieval + weight * L_ranking); false: retrieval only.
    enabled: bool = True
    weight: float = setting(1.0, at_least=0, at_most=1000)
    # Let L_ranking reach the towers through the retrieval score the ranker reads. Off: the lists are
    # seen many times per epoch, and towers trained on them learn each list's labels by heart, so the
    # ranker learns to trust a retrieval score that holds nothing back at serving time.
    train_towers: bool = False
    # Training lists: each user's interactions split into a context and labels, either the latest
    # label_fraction of them ("latest": what the user did next) or a random share ("random", for
    # evaluation protocols that hold out random interactions).
    labels: str = setting("latest", choices=LABEL_MODES)
    label_fraction: float = setting(0.2, above=0, below=1)
    # Candidates per list, from the collaborative score fitted on the contexts.
    candidates: int = setting(100, at_least=1, at_most=100_000)
    # The collaborative score: "ease" (EASE: a dense items x items inverse on the driver), "knn"
    # (item-kNN: each item's nearest items by a random walk over co-occurrence, RP3beta, computed in
    # Spark and kept sparse: memory grows with items x neighbours, no text term) or "auto": EASE up to
    # experiment.ease_max_items items, item-kNN above.
    collaborative: str = setting("auto", choices=COLLABORATIVE_MODELS)
    # Item-kNN's neighbours per item, and how much it lowers popular neighbours (their users ** -damping).
    neighbours: int = setting(100, at_least=1, at_most=10_000)
    damping: float = setting(0.3, at_least=0, at_most=10)
    # EASE regularisation of the collaborative score.
    ease_lambda: float = setting(200.0, above=0)
    # The ranker also reads each candidate's recent popularity: the users holding it over the last
    # recent_days days of the interactions it is fitted on (what is selling now, beside what sold
    # over all the history); 0: not a feature.
    recent_days: int = setting(7, at_least=0, at_most=36_500)
    # Text in the collaborative score (with train.model.text): EASE's gram gains one pseudo-user per
    # item that holds the item and its text_neighbours nearest items by text vector, weighted
    # text_weight, so an item few users hold borrows from the items that read alike (0: plain EASE).
    text_weight: float = setting(2.0, at_least=0)
    text_neighbours: int = setting(10, at_least=0, at_most=10_000)
    # At most this many training lists (users; a seeded sample beyond it).
    max_lists: int = setting(20000, at_least=1)
    # Lists per rank and step.
    batch_size: int = setting(32, at_least=1, at_most=1_000_000)
    # DCN-v2's shape: the width of the MLP beside the cross layers (0: none, the cross network alone;
    # with no cross layers either, a linear ranker). The lists are seen many times per epoch, and a
    # 64-wide MLP over a few hundred of them fits them rather than the signals' weights.
    hidden: int = setting(0, at_least=0, at_most=65_536)
    cross_layers: int = setting(2, at_least=0, at_most=64)


@dataclass(frozen=True)
class TrainConfig:
    # Training processes launched by TorchDistributor.
    num_processes: int = setting(2, at_least=1, at_most=4096)
    # local_mode=True runs the processes on the driver; False runs them in executor tasks.
    local_mode: bool = True
    # Use GPUs when the cluster offers them.
    use_gpu: bool = False
    # Days of interactions before the holdout used for training (0 = all history).
    window_days: int = setting(0, at_least=0)
    # Training examples per user: the targets of the user's latest this many positive events (0: every
    # one), so one user with a long history costs no more than this.
    max_examples_per_user: int = setting(0, at_least=0)
    # Model hyper-parameters.
    model: ModelConfig = field(default_factory=ModelConfig)
    # Which items are a training example's history: "earlier" (the user's items before the target:
    # learn what comes next) or "others" (the user's latest items other than the target: for
    # protocols that hide random interactions; `sparkrec experiment` picks it by protocol).
    example_history: str = setting("earlier", choices=HISTORY_MODES)
    # Passes over the training examples.
    epochs: int = setting(10, at_least=1, at_most=100_000)
    # Examples per rank and step; the in-batch negatives come from the same batch.
    batch_size: int = setting(256, at_least=2, at_most=10_000_000)
    # Adam learning rate.
    learning_rate: float = setting(0.005, above=0, at_most=10)
    # Seed for initialisation, shuffling and sampling.
    seed: int = setting(42, at_least=0, at_most=2**32 - 1)
    # Seconds a rank waits for the others before the process group gives up.
    timeout_s: int = setting(300, at_least=1)
    # Early stopping: the latest validation_fraction of the training examples (by time) is held out
    # (with example_history "others": every example of that share of the users);
    # training stops when its loss has not improved for `patience` epochs and keeps the best epoch's
    # weights (0: no early stopping, every example trains).
    patience: int = setting(0, at_least=0)
    validation_fraction: float = setting(0.1, above=0, below=1)
    # The weights kept are an exponential moving average of the weights after every step (Polyak
    # averaging), with this decay (0: the last step's weights). Averaging smooths out the noise of the
    # last steps, so models trained with different seeds agree more; validation and checkpoints use it.
    weight_average: float = setting(0.99, at_least=0, below=1)
    # Folder for the training examples (Parquet), the model staging and the per-epoch checkpoints. Every
    # training process reads and writes it as a file system, so on a cluster it must be a path all
    # nodes mount (NFS, /dbfs, /Volumes); empty: <lakehouse.root> (fine locally and on shared disks).
    shared_root: str = ""
    # The ranking model trained with the towers (``sparkrec.models.ranker``).
    ranker: RankerConfig = field(default_factory=RankerConfig)


@dataclass(frozen=True)
class PublishGateConfig:
    # The day's row count may differ from the previous day in the table by at most this share.
    max_row_change: float = setting(0.5, at_least=0)
    # At least this share of the day's active users must get a list.
    min_user_coverage: float = setting(0.95, at_least=0, at_most=1)
    # false: the checks are recorded but never stop a publish.
    enabled: bool = True


@dataclass(frozen=True)
class RecommendConfig:
    # Items per user in the recommendations table.
    k: int = setting(10, at_least=1, at_most=10_000)
    # Users with an interaction in this many days up to the run date get recommendations.
    active_days: int = setting(30, at_least=1)
    # Registered-model alias that the recommend stage scores with.
    model_alias: str = setting("champion", pattern=ALIAS, meaning="an alias of letters, digits, _ and -")
    # Users scored per block inside a task; bounds memory to block x catalogue scores.
    block_size: int = setting(512, at_least=1, at_most=1_000_000)
    # Candidates per user kept from the model (partial sort) for the ranking step and the rules.
    candidates: int = setting(100, at_least=1, at_most=100_000)
    # Ranking step that re-scores the candidates: "learned" is the model's ranker (for a model trained
    # with train.ranker.enabled; candidates from EASE plus the towers' best), "retrieval" keeps the
    # towers' score.
    ranker: str = setting("learned", choices=RANKERS)
    # With the learned ranker: the towers' best items not among the collaborative candidates join the list.
    retrieval_candidates: int = setting(0, at_least=0, at_most=100_000)
    # Items a user interacted with (any event type) are never recommended: over all history (0) or
    # only the last N days.
    seen_window_days: int = setting(0, at_least=0)
    # Item ids never recommended: a list, and/or a text file with one id per line.
    exclude_items: tuple[str, ...] = ()
    exclude_file: str = ""
    # At most this many items of one category in a list (0: no cap); items without a category are not capped.
    max_per_category: int = setting(0, at_least=0)
    # MMR diversity over the item text embeddings: 1.0 ranks by score alone, lower values trade score
    # for dissimilarity to the items already chosen.
    mmr_lambda: float = setting(1.0, at_least=0, at_most=1)
    # Users without history get what is popular among the active users of their segment: "category"
    # (the category they interacted with most) or "global".
    fallback_segment: str = setting("category", choices=FALLBACK_SEGMENTS)
    # Checks before the day is published; a failing check keeps the previous day served.
    gate: PublishGateConfig = field(default_factory=PublishGateConfig)


@dataclass(frozen=True)
class MaintenanceConfig:
    # VACUUM removes files no longer referenced by table versions older than this (Delta's default: 7 days).
    retain_hours: int = setting(168, at_least=0)
    # OPTIMIZE ... ZORDER BY these columns, per table; other tables are compacted without Z-order.
    zorder: dict[str, tuple[str, ...]] = setting({"recommendations": ("user_id",), "interactions": ("user_id",)})


@dataclass(frozen=True)
class EvaluateConfig:
    # Last days up to the run date held out for evaluation; training stops before them.
    holdout_days: int = setting(7, at_least=1)
    # Cut-off of the ranking metrics; defaults to recommend.k when 0.
    k: int = setting(0, at_least=0, at_most=10_000)
    # Longest list scored for the metric@k curves plotted to MLflow (k = 1..curve_k).
    curve_k: int = setting(50, at_least=1, at_most=10_000)
    # The candidate becomes champion unless its ndcg@k is below the champion's by more than this.
    promotion_tolerance: float = setting(0.0, at_least=0)
    # Held-out users the models are scored on: a seeded sample of about this many (by a hash of the
    # user id) when more qualify, the same users for the candidate, the champion and popularity; 0: all.
    # Scoring every user costs users x items; a mean metric over 100,000 users has a standard error of about 0.001.
    max_users: int = setting(100_000, at_least=0)


@dataclass(frozen=True)
class ExperimentConfig:
    # Experiments keep their own Delta tables under <root>/<data set>/lakehouse, never in the
    # production lakehouse.
    root: str = setting("./experiments", pattern=r".+", meaning="a folder")
    # MLflow experiment the experiment runs log into.
    mlflow_experiment: str = setting("sparkrec-experiments", pattern=r".+", meaning="a name")
    # Registered-model name of the two-tower models experiments train; production's alias never moves.
    registered_model: str = setting("sparkrec_experiment_two_tower", pattern=r".+", meaning="a name")
    # Spark ALS (implicit preferences) grid; every combination is fitted on the validation split.
    # Keys: rank, reg_param, alpha, max_iter.
    als_grid: dict[str, list[float]] = setting(
        {"rank": [16, 32, 64], "reg_param": [0.1, 1.0], "alpha": [1.0, 5.0, 20.0], "max_iter": [15]}
    )
    # EASE regularisation strengths tried on the validation split.
    ease_lambdas: list[float] = setting([10.0, 50.0, 200.0, 500.0, 1000.0], above=0, min_items=1)
    # Largest catalogue EASE solves: it inverts a dense items x items matrix on the driver (about
    # 14 bytes x items^2 at its peak in the nightly: 1.4 GB at 10,000 items, 5.6 GB at 20,000; the
    # experiment's ease baseline, which keeps its gram for every lambda, 20 bytes). Above it the ranker's
    # collaborative score is item-kNN (train.ranker.collaborative: auto) and the ease baseline is left
    # out of an experiment.
    ease_max_items: int = setting(10000, at_least=1)
    # Item-kNN dampings (train.ranker.damping) tried on the validation split, for the knn baseline and
    # for sparkrec's collaborative score where it is item-kNN.
    knn_dampings: list[float] = setting([0.15, 0.3, 0.5], at_least=0, min_items=1)


@dataclass(frozen=True)
class Config:
    spark: SparkConfig = field(default_factory=SparkConfig)
    lakehouse: LakehouseConfig = field(default_factory=LakehouseConfig)
    landing: LandingConfig = field(default_factory=LandingConfig)
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    sql_server: SqlServerConfig = field(default_factory=SqlServerConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    recommend: RecommendConfig = field(default_factory=RecommendConfig)
    maintenance: MaintenanceConfig = field(default_factory=MaintenanceConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)

    def table_path(self, table: str) -> str:
        """Path of a Delta table under the lakehouse root."""
        return f"{self.lakehouse.root.rstrip('/')}/{table}"

    def shared_path(self, *parts: str) -> Path:
        """A folder every training process reaches: under ``train.shared_root`` or the lakehouse root."""
        root = self.train.shared_root or self.lakehouse.root
        root = root.removeprefix("file://") if root.startswith("file:///") else root
        if URI_SCHEME.match(root):
            raise ConfigError(
                f"training needs a file-system path every node mounts, not {root!r}: "
                "set train.shared_root (e.g. an NFS, /dbfs or /Volumes path)"
            )
        return Path(root).joinpath(*parts)

    @property
    def eval_k(self) -> int:
        return self.evaluate.k or self.recommend.k

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
