"""What the training processes read, made by Spark and written once: the training examples, the
ranker's training lists (both Parquet, read by each process as its shard) and the vocabulary's item
matrices (.npy). The driver holds the vocabulary and per-item arrays, never a per-event or per-user frame.

Every user in them is encoded as serving encodes one (``encoding``): the examples through
``features.encode_examples``, the lists' contexts through ``features.to_user_histories`` and
``models.lists.training_lists``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkrec import embed, features
from sparkrec.catalog import extra_vectors, item_attributes, save_text_matrix
from sparkrec.config import Config
from sparkrec.encoding import USER_FEATURES, UserEncoding
from sparkrec.errors import UserError
from sparkrec.loader import ParquetConverter, make_converter
from sparkrec.models.attributes import AttributeSpec
from sparkrec.models.baselines import EaseTooLargeError, fit_collaborative, resolved
from sparkrec.models.lists import list_columns, training_lists
from sparkrec.models.scoring import to_matrix_rows
from sparkrec.models.specs import RankerSpec, TrainingInputs

log = logging.getLogger("sparkrec")


@dataclass(frozen=True)
class TrainingData:
    """A training run's inputs, staged: the vocabulary (index i + 1 is ``vocab[i]``), its item matrices
    (row 0 zeros: padding) and what the processes read."""

    vocab: list[str]
    text_model: str
    attributes: AttributeSpec | None  # the attribute code vocabulary (None: no attributes)
    item_attrs: np.ndarray | None  # [V + 1, A]
    item_extra: np.ndarray | None  # [V + 1, E]
    inputs: TrainingInputs
    examples: int
    validation_examples: int
    ranking_lists: int
    ranker: RankerSpec | None  # the ranker trained with the towers (None: retrieval only)


def prepare(spark: SparkSession, config: Config, history_df: DataFrame, staging: Path, label: str) -> TrainingData:
    """Stage everything a training run on ``history_df`` (interactions) reads under ``staging``.

    Raises:
        ValueError: ``history_df`` gives no training example.
    """
    train = config.train
    marked = None
    if train.ranker.enabled:
        # The ranker learns on the labels how to weigh what the towers and EASE make of the context, so
        # neither may see a label: the towers train on the context's events only.
        rc = train.ranker
        marked = features.ranking_split(history_df, rc.labels, rc.label_fraction, train.seed).cache()
        history_df = history_df.join(marked.where("is_label").select("event_id"), "event_id", "left_anti")
    examples = features.to_training_examples(history_df, train.model.history_length, train.example_history)
    examples = features.latest_per_user(examples, train.max_examples_per_user).cache()
    items = examples.select(F.explode(F.array_union(F.array("item_id"), "history")).alias("item_id")).distinct()
    vocab = sorted(items.toArrow().column("item_id").to_pylist())
    if not vocab:
        raise UserError(f"no training examples in {label}: clean more days first")
    rows = pd.DataFrame({"item_id": vocab, "idx": np.arange(1, len(vocab) + 1, dtype=np.int32)})
    vocab_df = spark.createDataFrame(rows, "item_id string, idx int")  # through Arrow
    text_model = embed.model_name(config.embed)
    staging.mkdir(parents=True, exist_ok=True)
    # Written a part at a time and read back mapped: the training processes read the file, and only a
    # collaborative score with text neighbours (a catalogue small enough for EASE) reads the vectors here again.
    item_text = str(save_text_matrix(spark, config, text_model, vocab, staging / "item_text.npy", padded=True))
    text = np.load(item_text, mmap_mode="r")
    attributes, item_attrs = item_attributes(spark, config, vocab)
    extra, extra_dims = extra_vectors(spark, train.model.item_vectors, vocab)
    item_extra = _padded(extra) if extra is not None else None
    encoding = UserEncoding(
        train.model.history_length,
        tuple(features.event_types(history_df)),
        USER_FEATURES if train.model.user_features else (),
    )
    converters = _example_converters(examples, vocab_df, len(vocab), encoding, config, staging)
    lists, ranker = None, None
    if marked is not None:
        ranker = resolved(RankerSpec.from_config(train), len(text), config.experiment.ease_max_items)
        lists = ranking_lists(spark, config, marked, vocab_df, text, encoding, staging, ranker)
        marked.unpersist()
    examples.unpersist()
    inputs = TrainingInputs(
        examples=converters["examples"].to_json(),
        validation=converters["validation"].to_json() if converters.get("validation") else None,
        lists=lists.to_json() if lists else None,
        attr_codes=attributes.size if item_attrs is not None else 0,
        extra_dims=tuple(extra_dims),
        event_types=encoding.event_types,
        user_features=encoding.user_features,
        item_text=item_text,
        log_q=_save(staging / "log_q.npy", converters["log_q"]),
        item_attrs=_save(staging / "item_attrs.npy", item_attrs) if item_attrs is not None else None,
        item_extra=_save(staging / "item_extra.npy", item_extra) if item_extra is not None else None,
    )
    return TrainingData(
        vocab=vocab,
        text_model=text_model,
        attributes=attributes if item_attrs is not None else None,
        item_attrs=item_attrs,
        item_extra=item_extra,
        inputs=inputs,
        examples=converters["examples"].num_rows,
        validation_examples=converters["validation"].num_rows if converters.get("validation") else 0,
        ranking_lists=lists.num_rows if lists else 0,
        ranker=ranker if lists else None,
    )


def _padded(matrix: np.ndarray) -> np.ndarray:
    """``matrix`` [V, d] under a zero row: index 0 is padding."""
    return np.vstack([np.zeros((1, matrix.shape[1]), dtype=matrix.dtype), matrix])


def _example_converters(
    examples_df: DataFrame, vocab_df: DataFrame, vocabulary: int, encoding: UserEncoding, config: Config, staging: Path
) -> dict[str, Any]:
    """The encoded examples (and held-out validation examples, with early stopping) written as Parquet,
    and the log target frequency the retrieval loss corrects by."""
    train = config.train
    out: dict[str, Any] = {}
    if train.patience > 0:
        examples_df, held_out = features.validation_split(
            examples_df, train.validation_fraction, train.example_history, train.seed
        )
        out["validation"] = make_converter(
            features.encode_examples(held_out, vocab_df, encoding), str(staging / "validation")
        )
    encoded = features.encode_examples(examples_df, vocab_df, encoding)
    out["log_q"] = _log_target_frequency(encoded, vocabulary)
    out["examples"] = make_converter(encoded, str(staging / "examples"))
    return out


def _log_target_frequency(encoded_df: DataFrame, vocabulary: int) -> np.ndarray:
    """log of each item index's share of training targets (add-one smoothed), [V + 1]."""
    counts = np.ones(vocabulary + 1, dtype=np.float64)
    table = encoded_df.groupBy("target").count().select(F.col("target").cast("long"), "count").toArrow()
    counts[table.column("target").to_numpy()] += table.column("count").to_numpy()  # targets are distinct
    return np.log(counts / counts.sum()).astype(np.float32)


