"""Typed configuration, loaded once at the boundary.

YAML files in ``conf/`` map one to one onto the frozen dataclasses below. ``load_config`` reads a
file, applies ``--set key=value`` overrides, expands ``${ENV_VAR}`` references (secrets come from the
environment, never from files in the repository) and makes every path absolute, because executors
and training ranks run in other working directories.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONF = PROJECT_ROOT / "conf" / "local.yaml"


class ConfigError(ValueError):
    """A configuration file or override that cannot be used."""


@dataclass(frozen=True)
class SparkConfig:
    # Spark master URL: local[*] for the embedded default, spark://host:7077, yarn, k8s://...;
    # empty: leave it to the environment. Under spark-submit, --master decides and this is not used.
    master: str = "local[*]"
    # Application name shown in the Spark UI and logs.
    app_name: str = "sparkrec"
    # Driver JVM heap; only takes effect when sparkrec starts the JVM (not under spark-submit).
    driver_memory: str = "4g"
    # Shuffle partitions: a few per core on one machine, more on a cluster.
    shuffle_partitions: int = 4
    # Show Spark's console progress bar for long stages.
    show_progress: bool = True
    # Version of the Delta jar (io.delta:delta-spark_<spark>_2.13) when it must differ from the
    # delta-spark pip package: 4.4.1 is on PyPI, but Maven Central's newest jar is 4.4.0 (the Python
    # code of the two is identical). Empty: the pip package's own version.
    delta_jar_version: str = "4.4.0"
    # Any further Spark settings, passed as they are (e.g. spark.executor.memory).
    conf: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LakehouseConfig:
    # Root folder (or URI) of the Delta tables; each table lives at <root>/<table>.
    root: str = "./lakehouse"


@dataclass(frozen=True)
class LandingConfig:
    # Root of the landing zone: <root>/events/ds=YYYY-MM-DD/ and <root>/items/ds=YYYY-MM-DD/.
    root: str = "./landing"


@dataclass(frozen=True)
class CatalogConfig:
    # Database in which every session registers the tables by name (SQL: sparkrec.recommendations).
    database: str = "sparkrec"
    # "in-memory": tables are registered in each new session; "hive": use a configured metastore.
    metastore: str = "in-memory"


@dataclass(frozen=True)
class MlflowConfig:
    # Tracking URI: a SQLite file by default; an http(s) server or "databricks" by config.
    tracking_uri: str = "sqlite:///./mlflow.db"
    # Where run artifacts (models, plots) go for experiments sparkrec creates.
    artifact_location: str = "./mlartifacts"
    # Experiment that every stage logs into.
    experiment: str = "sparkrec"
    # Registered model name of the two-tower model.
    registered_model: str = "sparkrec_two_tower"
    # Alias the train stage gives every newly trained version.
    candidate_alias: str = "candidate"
    # Alias of the served model; the evaluate stage's promotion gate moves it.
    champion_alias: str = "champion"


@dataclass(frozen=True)
class CleanConfig:
    # Event types accepted; anything else is quarantined as unknown_event_type.
    event_types: tuple[str, ...] = ("view", "click", "cart", "purchase", "rating", "return")
    # Training weight of each event type (a return is kept as an interaction with no weight).
    event_weights: dict[str, float] = field(
        default_factory=lambda: {
            "view": 0.1,
            "click": 0.3,
            "cart": 0.5,
            "purchase": 1.0,
            "rating": 1.0,
            "return": 0.0,
        }
    )
    # Events older than this many days before the landing day are quarantined as too_late;
    # 0 accepts any age (historical exports that land at once, e.g. MovieLens).
    late_days: int = 7
    # Events more than this many hours after the end of the landing day are future_timestamp.
    future_tolerance_hours: int = 24
    # Regular expression of item ids that are not products (fees, postage); set per data set.
    non_product_items: str = ""
    # A user with more clean events than this in one clock hour of a landing day is a bot for that
    # day: kept with is_bot = true, counted as bot_rows, left out of training and evaluation.
    # 0 switches the rule off (rating exports, where people rate dozens of films a minute).
    bot_max_events_per_hour: int = 1000
    # An event whose context carries a price of zero or less (or not a number) is bad_price.
    require_positive_price: bool = True
    # An event whose item is in neither the items table nor the day's catalog is unknown_item;
    # the rule is skipped while there is no catalog at all.
    require_known_items: bool = True


@dataclass(frozen=True)
class EmbedConfig:
    # Folder of a BERT-family model (config.json, tokenizer, weights); empty = packaged MiniLM.
    model_path: str = ""
    # Pooling of token vectors: "mean" (sentence-transformers style) or "cls".
    pooling: str = "mean"
    # Texts per forward pass.
    batch_size: int = 64
    # Longest token sequence fed to the model at once.
    max_length: int = 128
    # Texts longer than max_length tokens: "truncate" (keep the start) or "chunk" (embed every
    # max_length window and average them).
    long_text: str = "truncate"
    # Item fields joined (". " between the non-empty ones) into the text that is embedded, in order.
    text_fields: tuple[str, ...] = ("title", "description", "category", "tags")
    # Instead of text_fields: a template such as "{title} ({category}): {description}"; absent
    # fields are empty. Empty = use text_fields.
    template: str = ""
    # Autocast on CUDA: "fp16", "bf16" or "fp32" (none). The CPU always runs fp32.
    cuda_precision: str = "fp16"


@dataclass(frozen=True)
class TrainConfig:
    # Training processes launched by TorchDistributor.
    num_processes: int = 2
    # local_mode=True runs the processes on the driver; False runs them in executor tasks.
    local_mode: bool = True
    # Use GPUs when the cluster offers them.
    use_gpu: bool = False
    # Days of interactions before the holdout used for training (0 = all history).
    window_days: int = 0
    # Model hyper-parameters.
    model: ModelConfig = field(default_factory=lambda: ModelConfig())
    # Which items are a training example's history: "earlier" (the user's items before the target:
    # learn what comes next) or "others" (the user's latest items other than the target: for
    # protocols that hide random interactions; `sparkrec experiment` picks it by protocol).
    example_history: str = "earlier"
    # Passes over the training examples.
    epochs: int = 10
    # Examples per rank and step; the in-batch negatives come from the same batch.
    batch_size: int = 256
    # Adam learning rate.
    learning_rate: float = 0.005
    # Seed for initialisation, shuffling and sampling.
    seed: int = 42
    # Seconds a rank waits for the others before the process group gives up.
    timeout_s: int = 300
    # Early stopping: the latest validation_fraction of the training examples (by time) is held out
    # (with example_history "others": every example of that share of the users);
    # training stops when its loss has not improved for `patience` epochs and keeps the best epoch's
    # weights (0: no early stopping, every example trains).
    patience: int = 0
    validation_fraction: float = 0.1
    # The weights kept are an exponential moving average of the weights after every step (Polyak
    # averaging), with this decay (0: the last step's weights). Averaging smooths out the noise of the
    # last steps, so models trained with different seeds agree more; validation and checkpoints use it.
    weight_average: float = 0.99
    # Folder for the training examples (Parquet), the model staging and the per-epoch checkpoints. Every
    # training process reads and writes it as a file system, so on a cluster it must be a path all
    # nodes mount (NFS, /dbfs, /Volumes); empty: <lakehouse.root> (fine locally and on shared disks).
    shared_root: str = ""
    # The ranking model trained with the towers (``sparkrec.models.ranker``).
    ranker: RankerConfig = field(default_factory=lambda: RankerConfig())


@dataclass(frozen=True)
class RankerConfig:
    # Train the DCN-v2 ranker with the towers (L = L_retrieval + weight * L_ranking); false: retrieval only.
    enabled: bool = True
    weight: float = 1.0
    # Let L_ranking reach the towers through the retrieval score the ranker reads. Off: the lists are
    # seen many times per epoch, and towers trained on them learn each list's labels by heart, so the
    # ranker learns to trust a retrieval score that holds nothing back at serving time.
    train_towers: bool = False
    # Training lists: each user's interactions split into a context and labels, either the latest
    # label_fraction of them ("latest": what the user did next) or a random share ("random", for
    # evaluation protocols that hold out random interactions).
    labels: str = "latest"
    label_fraction: float = 0.2
    # Candidates per list, from the collaborative model (EASE) fitted on the contexts.
    candidates: int = 100
    # EASE regularisation of the collaborative score; it inverts an items x items matrix on the
    # driver, so the training vocabulary is bounded by experiment.ease_max_items.
    ease_lambda: float = 200.0
    # The ranker also reads each candidate's recent popularity: the users holding it over the last
    # recent_days days of the interactions it is fitted on (what is selling now, beside what sold
    # over all the history); 0: not a feature.
    recent_days: int = 7
    # Text in the collaborative score (with train.model.text): EASE's gram gains one pseudo-user per
    # item that holds the item and its text_neighbours nearest items by text vector, weighted
    # text_weight, so an item few users hold borrows from the items that read alike (0: plain EASE).
    text_weight: float = 2.0
    text_neighbours: int = 10
    # At most this many training lists (users; a seeded sample beyond it).
    max_lists: int = 20000
    # Lists per rank and step.
    batch_size: int = 32
    # DCN-v2's shape: the width of the MLP beside the cross layers (0: none, the cross network alone;
    # with no cross layers either, a linear ranker). The lists are seen many times per epoch, and a
    # 64-wide MLP over a few hundred of them fits them rather than the signals' weights.
    hidden: int = 0
    cross_layers: int = 2


@dataclass(frozen=True)
class ModelConfig:
    # Size of the shared user/item vector space.
    dim: int = 64
    # Items of a user's history that the user tower pools (most recent first).
    history_length: int = 20
    # Softmax temperature of the in-batch retrieval loss.
    temperature: float = 0.1
    # Items drawn uniformly from the vocabulary as extra negatives each step, beside the batch's own
    # targets (mixed negative sampling; 0: in-batch negatives only).
    sampled_negatives: int = 128
    # Dropout on the fused item vectors during training.
    dropout: float = 0.1
    # Fuse the items' category tokens and price bucket into the item tower (when the catalogue has them).
    attributes: bool = True
    # Extra item vector columns fused into the item tower beside the text (image or other embeddings):
    # column name -> where it is (a Delta table folder, a Parquet file or folder, or a catalog table
    # name) holding ``item_id`` and that column, an array of numbers of one size. An item a source does
    # not hold has no signal from it.
    item_vectors: dict[str, str] = field(default_factory=dict)
    # Add the user's features (``features.USER_FEATURES``: activity, tenure) to the user vector.
    user_features: bool = True
    # Ablations (true is the model): the BERT text vector in the item tower, attention pooling of the
    # history (false: a plain mean), the logQ correction of the in-batch softmax for popular items.
    text: bool = True
    history_attention: bool = True
    logq_correction: bool = True


@dataclass(frozen=True)
class PublishGateConfig:
    # The day's row count may differ from the previous day in the table by at most this share.
    max_row_change: float = 0.5
    # At least this share of the day's active users must get a list.
    min_user_coverage: float = 0.95
    # false: the checks are recorded but never stop a publish.
    enabled: bool = True


@dataclass(frozen=True)
class RecommendConfig:
    # Items per user in the recommendations table.
    k: int = 10
    # Users with an interaction in this many days up to the run date get recommendations.
    active_days: int = 30
    # Registered-model alias that the recommend stage scores with.
    model_alias: str = "champion"
    # Users scored per block inside a task; bounds memory to block x catalogue scores.
    block_size: int = 512
    # Candidates per user kept from the model (partial sort) for the ranking step and the rules.
    candidates: int = 100
    # Ranking step that re-scores the candidates: "learned" is the model's ranker (for a model trained
    # with train.ranker.enabled; candidates from EASE plus the towers' best), "retrieval" keeps the
    # towers' score.
    ranker: str = "learned"
    # With the learned ranker: the towers' best items not among the collaborative candidates join the list.
    retrieval_candidates: int = 0
    # Items a user interacted with (any event type) are never recommended: over all history (0) or
    # only the last N days.
    seen_window_days: int = 0
    # Item ids never recommended: a list, and/or a text file with one id per line.
    exclude_items: tuple[str, ...] = ()
    exclude_file: str = ""
    # At most this many items of one category in a list (0: no cap); items without a category are not capped.
    max_per_category: int = 0
    # MMR diversity over the item text embeddings: 1.0 ranks by score alone, lower values trade score
    # for dissimilarity to the items already chosen.
    mmr_lambda: float = 1.0
    # Users without history get what is popular among the active users of their segment: "category"
    # (the category they interacted with most) or "global".
    fallback_segment: str = "category"
    # Checks before the day is published; a failing check keeps the previous day served.
    gate: PublishGateConfig = field(default_factory=PublishGateConfig)


@dataclass(frozen=True)
class MaintenanceConfig:
    # VACUUM removes files no longer referenced by table versions older than this (Delta's default: 7 days).
    retain_hours: int = 168
    # OPTIMIZE ... ZORDER BY these columns, per table; other tables are compacted without Z-order.
    zorder: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"recommendations": ("user_id",), "interactions": ("user_id",)}
    )


@dataclass(frozen=True)
class EvaluateConfig:
    # Last days up to the run date held out for evaluation; training stops before them.
    holdout_days: int = 7
    # Cut-off of the ranking metrics; defaults to recommend.k when 0.
    k: int = 0
    # Longest list scored for the metric@k curves plotted to MLflow (k = 1..curve_k).
    curve_k: int = 50
    # The candidate becomes champion unless its ndcg@k is below the champion's by more than this.
    promotion_tolerance: float = 0.0


@dataclass(frozen=True)
class ExperimentConfig:
    # Experiments keep their own Delta tables under <root>/<data set>/lakehouse, never in the
    # production lakehouse.
    root: str = "./experiments"
    # MLflow experiment the experiment runs log into.
    mlflow_experiment: str = "sparkrec-experiments"
    # Registered-model name of the two-tower models experiments train; production's alias never moves.
    registered_model: str = "sparkrec_experiment_two_tower"
    # Spark ALS (implicit preferences) grid; every combination is fitted on the validation split.
    als_grid: dict[str, list[float]] = field(
        default_factory=lambda: {
            "rank": [16, 32, 64],
            "reg_param": [0.1, 1.0],
            "alpha": [1.0, 5.0, 20.0],
            "max_iter": [15],
        }
    )
    # EASE regularisation strengths tried on the validation split.
    ease_lambdas: list[float] = field(default_factory=lambda: [10.0, 50.0, 200.0, 500.0, 1000.0])
    # Largest catalogue EASE may solve: it inverts a dense items x items matrix on the driver.
    ease_max_items: int = 20000


@dataclass(frozen=True)
class Config:
    spark: SparkConfig = field(default_factory=SparkConfig)
    lakehouse: LakehouseConfig = field(default_factory=LakehouseConfig)
    landing: LandingConfig = field(default_factory=LandingConfig)
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
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
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:/", root):
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


def load_config(path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply ``key=value`` overrides and resolve paths.

    Args:
        path: YAML file; ``conf/local.yaml`` of the project when None.
        overrides: ``section.key=value`` strings; values are parsed as YAML scalars.

    Raises:
        ConfigError: unknown keys, values of the wrong type, or a missing file.
    """
    raw = _read_yaml(Path(path) if path else DEFAULT_CONF, ())
    for item in overrides or []:
        _apply_override(raw, item)
    raw = _expand_env(raw)
    config = _build(Config, raw, "")
    return _resolve_paths(config)


