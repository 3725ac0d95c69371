"""The pipeline's stages: read tables, call the library's transforms, write tables, track in MLflow.

Each ``run_*`` function is what a job in ``jobs/``, a ``sparkrec`` subcommand and a notebook call.
They take a session, the config and a date, and return a small dict of what they did.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import re
import shutil
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkrec import clean, embed, evaluation, features, splits, tables
from sparkrec.config import Config
from sparkrec.evaluation import Catalog
from sparkrec.landing import DATE_RE, LandingMissingError, landing_days, read_landing
from sparkrec.registry import alias_version, apply_promotion, decide_promotion, load_model
from sparkrec.schemas import (
    INTERACTIONS,
    ITEM_EMBEDDINGS,
    ITEMS,
    QUARANTINE,
    RECOMMENDATIONS,
    REQUIRED_EVENT_FIELDS,
    REQUIRED_ITEM_FIELDS,
    RUN_METRICS,
)
from sparkrec.tracking import log_metrics, report_counts, stage_run

log = logging.getLogger("sparkrec")


def check_date(day: str) -> str:
    if not DATE_RE.match(day or ""):
        raise ValueError(f"date must be YYYY-MM-DD, got {day!r}")
    dt.date.fromisoformat(day)
    return day


# ----------------------------------------------------------------------------------------- clean
def run_clean(spark: SparkSession, config: Config, days: list[str]) -> dict[str, Any]:
    """Clean landing days into ``interactions``, ``items`` and ``quarantine``; replace those days.

    Raises:
        LandingMissingError: a requested day has no event files.
        clean.ReconciliationError: counts do not add up (nothing is written).
    """
    days = sorted({check_date(d) for d in days})
    present = set(landing_days(config, "events"))
    missing = [d for d in days if d not in present]
    if missing:
        raise LandingMissingError(
            f"no landing event files for {', '.join(missing)} under {config.landing.root}/events/ds=YYYY-MM-DD/"
        )
    label = days[0] if len(days) == 1 else f"{days[0]}..{days[-1]}"
    with stage_run(config, "clean", label) as run_id:
        item_days = [d for d in days if d in set(landing_days(config, "items"))]
        items = item_quarantine = None
        if item_days:
            items, item_quarantine = clean.clean_items(
                read_landing(spark, config, "items", item_days, REQUIRED_ITEM_FIELDS), config.clean
            )
        known_items = _known_items(spark, config, items)
        events = read_landing(spark, config, "events", days, REQUIRED_EVENT_FIELDS)
        result = clean.clean_events(events, config.clean, known_items)
        # Parse and classify once: the counts, interactions and quarantine all read this.
        result.rows.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            counts = [r.asDict() for r in result.counts.collect()]
            clean.reconcile(counts)
            _warn_unknown_fields(counts)
            quarantine = result.quarantine
            if items is not None and item_quarantine is not None:
                tables.merge_upsert(
                    spark,
                    items,
                    config,
                    ITEMS,
                    ["item_id"],
                    update_condition="t.updated_at IS NULL OR s.updated_at >= t.updated_at",
                )
                quarantine = quarantine.unionByName(item_quarantine)
            in_days = f"ds IN ({', '.join(tables.date_literal(d) for d in days)})"
            tables.replace_partitions(result.interactions, config, INTERACTIONS, in_days)
            tables.replace_partitions(quarantine, config, QUARANTINE, in_days)
            write_run_metrics(
                spark,
                config,
                "clean",
                run_id,
                days,
                [(str(r["ds"]), r["metric"], r["value"], r["source"]) for r in counts],
            )
            totals = _totals(counts)
            log_metrics(totals)
            log.info("clean %s: %s", label, ", ".join(f"{k}={v:.0f}" for k, v in totals.items()))
            report_counts(run_id, **{k: totals.get(k, 0.0) for k in ("raw_rows", "clean_rows", "quarantined_rows")})
            return {"days": days, "run_id": run_id, **totals}
        finally:
            result.rows.unpersist()


def _known_items(spark: SparkSession, config: Config, day_items: DataFrame | None) -> DataFrame | None:
    """Item ids of the catalog (the items table and the days' catalog files); None when there is none."""
    frames = [day_items.select("item_id")] if day_items is not None else []
    if tables.table_exists(spark, config, ITEMS):
        frames.append(tables.read_table(spark, config, ITEMS).select("item_id"))
    if not config.clean.require_known_items or not frames:
        return None
    return frames[0] if len(frames) == 1 else frames[0].unionByName(frames[1])


def _warn_unknown_fields(counts: list[dict[str, Any]]) -> None:
    """Schema drift: fields outside the landing contract are dropped; say so, per file."""
    for row in counts:
        if str(row["metric"]).startswith("unknown_field.") and row["source"] is not None:
            log.warning(
                "clean %s: %s carries field %r outside the landing contract in %d rows; dropped "
                "(run_metrics metric %s)",
                row["ds"],
                row["source"],
                row["metric"].split(".", 1)[1],
                row["value"],
                row["metric"],
            )


def _totals(counts: list[dict[str, Any]]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for row in counts:
        if row["source"] is None:
            totals[row["metric"]] = totals.get(row["metric"], 0.0) + float(row["value"])
    return dict(sorted(totals.items()))


def write_run_metrics(
    spark: SparkSession,
    config: Config,
    stage: str,
    run_id: str,
    days: list[str],
    rows: list[tuple[str, str, float, str | None]],
) -> None:
    """Replace this stage's rows of ``run_metrics`` for the given days."""
    data = [
        (dt.date.fromisoformat(ds), run_id, stage, metric, float(value), source) for ds, metric, value, source in rows
    ]
    from sparkrec.schemas import RUN_METRICS_SCHEMA

    df = spark.createDataFrame(data, RUN_METRICS_SCHEMA)
    where = f"ds IN ({', '.join(tables.date_literal(d) for d in days)}) AND stage = '{stage}'"
    tables.replace_partitions(df, config, RUN_METRICS, where)


# ----------------------------------------------------------------------------------------- embed
def run_embed(spark: SparkSession, config: Config, day: str) -> dict[str, Any]:
    """Embed new or changed items' text into ``item_embeddings`` (MERGE)."""
    check_date(day)
    versions = {
        ITEMS: tables.table_version(spark, config, ITEMS),
        ITEM_EMBEDDINGS: tables.table_version(spark, config, ITEM_EMBEDDINGS),
    }
    with stage_run(config, "embed", day, versions) as run_id:
        items = tables.read_table(spark, config, ITEMS)
        stored = tables.read_table(spark, config, ITEM_EMBEDDINGS, required=False)
        model = embed.model_name(config.embed)
        todo = embed.select_items_to_embed(items, stored, model).cache()
        n_todo, n_items = todo.count(), items.count()
        if n_todo:
            partitions = max(2, spark.sparkContext.defaultParallelism)
            vectors = embed.to_item_embeddings(todo, config.embed, model, partitions)
            tables.merge_upsert(spark, vectors, config, ITEM_EMBEDDINGS, ["item_id"])
        todo.unpersist()
        metrics = {"embedded_items": float(n_todo), "skipped_unchanged_items": float(n_items - n_todo)}
        log_metrics(metrics)
        import mlflow

        mlflow.log_param("embed_model", model)
        write_run_metrics(spark, config, "embed", run_id, [day], [(day, k, v, None) for k, v in metrics.items()])
        log.info("embed %s: %d embedded, %d unchanged (%s)", day, n_todo, n_items - n_todo, model)
        report_counts(run_id, items=n_items, embedded=n_todo)
        return {"run_id": run_id, **metrics}


# ----------------------------------------------------------------------------------------- train
def _text_matrix(embeddings_df: DataFrame, item_ids: list[str], model: str) -> np.ndarray:
    """BERT vectors for ``item_ids`` in order (zeros for items without one), as float32 [n, T]."""
    rows = embeddings_df.where(F.col("model") == model).select("item_id", "embedding").collect()
    if not rows:
        raise tables.TableMissingError(
            f"item_embeddings holds no vectors of model {model!r}; run the embed stage first"
        )
    vectors = {r["item_id"]: r["embedding"] for r in rows}
    return vector_matrix(vectors, item_ids, len(next(iter(vectors.values()))))


def vector_matrix(
    vectors: dict[str, Any],
    item_ids: list[str],
    dim: int,
    what: str = "item_embeddings",
    fix: str = "embed with the model it was trained on, or train again",
) -> np.ndarray:
    """``vectors`` in ``item_ids`` order as float32 [n, dim]; zeros for items without one."""
    out = np.zeros((len(item_ids), dim), dtype=np.float32)
    for i, item in enumerate(item_ids):
        vector = vectors.get(item)
        if vector is not None:
            if len(vector) != dim:
                raise ValueError(f"{what} has {len(vector)}-d vectors but the model expects {dim}-d: {fix}")
            out[i] = vector
    return out


def _extra_vectors(
    spark: SparkSession, sources: dict[str, str], item_ids: list[str], dims: dict[str, int] | None = None
) -> tuple[np.ndarray | None, list[int]]:
    """The extra item vector columns (``train.model.item_vectors``: column -> where) of ``item_ids``,
    side by side as float32 [n, E] (zeros where a source does not hold the item), and each column's
    size; None, [] without sources. ``dims``: the sizes a trained model expects (serving), checked.

    Raises:
        ValueError: a source without ``item_id`` or the column, vectors of mixed sizes, or values that
            are not finite numbers.
    """
    blocks, sizes = [], []
    for column, where in sources.items():
        name = f"train.model.item_vectors.{column} ({where})"
        df = tables.read_source(spark, where)
        if "item_id" not in df.columns or column not in df.columns:
            raise ValueError(f"{name} needs the columns item_id and {column}; it has {', '.join(df.columns)}")
        if not isinstance(df.schema[column].dataType, T.ArrayType):
            raise ValueError(
                f"{name}: {column} must be an array of numbers, not {df.schema[column].dataType.simpleString()}"
            )
        rows = (
            df.where(F.col(column).isNotNull())
            .select(F.col("item_id").cast("string"), F.col(column).cast("array<double>"))
            .collect()
        )
        vectors = {item: vector for item, vector in rows}
        bad = next((item for item, v in vectors.items() if not np.all(np.isfinite(np.asarray(v, dtype=float)))), None)
        if bad is not None:
            raise ValueError(f"{name}: item {bad!r} has a null or non-finite value in {column}")
        found = sorted({len(v) for v in vectors.values()})
        if dims is None and len(found) > 1:
            raise ValueError(f"{name}: {column} vectors must all have one size, found sizes {found}")
        size = dims[column] if dims is not None else (found[0] if found else 0)
        if size == 0:
            raise ValueError(f"{name} holds no {column} vectors")
        blocks.append(
            vector_matrix(vectors, item_ids, size, name, "give the vectors the model was trained on, or train again")
        )
        sizes.append(size)
    return (np.hstack(blocks) if blocks else None), sizes


def run_train(spark: SparkSession, config: Config, day: str) -> dict[str, Any]:
    """Train the two-tower model through TorchDistributor on interactions before the holdout."""
    check_date(day)
    cutoff = features.day_offset(day, -config.evaluate.holdout_days)
    versions = {
        INTERACTIONS: tables.table_version(spark, config, INTERACTIONS),
        ITEM_EMBEDDINGS: tables.table_version(spark, config, ITEM_EMBEDDINGS),
    }
    with stage_run(config, "train", day, versions) as run_id:
        interactions = features.without_bots(tables.read_table(spark, config, INTERACTIONS))
        history = features.filter_until(interactions, cutoff, config.train.window_days)
        result = fit_two_tower(spark, config, history, run_id, f"interactions up to {cutoff}")
        final = {k: result[k] for k in ("final_loss", "examples", "vocabulary")}
        write_run_metrics(spark, config, "train", run_id, [day], [(day, k, v, None) for k, v in final.items()])
        report_counts(run_id, examples=final["examples"], items=final["vocabulary"])
        return {"run_id": run_id, "cutoff": cutoff, **result}


def fit_two_tower(
    spark: SparkSession, config: Config, history_df: DataFrame, run_id: str, label: str
) -> dict[str, Any]:
    """Train on ``history_df`` (interactions) through TorchDistributor inside the active MLflow run;
    log the model, register it as ``mlflow.registered_model`` and point the candidate alias at it."""
    import mlflow
    from pyspark import cloudpickle
    from pyspark.ml.torch.distributor import TorchDistributor

    from sparkrec.loader import make_converter
    from sparkrec.models import launch
    from sparkrec.models.packaging import TwoTowerPyfunc, signature, write_model_dir
    from sparkrec.models.training import TrainingFailedError, checkpoint_epoch, rank_errors, train_two_tower

    marked = None
    if config.train.ranker.enabled:
        # The ranker learns on the labels how to weigh what the towers and EASE make of the context, so
        # neither may see a label: the towers train on the context's events only.
        rc = config.train.ranker
        marked = features.ranking_split(history_df, rc.labels, rc.label_fraction, config.train.seed).cache()
        history_df = history_df.join(marked.where("is_label").select("event_id"), "event_id", "left_anti")
    examples = features.to_training_examples(
        history_df, config.train.model.history_length, config.train.example_history
    ).cache()
    vocab = sorted(
        r[0] for r in examples.select(F.explode(F.array_union(F.array("item_id"), "history"))).distinct().collect()
    )
    if not vocab:
        raise ValueError(f"no training examples in {label}: clean more days first")
    vocab_df = spark.createDataFrame([(item, i + 1) for i, item in enumerate(vocab)], "item_id string, idx int")
    model_name = embed.model_name(config.embed)
    text = _text_matrix(tables.read_table(spark, config, ITEM_EMBEDDINGS), vocab, model_name)
    text = np.vstack([np.zeros((1, text.shape[1]), dtype=np.float32), text])
    staging = config.shared_path("_staging", "train", run_id)
    staging.mkdir(parents=True, exist_ok=True)
    np.save(staging / "item_text.npy", text)
    spec, item_attrs = _item_attributes(spark, config, vocab)
    if item_attrs is not None:
        np.save(staging / "item_attrs.npy", item_attrs)
    item_extra, extra_dims = _extra_vectors(spark, config.train.model.item_vectors, vocab)
    if item_extra is not None:
        item_extra = np.vstack([np.zeros((1, item_extra.shape[1]), dtype=np.float32), item_extra])
        np.save(staging / "item_extra.npy", item_extra)
    length = config.train.model.history_length
    types = features.event_types(history_df)
    user_names = list(features.USER_FEATURES) if config.train.model.user_features else []
    if not user_names:
        examples = examples.drop("user_features")
    validation = None
    if config.train.patience > 0:
        examples, held_out = features.validation_split(
            examples, config.train.validation_fraction, config.train.example_history, config.train.seed
        )
        validation = make_converter(
            features.encode_examples(held_out, vocab_df, length, types), str(staging / "validation")
        )
    encoded = features.encode_examples(examples, vocab_df, length, types)
    np.save(staging / "log_q.npy", _log_target_frequency(encoded, len(vocab)))
    lists = _ranking_lists(spark, config, marked, vocab_df, staging, types, text) if marked is not None else None
    converter = make_converter(encoded, str(staging / "examples"))
    examples.unpersist()
    params = _train_params(config)
    if not config.train.local_mode:  # a rank in an executor task gets that task's cores
        params["threads"] = int(spark.sparkContext.getConf().get("spark.task.cpus", "1"))
    # Same data and settings (epochs aside) -> same checkpoint folder: a failed run resumes there.
    fingerprint = hashlib.sha256(
        json.dumps(
            [label, model_name, converter.num_rows, vocab, {k: v for k, v in params.items() if k != "epochs"}],
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()[:16]
    checkpoints = config.shared_path("_checkpoints", "train", fingerprint)
    params["checkpoint_dir"] = str(checkpoints)
    mlflow.log_params(
        {
            **params,
            "examples": converter.num_rows,
            "vocabulary": len(vocab),
            "trained_on": label,
            "text_model": model_name,
            "validation_examples": validation.num_rows if validation else 0,
            "ranking_lists": lists.num_rows if lists else 0,
        }
    )
    log.info(
        "train on %s: %d examples, %d items, %d process(es)",
        label,
        converter.num_rows,
        len(vocab),
        config.train.num_processes,
    )
    distributor = TorchDistributor(
        num_processes=config.train.num_processes,
        local_mode=config.train.local_mode,
        use_gpu=config.train.use_gpu,
    )
    data = {
        "converter": converter.to_json(),
        "item_text": str(staging / "item_text.npy"),
        "log_q": str(staging / "log_q.npy"),
        "validation": validation.to_json() if validation else None,
        "item_attrs": str(staging / "item_attrs.npy") if item_attrs is not None else None,
        "attr_codes": spec.size if item_attrs is not None else 0,
        "lists": lists.to_json() if lists else None,
        "item_extra": str(staging / "item_extra.npy") if item_extra is not None else None,
        "extra_dims": extra_dims,
        "event_types": types,
        "user_features": user_names,
    }
    cloudpickle.register_pickle_by_value(launch)  # ranks may start before sparkrec is importable
    try:
        result = distributor.run(
            launch.in_rank,
            f"{train_two_tower.__module__}:{train_two_tower.__name__}",
            data,
            str(staging / "out"),
            params,
        )
    except Exception as err:  # a rank died or raised: TorchDistributor reports its whole output
        done = checkpoint_epoch(str(checkpoints))
        reasons = rank_errors(str(staging / "out"), config.train.num_processes) or _python_error(str(err))
        raise TrainingFailedError(
            f"training failed after {done} finished epoch(s) ({'; '.join(reasons)[:400] if reasons else type(err).__name__}); "
            + (
                f"re-run the train stage to resume from the checkpoint in {checkpoints}"
                if done
                else "no epoch finished, so a re-run starts over"
            )
        ) from err
    for rank, where in enumerate(result.get("placement", [])):
        log.info("train: rank %d ran as pid %s on %s in %s", rank, where["pid"], where["host"], where["cwd"])
    if result.get("resumed_from"):
        mlflow.log_param("resumed_from_epoch", result["resumed_from"])
        log.info("train: resumed after epoch %d from %s", result["resumed_from"], checkpoints)
    for epoch, (loss, speed) in enumerate(zip(result["loss"], result["examples_per_s"], strict=True), start=1):
        log_metrics(
            {"loss": loss, "examples_per_s": speed, "examples_per_s_per_process": speed / config.train.num_processes},
            step=epoch,
        )
    for epoch, val in enumerate(result.get("val_loss", []), start=1):
        log_metrics({"val_loss": val}, step=epoch)
    for epoch, val in enumerate(result.get("rank_loss", []), start=1):
        log_metrics({"rank_loss": val}, step=epoch)
    if result.get("best_epoch"):
        mlflow.log_param("best_epoch", int(result["best_epoch"][0]))
    _log_loss_curve(result["loss"], result.get("val_loss"), result.get("rank_loss"))
    meta = {
        **dataclasses.asdict(config.train.model),
        "text_model": model_name,
        "trained_on": label,
        "attributes": spec.to_dict() if item_attrs is not None else None,
        "ranker": ranker_meta(config) if lists else None,
        "extra_dims": extra_dims,
        "event_types": types,
        "user_feature_names": user_names,
    }
    model_dir = write_model_dir(
        staging / "model", staging / "out" / "weights.pt", vocab, text, meta, item_attrs, item_extra
    )
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=TwoTowerPyfunc(),
        artifacts={"model_dir": str(model_dir)},
        input_example=_input_example(vocab),
        signature=signature(),
        code_paths=[_package_source(staging / "code")],
        pip_requirements=_model_requirements(),
        registered_model_name=config.mlflow.registered_model,
    )
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(config.mlflow.registered_model, config.mlflow.candidate_alias, version)
    final = {"final_loss": result["loss"][-1], "examples": float(converter.num_rows), "vocabulary": float(len(vocab))}
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(checkpoints, ignore_errors=True)
    log.info(
        "train: registered %s version %s as @%s", config.mlflow.registered_model, version, config.mlflow.candidate_alias
    )
    return {
        "model_version": version,
        "loss": result["loss"],
        "examples_per_s": result["examples_per_s"],
        "placement": result.get("placement", []),
        **final,
    }


def _python_error(output: str) -> list[str]:
    """The last Python exception line of a failed job's output (``ModuleNotFoundError: ...``), else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit): ", line)]
    return (errors or lines)[-1:]


def _package_source(scratch: Path) -> str:
    """The sparkrec package folder, for the logged model's code; extracted first when sparkrec was
    imported from a .zip or wheel (spark-submit --py-files)."""
    package = Path(__file__).resolve().parent
    if package.is_dir():
        return str(package)
    import zipfile

    archive = next(p for p in package.parents if p.is_file())
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(scratch, [n for n in zf.namelist() if n.startswith("sparkrec/")])
    return str(scratch / "sparkrec")


def _item_attributes(spark: SparkSession, config: Config, vocab: list[str]) -> tuple[Any, np.ndarray | None]:
    """The attribute vocabulary of the training items and their codes [V + 1, A] (row 0 zeros); no
    codes when the catalogue has no categories or prices, or ``train.model.attributes`` is off."""
    from sparkrec.models.attributes import encode, fit_spec

    rows = dict(
        (r["item_id"], (r["category"], r["price"]))
        for r in tables.read_table(spark, config, ITEMS).select("item_id", "category", "price").collect()
    )
    categories = [rows.get(i, (None, None))[0] for i in vocab]
    prices = [rows.get(i, (None, None))[1] for i in vocab]
    spec = fit_spec(categories, prices)
    if spec.empty or not config.train.model.attributes:
        return spec, None
    codes = encode(spec, categories, prices)
    return spec, np.vstack([np.zeros((1, codes.shape[1]), dtype=np.int64), codes])


def collaborative_weights(gram: np.ndarray, text: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """The ranker's collaborative score, EASE B, with the text neighbours ``meta`` (``ranker_meta``)
    asks for (a model saved without them: plain EASE); ``text`` [n, d] in the gram's row order."""
    from sparkrec.models.baselines import ease_weights, with_text_neighbours

    gram = with_text_neighbours(gram, text, int(meta.get("text_neighbours", 0)), float(meta.get("text_weight", 0.0)))
    return ease_weights(gram, float(meta["ease_lambda"]))


def _ranking_lists(
    spark: SparkSession,
    config: Config,
    marked: DataFrame,
    vocab_df: DataFrame,
    staging: Path,
    types: list[str],
    text: np.ndarray,
) -> Any:
    """The ranker's training lists (``ranker.training_lists``) from the events ``features.ranking_split``
    marked, as a Parquet converter; None (with a warning: the model is then retrieval only) when the
    data give fewer lists than processes. ``text``: the vocabulary's text vectors [V + 1, d]."""
    from sparkrec.loader import make_converter
    from sparkrec.models.baselines import EaseTooLargeError, item_gram
    from sparkrec.models.ranker import training_lists

    rc = config.train.ranker
    vocab = {r["item_id"]: int(r["idx"]) for r in vocab_df.collect()}
    try:
        gram = item_gram(
            marked.where(~F.col("is_label")),
            vocab_df.select("item_id", F.col("idx").alias("row")),
            len(vocab) + 1,
            config.experiment.ease_max_items,
        )
    except EaseTooLargeError as err:
        raise EaseTooLargeError(f"the ranker's collaborative score: {err}; or set train.ranker.enabled: false") from err
    frame = training_lists(
        marked.toPandas(),
        vocab,
        collaborative_weights(gram, text, ranker_meta(config)),
        config.train.model.history_length,
        rc.candidates,
        rc.max_lists,
        config.train.seed,
        types,
        rc.recent_days,
    )
    marked.unpersist()
    if len(frame) < config.train.num_processes:
        log.warning(
            "train: %d ranking list(s) for %d process(es): the ranker is not trained (retrieval only)",
            len(frame),
            config.train.num_processes,
        )
        return None
    schema = (
        "history array<bigint>, history_types array<bigint>, user_features array<float>, "
        "candidates array<bigint>, collaborative array<float>, popularity array<float>, "
        "recent_popularity array<float>, labels array<float>"
    )
    lists = make_converter(spark.createDataFrame(frame, schema), str(staging / "lists"))
    log.info("train: %d ranking lists (%s labels, %d candidates each)", lists.num_rows, rc.labels, rc.candidates)
    return lists


def ranker_meta(config: Config) -> dict[str, Any]:
    """What serving needs of the ranker: its shape and how its collaborative score was made."""
    rc = config.train.ranker
    text = config.train.model.text  # the "without text" ablation takes text out of EASE as well
    return {
        "hidden": rc.hidden,
        "cross_layers": rc.cross_layers,
        "ease_lambda": rc.ease_lambda,
        "candidates": rc.candidates,
        "text_weight": rc.text_weight if text else 0.0,
        "text_neighbours": rc.text_neighbours if text else 0,
        "recent_days": rc.recent_days,
    }


def _log_target_frequency(encoded_df: DataFrame, vocabulary: int) -> np.ndarray:
    """log of each item index's share of training targets (add-one smoothed), [V + 1]."""
    counts = np.ones(vocabulary + 1, dtype=np.float64)
    for row in encoded_df.groupBy("target").count().collect():
        counts[int(row["target"])] += row["count"]
    return np.log(counts / counts.sum()).astype(np.float32)


def _train_params(config: Config) -> dict[str, Any]:
    """Model and optimiser settings in one flat dict (what the training function and MLflow get)."""
    run = {k: v for k, v in dataclasses.asdict(config.train).items() if k not in ("model", "ranker")}
    ranker = {f"ranker_{k}": v for k, v in dataclasses.asdict(config.train.ranker).items()}
    return {**dataclasses.asdict(config.train.model), **run, **ranker}


def _input_example(vocab: list[str]) -> Any:
    import pandas as pd

    return pd.DataFrame({"history": [vocab[:3]]})


def _model_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("torch", "numpy", "pandas", "mlflow")]


def _log_loss_curve(
    losses: list[float], val_losses: list[float] | None = None, rank_losses: list[float] | None = None
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(range(1, len(losses) + 1), losses, marker="o", label="training")
    if val_losses:
        ax.plot(range(1, len(val_losses) + 1), val_losses, marker="s", label="validation")
    if rank_losses:
        ax.plot(range(1, len(rank_losses) + 1), rank_losses, marker="^", label="ranking (listwise)")
    if val_losses or rank_losses:
        ax.legend()
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("training loss")
    fig.tight_layout()
    mlflow.log_figure(fig, "plots/loss.png")
    plt.close(fig)


# ------------------------------------------------------------------------------------- recommend
def item_catalog(spark: SparkSession, config: Config) -> Catalog:
    """Every item of the ``items`` table in id order, with its eligibility (active, not out of stock)
    and category."""
    rows = (
        tables.read_table(spark, config, ITEMS)
        .select("item_id", "active", "in_stock", "category", "price")
        .orderBy("item_id")
        .collect()
    )
    item_ids = [r["item_id"] for r in rows]
    eligible = np.array([bool(r["active"]) and r["in_stock"] is not False for r in rows], dtype=bool)
    index_df = spark.createDataFrame([(item, i) for i, item in enumerate(item_ids)], "item_id string, row int")
    return Catalog(
        item_ids,
        eligible,
        index_df,
        categories=[r["category"] for r in rows],
        prices=[r["price"] for r in rows],
        has_in_stock=any(r["in_stock"] is not None for r in rows),
    )


def _text_vectors(spark: SparkSession, config: Config, loaded: Any, catalog: Catalog) -> np.ndarray:
    """The stored text vector of every catalogue item for the model's text encoder (zeros: none)."""
    stored = dict(
        tables.read_table(spark, config, ITEM_EMBEDDINGS)
        .where(F.col("model") == loaded.meta["text_model"])
        .select("item_id", "embedding")
        .collect()
    )
    return vector_matrix(stored, catalog.item_ids, loaded.model.item_text.shape[1])


def two_tower_scorer(
    spark: SparkSession, config: Config, loaded: Any, catalog: Catalog, text: np.ndarray | None = None
) -> Any:
    """A ``TwoTowerScorer`` of a loaded model over the catalogue: every item's fused vector, from its
    id, its stored text vector, its attributes and the extra vector columns the model was trained
    with (read again from ``train.model.item_vectors``, else from where they were at training time)."""
    from sparkrec.models.scoring import TwoTowerScorer

    text = _text_vectors(spark, config, loaded, catalog) if text is None else text
    attrs = None
    if catalog.categories is not None and catalog.prices is not None:
        attrs = loaded.attribute_codes(catalog.categories, catalog.prices)
    extra = None
    if loaded.extra_columns:
        sources = {
            c: config.train.model.item_vectors.get(c) or loaded.meta["item_vectors"][c] for c in loaded.extra_columns
        }
        extra, _ = _extra_vectors(spark, sources, catalog.item_ids, loaded.extra_columns)
    vectors = loaded.item_vectors(catalog.item_ids, text, attrs, extra)
    state = {k: v.detach().numpy() for k, v in loaded.model.users.state_dict().items()}
    return TwoTowerScorer(
        vectors,
        state,
        int(loaded.meta["dim"]),
        int(loaded.meta["history_length"]),
        tuple(loaded.meta.get("event_types") or ()),
    )


def learned_ranker(
    spark: SparkSession,
    config: Config,
    loaded: Any,
    catalog: Catalog,
    interactions_df: DataFrame,
    towers: Any,
    text: np.ndarray,
) -> Any:
    """The model's ranker over the catalogue (``ranking.LearnedRanker``), its collaborative score and
    popularity fitted on ``interactions_df``'s positive events (``text``: the catalogue's text vectors,
    for the text neighbours the model was trained with); None when the model was trained without one
    or ``recommend.ranker`` is ``retrieval``."""
    from sparkrec.models.baselines import EaseTooLargeError, fit_popularity, item_gram
    from sparkrec.models.ranker import saved_shape
    from sparkrec.ranking import LearnedRanker

    meta = loaded.meta.get("ranker")
    if config.recommend.ranker != "learned" or not meta or loaded.model.ranker is None:
        return None
    positives = interactions_df.where(F.col("weight") > 0)
    try:
        gram = item_gram(positives, catalog.index_df, catalog.size, config.experiment.ease_max_items)
    except EaseTooLargeError as err:
        raise EaseTooLargeError(f"the ranker's collaborative score: {err}; or set recommend.ranker: retrieval") from err
    popularity = fit_popularity(positives, catalog.index_df, catalog.size).popularity
    days = int(meta.get("recent_days", 0))  # a model saved before the feature existed reads without it
    recent = None
    if days > 0:
        last = positives.agg(F.max("event_ts")).first()[0]
        lately = positives.where(F.col("event_ts") > F.lit(last - dt.timedelta(days=days))) if last else positives
        recent = np.log1p(fit_popularity(lately, catalog.index_df, catalog.size).popularity).astype(np.float32)
    state = {k: v.detach().numpy() for k, v in loaded.model.ranker.state_dict().items()}
    return LearnedRanker(
        towers,
        collaborative_weights(gram, text, meta),
        np.log1p(popularity).astype(np.float32),
        state,
        saved_shape(meta),
        candidates=int(meta["candidates"]),
        retrieval_candidates=config.recommend.retrieval_candidates,
        recent=recent,
    )


def model_scorer(
    spark: SparkSession,
    config: Config,
    loaded: Any,
    catalog: Catalog,
    interactions_df: DataFrame,
    text: np.ndarray | None = None,
) -> Any:
    """What the model serves, as one ``Scorer`` for evaluation: the ranker's step over its candidates
    (``ranking.RankedScorer``) when it has one, else the towers' dot product."""
    from sparkrec.ranking import RankedScorer

    text = _text_vectors(spark, config, loaded, catalog) if text is None else text
    towers = two_tower_scorer(spark, config, loaded, catalog, text)
    ranker = learned_ranker(spark, config, loaded, catalog, interactions_df, towers, text)
    return towers if ranker is None else RankedScorer(ranker, catalog.eligible)


def run_recommend(spark: SparkSession, config: Config, day: str) -> dict[str, Any]:
    """Top-k lists for every active user of ``day`` into ``recommendations``: candidates from the
    champion, the ranking step, the business rules (``sparkrec.ranking``), then the publish gate
    (``sparkrec.publish``); the day's partition is replaced only when the gate passes.

    Raises:
        publish.PublishGateError: a check failed; the table still serves the previous day.
    """
    import mlflow

    from sparkrec import publish, ranking
    from sparkrec.models.scoring import to_matrix_rows
    from sparkrec.session import register_tables

    check_date(day)
    rc = config.recommend
    ranking.check_settings(rc.k, rc.candidates, rc.max_per_category, rc.mmr_lambda, rc.fallback_segment)
    ranking.check_ranker(rc.ranker)
    versions = {t: tables.table_version(spark, config, t) for t in (INTERACTIONS, ITEMS, ITEM_EMBEDDINGS)}
    with stage_run(config, "recommend", day, versions) as run_id:
        loaded, version = load_model(config, rc.model_alias)
        mlflow.log_params(
            {
                "model_version": version,
                "model_alias": rc.model_alias,
                "k": rc.k,
                "candidates": rc.candidates,
                "ranker": rc.ranker,
                "seen_window_days": rc.seen_window_days,
                "max_per_category": rc.max_per_category,
                "mmr_lambda": rc.mmr_lambda,
                "fallback_segment": rc.fallback_segment,
            }
        )
        catalog = item_catalog(spark, config)
        interactions = features.filter_until(tables.read_table(spark, config, INTERACTIONS), day)
        active = features.active_users(interactions, day, rc.active_days).cache()
        n_active = active.count()
        text = _text_vectors(spark, config, loaded, catalog)
        rules = _list_rules(config, catalog, interactions, active, n_active, text, day)
        histories = _recommend_histories(interactions, active, config, day)
        towers = two_tower_scorer(spark, config, loaded, catalog, text)
        ranker = learned_ranker(spark, config, loaded, catalog, features.without_bots(interactions), towers, text)
        if ranker is None:
            if rc.ranker == "learned":
                log.info("recommend: model version %s has no ranker; lists keep the retrieval order", version)
            ranker = ranking.RetrievalRanker()
        mlflow.log_param("ranker_used", ranker.name)
        recs = ranking.recommend(
            to_matrix_rows(histories, catalog.index_df), towers, ranker, rules, catalog.item_ids, rc.block_size
        )
        out = recs.select(
            F.to_date(F.lit(day)).alias("ds"),
            "user_id",
            "rank",
            "item_id",
            "score",
            F.lit(version).alias("model_version"),
            F.lit(run_id).alias("run_id"),
            "reason",
            F.current_timestamp().alias("generated_at"),
        ).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            stats = publish.list_stats(out)
            previous_day, previous_rows = _previous_day(spark, config, day)
            gate = publish.check(stats, n_active, previous_rows, rc.gate)
            fallback = out.where(F.col("reason").startswith("fallback:")).select("user_id").distinct().count()
            items = out.select("item_id").distinct().count()
            metrics = {
                "users": stats["users"],
                "rows": stats["rows"],
                "fallback_users": float(fallback),
                "active_users": gate.values["active_users"],
                "user_coverage": gate.values["user_coverage"],
                "catalog_coverage": float(items) / max(1, int(rules.allowed.sum())),
                **{f"gate.{name}": 1.0 if ok else 0.0 for name, ok in gate.checks.items()},
            }
            if "row_change" in gate.values:
                metrics["row_change"] = gate.values["row_change"]
            log_metrics(metrics)
            write_run_metrics(
                spark, config, "recommend", run_id, [day], [(day, m, v, None) for m, v in metrics.items()]
            )
            _log_score_plot(out)
            mlflow.set_tags({"publish_gate": "passed" if gate.passed else "failed"})
            if not gate.passed:
                served = f"the lists of {previous_day} stay served" if previous_day else "nothing is served yet"
                message = f"publish gate failed for {day} ({served}): " + "; ".join(gate.failures)
                if rc.gate.enabled:
                    raise publish.PublishGateError(message)
                log.warning("%s — published anyway (recommend.gate.enabled=false)", message)
            tables.ensure_contract(spark, config, RECOMMENDATIONS)
            tables.replace_partitions(out, config, RECOMMENDATIONS, f"ds = {tables.date_literal(day)}")
        finally:
            out.unpersist()
            active.unpersist()
        register_tables(spark, config)
        log.info(
            "recommend %s: %d users (%d on the popularity fallback), %d rows, model version %s",
            day,
            stats["users"],
            fallback,
            stats["rows"],
            version,
        )
        report_counts(run_id, users=stats["users"], rows=stats["rows"])
        return {"run_id": run_id, "model_version": version, "ranker": ranker.name, **metrics}


def _recommend_histories(interactions: DataFrame, active: DataFrame, config: Config, day: str) -> DataFrame:
    """Active users' recent history (what the model reads) and seen items (what the seen rule removes:
    all history, or the last ``recommend.seen_window_days`` days)."""
    histories = features.to_user_histories(interactions, config.train.model.history_length).join(active, "user_id")
    window = config.recommend.seen_window_days
    if window <= 0:
        return histories
    recent = (
        features.filter_until(interactions, day, window)
        .groupBy("user_id")
        .agg(F.collect_set("item_id").alias("recent_seen"))
    )
    return (
        histories.join(recent, "user_id", "left")
        .withColumn("seen", F.coalesce("recent_seen", F.array().cast("array<string>")))
        .drop("recent_seen")
    )


def _list_rules(
    config: Config,
    catalog: Catalog,
    interactions: DataFrame,
    active: DataFrame,
    n_active: int,
    text: np.ndarray,
    day: str,
) -> Any:
    """The business rules as arrays over the catalogue; a rule whose catalogue field is absent is
    skipped, and the log says so."""
    from sparkrec.ranking import ListRules, category_codes

    rc = config.recommend
    allowed = catalog.eligible.copy()
    if not catalog.has_in_stock:
        log.info("rule out_of_stock skipped: no item of the catalogue has an in_stock field")
    excluded = _excluded_items(config)
    if excluded:
        hits = np.array([item in excluded for item in catalog.item_ids], dtype=bool)
        allowed &= ~hits
        log.info("rule exclusion_list: %d listed items, %d in the catalogue", len(excluded), int(hits.sum()))
    categories = category_codes(catalog.categories or [])
    if categories is None and (rc.max_per_category > 0 or rc.fallback_segment == "category"):
        log.info("rule max_per_category / category fallback segment skipped: no item of the catalogue has a category")
    vectors = None
    if rc.mmr_lambda < 1.0:
        norms = np.linalg.norm(text, axis=1, keepdims=True)
        if not norms.any():
            log.info("rule mmr_diversity skipped: no item has a text embedding")
        else:
            vectors = (text / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    people = features.without_bots(features.filter_until(interactions, day, rc.active_days)).where(F.col("weight") > 0)
    counts = (
        people.join(active, "user_id")
        .groupBy("item_id")
        .agg(F.countDistinct("user_id").alias("n"))
        .join(catalog.index_df, "item_id")
        .select("row", "n")
        .collect()
    )
    popularity = np.zeros(catalog.size, dtype=np.float64)
    for r in counts:
        popularity[r["row"]] = r["n"] / max(1, n_active)
    return ListRules(
        k=rc.k,
        candidates=rc.candidates,
        allowed=allowed,
        popularity=popularity,
        categories=categories,
        max_per_category=rc.max_per_category,
        item_vectors=vectors,
        mmr_lambda=rc.mmr_lambda,
        fallback_segment=rc.fallback_segment,
    )


def _excluded_items(config: Config) -> set[str]:
    """``recommend.exclude_items`` and the ids in ``recommend.exclude_file`` (one per line, # comments)."""
    items = {i for i in config.recommend.exclude_items if i}
    path = config.recommend.exclude_file
    if path:
        if not Path(path).is_file():
            raise FileNotFoundError(f"recommend.exclude_file {path} does not exist")
        for line in Path(path).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                items.add(line)
    return items


def _previous_day(spark: SparkSession, config: Config, day: str) -> tuple[str | None, float | None]:
    """The latest day before ``day`` in ``recommendations`` and its row count."""
    if not tables.table_exists(spark, config, RECOMMENDATIONS):
        return None, None
    earlier = tables.read_table(spark, config, RECOMMENDATIONS).where(F.col("ds") < F.to_date(F.lit(day)))
    latest = earlier.agg(F.max("ds")).first()[0]
    if latest is None:
        return None, None
    return str(latest), float(earlier.where(F.col("ds") == F.lit(latest)).count())


def _log_score_plot(recs: DataFrame) -> None:
    """Histogram of the day's scores, model rows and fallback rows apart, to MLflow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    frame = recs.select("score", F.col("reason").startswith("fallback:").alias("fallback")).limit(500_000).toPandas()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for fallback, label in ((False, "model"), (True, "popularity fallback")):
        scores = frame.loc[frame["fallback"] == fallback, "score"]
        if len(scores):
            ax.hist(scores, bins=50, alpha=0.7, label=f"{label} ({len(scores)} rows)")
    ax.set_xlabel("score")
    ax.set_ylabel("rows")
    ax.set_title("recommendation scores")
    ax.legend()
    fig.tight_layout()
    mlflow.log_figure(fig, "plots/score_distribution.png")
    plt.close(fig)


# -------------------------------------------------------------------------------------- evaluate
def run_evaluate(spark: SparkSession, config: Config, day: str) -> dict[str, Any]:
    """Hold out the last ``evaluate.holdout_days`` days; score the candidate, the champion and
    popularity on them, and promote the candidate to champion when the gate allows it."""
    import mlflow

    from sparkrec.models.baselines import fit_popularity

    check_date(day)
    k = config.eval_k
    cutoff = features.day_offset(day, -config.evaluate.holdout_days)
    versions = {t: tables.table_version(spark, config, t) for t in (INTERACTIONS, ITEMS, ITEM_EMBEDDINGS)}
    with stage_run(config, "evaluate", day, versions) as run_id:
        candidate, version = load_model(config, config.mlflow.candidate_alias)
        champion_version = alias_version(config, config.mlflow.champion_alias)
        mlflow.log_params(
            {
                "model_version": version,
                "champion_version_before": champion_version or "none",
                "k": k,
                "cutoff": cutoff,
                "protocol": "chrono",
            }
        )
        catalog = item_catalog(spark, config)
        people = features.without_bots(tables.read_table(spark, config, INTERACTIONS))
        train_part, test_part = splits.chrono_split(people, day, config.evaluate.holdout_days)
        truth = evaluation.to_truth(train_part, test_part)
        users = evaluation.to_evaluation_users(train_part, truth, catalog, config.train.model.history_length).cache()
        popularity = fit_popularity(train_part, catalog.index_df, catalog.size)
        scorers = {"two_tower": model_scorer(spark, config, candidate, catalog, train_part), "popularity": popularity}
        if champion_version is not None and champion_version != version:
            champion, _ = load_model(config, config.mlflow.champion_alias)
            scorers["champion"] = model_scorer(spark, config, champion, catalog, train_part)
        longest = max(k, config.evaluate.curve_k)
        text_vectors = tables.read_table(spark, config, ITEM_EMBEDDINGS).where(
            F.col("model") == candidate.meta["text_model"]
        )
        results, lists = evaluation.score_models(
            users,
            truth,
            scorers,
            catalog,
            k,
            longest,
            config.recommend.block_size,
            item_vectors_df=text_vectors,
            train_df=train_part,
        )
        users.unpersist()
        evaluation.log_evaluation_plots(
            lists, truth.toPandas(), longest, k, dict(zip(catalog.item_ids, popularity.popularity))
        )
        served = served_metrics(spark, config, day, k)
        if served:
            results["served"] = served
        gate_metric = f"ndcg@{k}"
        decision = decide_promotion(
            version,
            results["two_tower"][gate_metric],
            champion_version,
            results["champion"][gate_metric]
            if "champion" in results
            else (results["two_tower"][gate_metric] if champion_version == version else None),
            config.evaluate.promotion_tolerance,
        )
        apply_promotion(config, decision, gate_metric)
        mlflow.set_tags({"promoted": str(decision.promoted).lower(), "promotion_reason": decision.reason})
        rows = [(day, "promoted", 1.0 if decision.promoted else 0.0, "gate")]
        for source, metrics in results.items():
            log_metrics({f"{source}.{m}": v for m, v in metrics.items()})
            rows += [(day, m, v, source) for m, v in metrics.items()]
        write_run_metrics(spark, config, "evaluate", run_id, [day], rows)
        evaluation.log_metric_bars(results, k)
        for source, metrics in results.items():
            log.info("evaluate %s %s: %s", day, source, ", ".join(f"{m}={v:.4f}" for m, v in metrics.items()))
        log.info(
            "evaluate %s: version %s %s (%s)",
            day,
            version,
            "promoted to @" + config.mlflow.champion_alias if decision.promoted else "not promoted",
            decision.reason,
        )
        report_counts(run_id, held_out_users=results["two_tower"].get("users", 0.0))
        return {
            "run_id": run_id,
            "model_version": version,
            "cutoff": cutoff,
            "promoted": decision.promoted,
            "champion_version": alias_version(config, config.mlflow.champion_alias),
            "metrics": results,
        }


def served_metrics(spark: SparkSession, config: Config, day: str, k: int) -> dict[str, float]:
    """What users did with what they were shown: yesterday's served list against today's interactions.

    ``served_hit@k`` is the share of yesterday's recommended users active today who interacted with
    one of their recommended items today; ``served_recall@k`` the mean share of their items today that
    were recommended. Empty when there was no list yesterday or nobody came back.
    """
    from sparkrec.metrics import ranking_metrics

    if not tables.table_exists(spark, config, RECOMMENDATIONS):
        return {}
    yesterday = features.day_offset(day, -1)
    shown = tables.read_table(spark, config, RECOMMENDATIONS).where(F.col("ds") == F.to_date(F.lit(yesterday)))
    today = tables.read_table(spark, config, INTERACTIONS).where(
        (F.col("event_date") == F.to_date(F.lit(day))) & (F.col("weight") > 0)
    )
    got = ranking_metrics(shown, today.select("user_id", "item_id"), k)
    if not got["users"]:
        return {}
    return {f"served_hit@{k}": got[f"hit@{k}"], f"served_recall@{k}": got[f"recall@{k}"], "users": got["users"]}


# ---------------------------------------------------------------------------- nightly / backfill
def run_nightly(spark: SparkSession, config: Config, day: str) -> dict[str, Any]:
    """clean → embed → train → evaluate (promotion gate) → recommend for one landing day."""
    return _run_all(spark, config, [day], day, "nightly")


def run_backfill(spark: SparkSession, config: Config, start: str, end: str) -> dict[str, Any]:
    """Clean every landing day in [start, end], then embed, train, evaluate and recommend for ``end``."""
    check_date(start)
    check_date(end)
    if start > end:
        raise ValueError(f"--from {start} is after --to {end}")
    days = [d for d in landing_days(config, "events") if start <= d <= end]
    if not days:
        raise LandingMissingError(f"no landing days between {start} and {end} under {config.landing.root}/events/")
    return _run_all(spark, config, days, end, "backfill")


def _run_all(spark: SparkSession, config: Config, clean_days: list[str], day: str, name: str) -> dict[str, Any]:
    import mlflow

    from sparkrec.tracking import configure_mlflow

    configure_mlflow(config)
    parent = mlflow.start_run(run_name=f"{name} {day}") if mlflow.active_run() is None else nullcontext()
    with parent:
        mlflow.set_tags({"sparkrec.stage": name, "sparkrec.date": day})
        out = {"clean": run_clean(spark, config, clean_days)}
        out["embed"] = run_embed(spark, config, day)
        out["train"] = run_train(spark, config, day)
        out["evaluate"] = run_evaluate(spark, config, day)
        out["recommend"] = run_recommend(spark, config, day)
        return out


# ----------------------------------------------------------------------------------------- misc
def summary(spark: SparkSession, config: Config, day: str) -> str:
    """What a person wants after a run: rows per table, the metrics, a query to try, the MLflow UI."""
    lines = [f"sparkrec summary for {day}", "", "Delta tables (rows) under " + config.lakehouse.root]
    for table in (INTERACTIONS, QUARANTINE, ITEMS, ITEM_EMBEDDINGS, RECOMMENDATIONS, RUN_METRICS):
        if tables.table_exists(spark, config, table):
            n = tables.read_table(spark, config, table).count()
            lines.append(f"  {config.catalog.database}.{table:<16} {n:>8}")
    if tables.table_exists(spark, config, RUN_METRICS):
        metrics = (
            tables.read_table(spark, config, RUN_METRICS)
            .where(
                (F.col("ds") == F.to_date(F.lit(day))) & (F.col("stage") == "evaluate") & (F.col("metric") != "users")
            )
            .orderBy("source", "metric")
            .collect()
        )
        if metrics:
            sources = [
                s for s in ("two_tower", "champion", "popularity", "served") if any(r["source"] == s for r in metrics)
            ]
            table = {(r["metric"], r["source"]): r["value"] for r in metrics}
            names = sorted({r["metric"] for r in metrics if r["source"] in sources})
            lines += ["", f"Evaluation (last {config.evaluate.holdout_days} days held out; two_tower = the new model)"]
            lines.append(f"  {'metric':<16}" + "".join(f"{s:>12}" for s in sources))
            for name in names:
                cells = "".join(f"{table[(name, s)]:>12.4f}" if (name, s) in table else f"{'':>12}" for s in sources)
                lines.append(f"  {name:<16}{cells}")
            promoted = table.get(("promoted", "gate"))
            if promoted is not None:
                lines.append(
                    f"  promotion gate: {'promoted to champion' if promoted else 'not promoted (champion kept)'}"
                )
    lines += [
        "",
        "Try SQL:",
        f'  .venv/bin/sparkrec sql "SELECT user_id, rank, item_id, score FROM {config.catalog.database}.recommendations '
        f"WHERE ds = DATE'{day}' ORDER BY user_id, rank LIMIT 20\"",
        "",
        "MLflow UI:",
        f"  .venv/bin/mlflow ui --backend-store-uri {config.mlflow.tracking_uri}   # then open http://127.0.0.1:5000",
    ]
    return "\n".join(lines)
