"""Training examples and user histories from interactions (Spark transforms, no I/O).

A user is read the same way for training and serving (``encoding``): the latest positive items first
(``history_order``), their event types, and ``user_features``; both paths map item ids to integer rows
with ``positions_to_ids`` and pad with ``encoding.encode_users``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkrec.config import HISTORY_MODES, LABEL_MODES
from sparkrec.encoding import USER_FEATURES, UserEncoding, encode_users
from sparkrec.schemas import require_columns


def history_order() -> list[Column]:
    """A user's events latest first; events at the same time by ``event_id``, the latest first.
    Training examples, the ranker's lists and serving all read a history in this order."""
    return [F.desc("event_ts"), F.desc("event_id")]


def latest_per_user(events_df: DataFrame, count: int) -> DataFrame:
    """Each user's latest ``count`` rows of ``events_df`` (``history_order``); 0: all of them."""
    if count <= 0:
        return events_df
    latest = Window.partitionBy("user_id").orderBy(*history_order())
    return events_df.withColumn("_latest", F.row_number().over(latest)).where(F.col("_latest") <= count).drop("_latest")


def filter_until(interactions_df: DataFrame, last_day: str, window_days: int = 0) -> DataFrame:
    """Interactions whose event happened on or before ``last_day`` (and within the window)."""
    end = F.to_date(F.lit(last_day))
    kept = interactions_df.where(F.col("event_date") <= end)
    if window_days > 0:
        kept = kept.where(F.col("event_date") > F.date_sub(end, window_days))
    return kept


def without_bots(interactions_df: DataFrame) -> DataFrame:
    """Interactions of people: rows the clean stage flagged ``is_bot`` are kept in the table but left
    out of training and evaluation."""
    require_columns(interactions_df, ["is_bot"], "without_bots")
    return interactions_df.where(~F.col("is_bot"))


def day_offset(day: str, days: int) -> str:
    """``day`` moved by ``days`` (negative: earlier), as YYYY-MM-DD."""
    return (dt.date.fromisoformat(day) + dt.timedelta(days=days)).isoformat()


def to_training_examples(interactions_df: DataFrame, history_length: int, mode: str = "earlier") -> DataFrame:
    """One example per positive event that has history: (event_id, user_id, item_id, history,
    history_types, user_features, event_ts).

    ``mode`` says which of the user's items are the target's history:
    ``earlier``: up to ``history_length`` of the user's positive items before it, most recent first
    (what the user did next: the nightly job and chronological protocols), ``user_features`` over
    those earlier events; ``others``: up to ``history_length`` of the user's latest positive items
    other than the target itself, most recent first, and ``user_features`` over all the user's events
    (protocols that hide random interactions, where a held-out item can be older than the history).
    Either way the history reads as the served history does: the latest items a user has, up to
    ``history_length``. ``history_types`` are the history's event types. Events with weight 0
    (returns) are neither targets nor history.
    """
    require_columns(interactions_df, ["user_id", "item_id", "event_ts", "event_id", "weight"], "to_training_examples")
    if mode not in HISTORY_MODES:
        raise ValueError(f"train.example_history must be one of {', '.join(HISTORY_MODES)}, got {mode!r}")
    positives = _with_event_type(interactions_df.where(F.col("weight") > 0))
    if mode == "earlier":
        order = Window.partitionBy("user_id").orderBy("event_ts", "event_id")
        earlier = order.rowsBetween(-history_length, -1)
        examples = positives.withColumn(
            "_h", F.reverse(F.collect_list(F.struct("item_id", "event_type")).over(earlier))
        ).withColumn(
            "user_features",
            user_features(
                F.row_number().over(order) - 1,
                F.min("event_ts").over(Window.partitionBy("user_id")),
                F.lag("event_ts").over(order),
            ),
        )
    else:
        # The latest history_length + 1 events hold history_length other than any one target (fewer
        # where the target's item repeats among them).
        user = Window.partitionBy("user_id")
        latest = user.orderBy(*history_order())
        recent = (
            positives.withColumn("_n", F.row_number().over(latest))
            .withColumn(
                "user_features",
                user_features(F.count(F.lit(1)).over(user), F.min("event_ts").over(user), F.max("event_ts").over(user)),
            )
            .where(F.col("_n") <= history_length + 1)
            .groupBy("user_id", "user_features")
            .agg(F.sort_array(F.collect_list(F.struct("_n", "item_id", "event_type"))).alias("_r"))
        )
        others = F.filter(F.col("_r"), lambda e: e["item_id"] != F.col("item_id"))
        examples = positives.join(recent, "user_id").withColumn("_h", F.slice(others, 1, history_length))
    return examples.where(F.size("_h") > 0).select(
        "event_id",
        "user_id",
        "item_id",
        F.col("_h.item_id").alias("history"),
        F.col("_h.event_type").alias("history_types"),
        "user_features",
        "event_ts",
    )