def keys_set_in(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """The dotted keys (``train.ranker.labels``) a config file sets itself or through the files it
    extends, short of the project's defaults (``conf/local.yaml``): what the user chose."""

    def walk(raw: dict[str, Any], prefix: str) -> list[str]:
        return [
            key
            for name, value in raw.items()
            for key in (walk(value, f"{prefix}{name}.") if isinstance(value, dict) and value else [f"{prefix}{name}"])
        ]

    return tuple(sorted(walk(_read_yaml(Path(path), (), stop=DEFAULT_CONF.resolve()), "")))


def _read_yaml(conf_path: Path, seen: tuple[Path, ...], stop: Path | None = None) -> dict[str, Any]:
    """The file's mapping; with ``extends: other.yaml`` (relative to the file), merged over that file's
    (up to, not including, ``stop``)."""
    if stop is not None and conf_path.resolve() == stop:
        return {}
    if not conf_path.exists():
        raise ConfigError(f"config file not found: {conf_path}")
    raw = yaml.safe_load(conf_path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {conf_path} must hold a mapping, got {type(raw).__name__}")
    base = raw.pop("extends", None)
    if base is None:
        return raw
    base_path = (conf_path.parent / str(base)).resolve()
    if base_path in seen or base_path == conf_path.resolve():
        raise ConfigError(f"config files extend each other in a loop: {conf_path} -> {base_path}")
    return _merged(_read_yaml(base_path, (*seen, conf_path.resolve()), stop), raw)


def _merged(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def with_values(config: Config, values: dict[str, Any]) -> Config:
    """``config`` with the sections of ``values`` (nested mappings) merged in, checked like a file."""
    raw = config.to_dict()
    for section, entries in values.items():
        if not isinstance(entries, dict):
            raise ConfigError(f"{section} must be a mapping, got {entries!r}")
        raw.setdefault(section, {}).update(entries)
    return _resolve_paths(_build(Config, raw, ""))


def override_key(item: str) -> str:
    """The dotted key of a ``--set key=value`` item."""
    return item.partition("=")[0].strip()


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, value = item.partition("=")
    if not sep or not override_key(item):
        raise ConfigError(f"--set expects key=value, got {item!r}")
    parts = override_key(item).split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a section")
    # spark.conf keys contain dots themselves: spark.conf.spark.executor.memory=2g
    if parts[:2] == ["spark", "conf"] and len(parts) > 2:
        raw.setdefault("spark", {}).setdefault("conf", {})[".".join(parts[2:])] = value
        return
    node[parts[-1]] = yaml.safe_load(value) if value != "" else ""


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _expand_env(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v) for v in value]
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(f"environment variable {name} is referenced in the config but not set")

        return _ENV_REF.sub(repl, value)
    return value


def _build(cls: type, raw: Any, where: str) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(where + k for k in unknown)}; known: {sorted(names)}")
    kwargs = {name: _coerce(hints[name], value, f"{where}{name}") for name, value in raw.items()}
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where + ".")
    origin = typing.get_origin(hint)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        _, value_type = typing.get_args(hint)
        return {str(k): _coerce(value_type, v, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        (item_type,) = typing.get_args(hint)
        return [_coerce(item_type, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(str(v).strip() for v in items)
    if origin in (typing.Union, types.UnionType):
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        if hint is int and value != int(value):
            raise ConfigError(f"{where} must be a whole number, got {value!r}")
        return hint(value)
    if hint is str:
        return "" if value is None else str(value)
    return value


def absolute_path(path: str) -> str:
    """Make a local path absolute; URIs with a scheme (s3a://, dbfs:/, abfss://) pass unchanged."""
    if not path or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:/", path):
        return path
    return str(Path(path).expanduser().resolve())


def _absolute_tracking_uri(uri: str) -> str:
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + absolute_path(uri[len(prefix) :])
    return uri


def _resolve_paths(config: Config) -> Config:
    return dataclasses.replace(
        config,
        lakehouse=dataclasses.replace(config.lakehouse, root=absolute_path(config.lakehouse.root)),
        landing=dataclasses.replace(config.landing, root=absolute_path(config.landing.root)),
        mlflow=dataclasses.replace(
            config.mlflow,
            tracking_uri=_absolute_tracking_uri(config.mlflow.tracking_uri),
            artifact_location=absolute_path(config.mlflow.artifact_location),
        ),
        embed=dataclasses.replace(config.embed, model_path=absolute_path(config.embed.model_path)),
        recommend=dataclasses.replace(config.recommend, exclude_file=absolute_path(config.recommend.exclude_file)),
        experiment=dataclasses.replace(config.experiment, root=absolute_path(config.experiment.root)),
        train=dataclasses.replace(config.train, shared_root=absolute_path(config.train.shared_root)),
    )
