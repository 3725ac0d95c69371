"""Train/test splits of interactions (Spark transforms).

- ``chrono``: the last ``holdout_days`` days up to ``last_day`` are the test part (what the nightly
  job does).
- ``stratified-by-item``: within each item, a seeded random ``ratio`` of its interactions (rounded
  up) to train, the rest to test — the protocol of the Microsoft Recommenders MovieLens benchmark.
- ``random-by-user``: the same within each user.
- ``cold-items``: a seeded random ``1 - ratio`` share of the items is held out whole: every interaction
  with them is in the test part, none in train (items a model has never seen, scored from their text
  and attributes).

The random order is a hash of the seed and the ``event_id``: the same seed gives the same split on any
cluster, whatever the partitioning.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from sparkrec.features import day_offset, filter_until
from sparkrec.schemas import require_columns

PROTOCOLS = ("chrono", "stratified-by-item", "random-by-user", "cold-items")


def chrono_split(interactions_df: DataFrame, last_day: str, holdout_days: int) -> tuple[DataFrame, DataFrame]:
    """(events up to ``last_day - holdout_days``, events of the held-out days up to ``last_day``)."""
    cutoff = day_offset(last_day, -holdout_days)
    train = filter_until(interactions_df, cutoff)
    test = filter_until(interactions_df, last_day).where(F.col("event_date") > F.to_date(F.lit(cutoff)))
    return train, test


def stratified_split(interactions_df: DataFrame, by: str, ratio: float, seed: int) -> tuple[DataFrame, DataFrame]:
    """Within each value of ``by``, ceil(ratio * n) of its rows to train, chosen by a seeded hash."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"split ratio must be between 0 and 1, got {ratio}")
    require_columns(interactions_df, [by, "event_id"], "stratified_split")
    order = Window.partitionBy(by).orderBy(F.xxhash64(F.lit(seed), "event_id"), "event_id")
    ranked = interactions_df.withColumn("_r", F.row_number().over(order)).withColumn(
        "_n", F.count(F.lit(1)).over(Window.partitionBy(by))
    )
    in_train = (F.col("_r") - 1) < F.lit(ratio) * F.col("_n")
    ranked = ranked.withColumn("_train", in_train)
    columns = interactions_df.columns
    return ranked.where("_train").select(columns), ranked.where(~F.col("_train")).select(columns)


def cold_item_split(interactions_df: DataFrame, ratio: float, seed: int) -> tuple[DataFrame, DataFrame]:
    """(interactions with the warm items, interactions with the held-out items); an item is held out
    when a seeded hash of its id falls in the top ``1 - ratio`` of the range."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"split ratio must be between 0 and 1, got {ratio}")
    require_columns(interactions_df, ["item_id"], "cold_item_split")
    warm = F.pmod(F.xxhash64(F.lit(seed), "item_id"), F.lit(1_000_000)) < F.lit(int(ratio * 1_000_000))
    return interactions_df.where(warm), interactions_df.where(~warm)


def split(
    interactions_df: DataFrame,
    protocol: str,
    *,
    last_day: str | None = None,
    holdout_days: int = 7,
    ratio: float = 0.75,
    seed: int = 42,
) -> tuple[DataFrame, DataFrame]:
    """Dispatch to one of ``PROTOCOLS``."""
    if protocol == "chrono":
        if not last_day:
            raise ValueError("the chrono split needs last_day")
        return chrono_split(interactions_df, last_day, holdout_days)
    if protocol == "stratified-by-item":
        return stratified_split(interactions_df, "item_id", ratio, seed)
    if protocol == "random-by-user":
        return stratified_split(interactions_df, "user_id", ratio, seed)
    if protocol == "cold-items":
        return cold_item_split(interactions_df, ratio, seed)
    raise ValueError(f"unknown split {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