def validation_split(examples_df: DataFrame, fraction: float, mode: str, seed: int) -> tuple[DataFrame, DataFrame]:
    """(train, validation) of ``to_training_examples`` rows, for early stopping; ``mode`` is the
    examples' history mode.

    ``earlier``: the latest ``fraction`` of the examples by event time (their targets are in no
    training example's history: those hold only earlier items). ``others``: every example of a seeded
    ``fraction`` of the users, because an ``others`` history holds the user's other items, later ones
    included: a user's held-out target would sit in that user's training histories, and the
    validation loss would read optimistic.
    """
    require_columns(examples_df, ["user_id", "event_ts"], "validation_split")
    if not 0 < fraction < 1:
        raise ValueError(f"train.validation_fraction must be between 0 and 1, got {fraction}")
    if mode == "others":
        held = F.pmod(F.xxhash64("user_id", F.lit(int(seed))), F.lit(1_000_000)) < F.lit(fraction * 1_000_000)
        return examples_df.where(~held), examples_df.where(held)
    seconds = F.col("event_ts").cast("double")
    cutoff = examples_df.select(seconds.alias("t")).approxQuantile("t", [1.0 - fraction], 0.001)[0]
    return examples_df.where(seconds < cutoff), examples_df.where(seconds >= cutoff)


def user_features(count: Column, first_ts: Column, last_ts: Column) -> Column:
    """``USER_FEATURES`` as an array<double> column."""
    days = (last_ts.cast("double") - first_ts.cast("double")) / 86400.0
    return F.array(F.log1p(count.cast("double")), F.log1p(F.greatest(F.coalesce(days, F.lit(0.0)), F.lit(0.0))))


def _with_event_type(df: DataFrame) -> DataFrame:
    return df if "event_type" in df.columns else df.withColumn("event_type", F.lit(""))


def event_types(interactions_df: DataFrame) -> list[str]:
    """The event types of the positive events, sorted: the user tower's type vocabulary (type i has
    code i + 1, 0 = unknown). Empty when there is only one type: nothing to tell apart."""
    require_columns(interactions_df, ["event_type", "weight"], "event_types")
    found = sorted(r[0] for r in interactions_df.where(F.col("weight") > 0).select("event_type").distinct().collect())
    return found if len(found) > 1 else []


def to_user_histories(interactions_df: DataFrame, history_length: int) -> DataFrame:
    """Per user: the recent positive items (most recent first), their event types (``history_types``),
    every item seen (any event type) and the ``USER_FEATURES`` of all the positive events."""
    require_columns(interactions_df, ["user_id", "item_id", "event_ts", "event_id", "weight"], "to_user_histories")
    recent = Window.partitionBy("user_id").orderBy(*history_order())
    history = (
        _with_event_type(interactions_df.where(F.col("weight") > 0))
        .withColumn("n", F.row_number().over(recent))
        .where(F.col("n") <= history_length)
        .groupBy("user_id")
        .agg(F.sort_array(F.collect_list(F.struct("n", "item_id", "event_type"))).alias("h"))
        .select("user_id", F.col("h.item_id").alias("history"), F.col("h.event_type").alias("history_types"))
    )
    stats = (
        interactions_df.where(F.col("weight") > 0)
        .groupBy("user_id")
        .agg(user_features(F.count(F.lit(1)), F.min("event_ts"), F.max("event_ts")).alias("user_features"))
    )
    seen = interactions_df.groupBy("user_id").agg(F.collect_set("item_id").alias("seen"))
    empty = F.array().cast("array<string>")
    none = F.array(*[F.lit(0.0)] * len(USER_FEATURES))
    return (
        seen.join(history, "user_id", "left")
        .join(stats, "user_id", "left")
        .select(
            "user_id",
            F.coalesce("history", empty).alias("history"),
            "seen",
            F.coalesce("history_types", empty).alias("history_types"),
            F.coalesce("user_features", none).alias("user_features"),
        )
    )


def active_users(interactions_df: DataFrame, last_day: str, active_days: int) -> DataFrame:
    """Users with an interaction in the ``active_days`` days up to ``last_day``."""
    recent = filter_until(interactions_df, last_day, active_days)
    return recent.select("user_id").distinct()