def _save(path: Path, array: np.ndarray) -> str:
    """``array`` as an .npy file at ``path``; the path, for ``TrainingInputs``."""
    np.save(path, array)
    return str(path)


def ranking_lists(
    spark: SparkSession,
    config: Config,
    marked_df: DataFrame,
    vocab_df: DataFrame,
    text: np.ndarray,
    encoding: UserEncoding,
    staging: Path,
    spec: RankerSpec | None = None,
) -> ParquetConverter | None:
    """The ranker's training lists from the events ``features.ranking_split`` marked, built by Spark
    (``models.lists.training_lists`` in ``mapInPandas``) and written as Parquet; None (with a warning:
    the model is then retrieval only) when the data give fewer lists than processes. ``text``: the
    vocabulary's text vectors [V + 1, d], for the collaborative score's text neighbours; ``spec``: the
    ranker, its collaborative score decided (None: the config's, decided by the vocabulary's size)."""
    rc = config.train.ranker
    rows = vocab_df.select("item_id", F.col("idx").alias("row"))
    size = len(text)
    if spec is None:
        spec = resolved(RankerSpec.from_config(config.train), size, config.experiment.ease_max_items)
    context = marked_df.where(~F.col("is_label"))
    try:
        weights = fit_collaborative(context, rows, size, text, spec, config.experiment.ease_max_items)
    except EaseTooLargeError as err:
        raise EaseTooLargeError(
            f"the ranker's collaborative score: {err}; or set train.ranker.collaborative: auto"
        ) from err
    log.info("train: the ranker's collaborative score is %s over %d items", spec.collaborative, size - 1)
    popularity, recent = _popularity(context, rows, size, rc.recent_days)
    shared = spark.sparkContext.broadcast((weights, popularity, recent))
    candidates = rc.candidates

    def build(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        weights_, popularity_, recent_ = shared.value
        for frame in frames:
            yield training_lists(frame, weights_, popularity_, recent_, encoding, candidates)

    schema = ", ".join(f"{c} {_LIST_TYPES[c]}" for c in list_columns(encoding))
    contexts = ranking_contexts(marked_df, rows, encoding.length, rc.max_lists, config.train.seed)
    lists = make_converter(contexts.mapInPandas(build, schema), str(staging / "lists"))
    shared.unpersist()
    if lists.num_rows < config.train.num_processes:
        log.warning(
            "train: %d ranking list(s) for %d process(es): the ranker is not trained (retrieval only)",
            lists.num_rows,
            config.train.num_processes,
        )
        return None
    log.info("train: %d ranking lists (%s labels, %d candidates each)", lists.num_rows, rc.labels, rc.candidates)
    return lists


_LIST_TYPES = {"history": "array<bigint>", "history_types": "array<bigint>", "user_features": "array<float>",
               "candidates": "array<bigint>", "collaborative": "array<float>", "popularity": "array<float>",
               "recent_popularity": "array<float>", "labels": "array<float>"}  # fmt: skip


def ranking_contexts(marked_df: DataFrame, rows_df: DataFrame, length: int, max_lists: int, seed: int) -> DataFrame:
    """One row per user with a context and a label, in ``user_id`` order: the context read as serving
    reads a user (``history`` as vocabulary rows, ``history_types``, ``user_features``), every row it
    holds (``context``) and the label part's rows (``labels``). Beyond ``max_lists`` users, a seeded
    sample (by a hash of the user id) is kept."""
    context = marked_df.where(~F.col("is_label")).withColumn("weight", F.lit(1.0))
    users = to_matrix_rows(features.to_user_histories(context, length), rows_df).withColumnRenamed("seen", "context")
    labels = (
        marked_df.where(F.col("is_label"))
        .join(rows_df, "item_id")
        .groupBy("user_id")
        .agg(F.collect_set("row").alias("labels"))
    )
    listed = users.where(F.size("context") > 0).join(labels, "user_id")
    if listed.count() > max_lists:
        draw = F.xxhash64("user_id", F.lit(int(seed)))
        listed = listed.orderBy(draw, "user_id").limit(max_lists)
    return listed.orderBy("user_id")


def _popularity(
    context_df: DataFrame, rows_df: DataFrame, size: int, recent_days: int
) -> tuple[np.ndarray, np.ndarray]:
    """[V + 1] log of 1 + the context users holding each row, over all the contexts and over their last
    ``recent_days`` days up to the latest context event (zeros with ``recent_days`` 0)."""
    held = context_df.join(rows_df, "item_id")
    popularity = _log_holders(held, size)
    recent = np.zeros(size, dtype=np.float32)
    if recent_days > 0:
        last = held.agg(F.max("event_ts")).collect()[0][0]
        if last is not None:
            since = F.lit(last - dt.timedelta(days=recent_days))
            recent = _log_holders(held.where(F.col("event_ts") > since), size)
    return popularity, recent


def _log_holders(held_df: DataFrame, size: int) -> np.ndarray:
    """log of 1 + the distinct users of ``held_df`` (``user_id``, ``row``) holding each row, [size]."""
    holders = np.zeros(size, dtype=np.float64)
    counts = held_df.groupBy("row").agg(F.countDistinct("user_id").alias("n")).toArrow()
    holders[counts.column("row").to_numpy()] = counts.column("n").to_numpy()
    return np.log1p(holders).astype(np.float32)