def encode_examples(examples_df: DataFrame, vocab_df: DataFrame, encoding: UserEncoding) -> DataFrame:
    """Training examples as the towers read them: ``target`` (the item's vocabulary index) and the user
    before it, encoded by ``encoding.encode_users`` as every serving path encodes a user: ``history``
    [L] (vocabulary indices, 0-padded), ``history_types`` [L] (codes in ``encoding.event_types``) and,
    when the encoding reads them, ``user_features``.

    Item ids map to indices by joins, not map lookups: looking an id up in a Spark map column scans
    the map, which is quadratic in the vocabulary over a whole training set. Rows come out in
    ``event_id`` order, so the same interactions always give the same training file.
    """
    require_columns(examples_df, ["event_id", "item_id", "history"], "encode_examples")
    require_columns(vocab_df, ["item_id", "idx"], "encode_examples vocabulary")
    if "history_types" not in examples_df.columns:
        examples_df = examples_df.withColumn("history_types", F.transform("history", lambda _: F.lit("")))
    with_features = bool(encoding.user_features)
    if with_features:
        require_columns(examples_df, ["user_features"], "encode_examples")
    carried = ["user_features"] if with_features else []
    targets = (
        examples_df.select("event_id", "item_id", *carried)
        .join(vocab_df, "item_id")
        .select("event_id", F.col("idx").alias("target"), *carried)
    )
    history = positions_to_ids(
        examples_df, "event_id", "history", vocab_df.withColumnRenamed("idx", "id"), parallel="history_types"
    )
    schema = "target long, history array<long>, history_types array<long>" + (
        ", user_features array<float>" if with_features else ""
    )

    def encode(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in frames:
            users = encode_users(
                list(frame["history"]),
                list(frame["history_types"]),
                list(frame["user_features"]) if with_features else None,
                encoding,
            )
            out = {"target": frame["target"].astype("int64"), "history": list(users.items),
                   "history_types": list(users.types)}  # fmt: skip
            if users.features is not None:
                out["user_features"] = list(users.features)
            yield pd.DataFrame(out)

    return (
        targets.join(history, "event_id")
        .orderBy("event_id")
        .select("target", "history", "history_types", *carried)
        .mapInPandas(encode, schema)
    )


def positions_to_ids(
    df: DataFrame, key: str, column: str, index_df: DataFrame, parallel: str | None = None
) -> DataFrame:
    """``key``, ``column``: the array of item ids in ``column`` mapped through ``index_df``
    (``item_id``, ``id``), order kept, unknown ids dropped; rows with an empty or null array get an
    empty one. ``parallel``: an array column of ``df`` beside ``column`` (one entry per item) that
    keeps step with it (its entries of dropped items dropped too). ``key`` must be unique in ``df``."""
    if parallel is None:
        exploded = df.select(key, F.posexplode(column).alias("pos", "item_id"))
        carried = [F.lit(None).alias("_par")]
    else:
        zipped = F.arrays_zip(F.col(column).alias("a"), F.col(parallel).alias("b"))
        exploded = df.select(key, F.posexplode(zipped).alias("pos", "_z")).select(
            key, "pos", F.col("_z.a").alias("item_id"), F.col("_z.b").alias("_par")
        )
        carried = [F.col("_par")]
    exploded = exploded.select(key, "pos", "item_id", *carried).join(index_df, "item_id")
    mapped = exploded.groupBy(key).agg(F.sort_array(F.collect_list(F.struct("pos", "id", "_par"))).alias("_p"))
    empty = F.array().cast(T.ArrayType(index_df.schema["id"].dataType))
    out = df.select(key).join(mapped, key, "left")
    columns: list[Column | str] = [key, F.coalesce(F.col("_p.id"), empty).alias(column)]
    if parallel is not None:
        columns.append(F.coalesce(F.col("_p._par"), F.array().cast(df.schema[parallel].dataType)).alias(parallel))
    return out.select(*columns)


def ranking_split(interactions_df: DataFrame, mode: str, fraction: float, seed: int) -> DataFrame:
    """The positive events of each user marked ``is_label``: the training lists of the ranker learn to
    put the labels first, from what the rest (the context) shows.

    ``latest``: the user's latest ``fraction`` of positive events (what the user did next; users with
    fewer than two give no label); ``random``: a seeded random ``fraction`` of the user's items (every
    event of a chosen item), for protocols that hold out random interactions.

    Returns:
        ``user_id, item_id, event_ts, event_id, event_type, is_label``.
    """
    require_columns(interactions_df, ["user_id", "item_id", "event_ts", "event_id", "weight"], "ranking_split")
    if mode not in LABEL_MODES:
        raise ValueError(f"train.ranker.labels must be one of {', '.join(LABEL_MODES)}, got {mode!r}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"train.ranker.label_fraction must be between 0 and 1, got {fraction}")
    positives = _with_event_type(interactions_df.where(F.col("weight") > 0)).select(
        "user_id", "item_id", "event_ts", "event_id", "event_type"
    )
    if mode == "random":
        draw = F.pmod(F.xxhash64("user_id", "item_id", F.lit(int(seed))), F.lit(1_000_000)) / F.lit(1_000_000.0)
        return positives.withColumn("is_label", draw < F.lit(float(fraction)))
    order = Window.partitionBy("user_id").orderBy("event_ts", "event_id")
    count = F.count(F.lit(1)).over(Window.partitionBy("user_id"))
    return (
        positives.withColumn("_n", F.row_number().over(order))
        .withColumn("is_label", F.col("_n") > F.ceil(count * F.lit(1.0 - float(fraction))))
        .drop("_n")
    )
