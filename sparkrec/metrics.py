"""Ranking metrics computed in Spark, with their exact definitions.

For a user u with recommendations r_1..r_k (rank order, ranks above k ignored) and relevant test items
R_u, with hit_i = 1 when r_i is in R_u:

- ``precision@k`` = sum_i hit_i / k
- ``recall@k``    = sum_i hit_i / |R_u|
- ``ndcg@k``      = DCG / IDCG, binary relevance: DCG = sum_i hit_i / log2(i + 1),
  IDCG = sum_{i=1}^{min(k, |R_u|)} 1 / log2(i + 1)
- ``map``         = sum_i hit_i * (hits in r_1..r_i) / i, divided by |R_u| (the Microsoft
  Recommenders definition)
- ``map@k``       = the same sum divided by min(k, |R_u|)
- ``mrr@k``       = 1 / (rank of the first hit), 0 without a hit
- ``hit@k``       = 1 when any r_i is relevant, else 0

Each of these is averaged over the users present both in the test set and in the recommendations.
Over the whole list of recommendations (all users):

- ``coverage@k``  = distinct recommended items / ``catalog_size``
- ``diversity@k`` = intra-list diversity: per user, the mean over pairs of recommended items of the
  cosine distance 1 - cos(v_a, v_b) of their item vectors, averaged over users with two or more vectors
  (pairs with a zero vector, an item without text, are left out)
- ``novelty@k``   = mean over users of the mean of -log2(p_i) over their recommended items, where
  p_i = (training users who interacted with i) / (training users); an item no training user touched
  counts as p_i = 1 / (training users + 1)
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from sparkrec.schemas import require_columns


def ranking_metrics(
    recs_df: DataFrame,
    truth_df: DataFrame,
    k: int,
    *,
    catalog_size: int | None = None,
    item_vectors: DataFrame | None = None,
    train_df: DataFrame | None = None,
) -> dict[str, float]:
    """The metrics of the module docstring, plus ``users`` (how many users were averaged).

    Args:
        recs_df: ``user_id``, ``rank`` (1 = best), ``item_id``.
        truth_df: ``user_id``, ``item_id``: the relevant test items (duplicates ignored).
        k: cut-off.
        catalog_size: items that could have been recommended; adds ``coverage@k``.
        item_vectors: ``item_id``, ``embedding`` (array of floats); adds ``diversity@k``.
        train_df: ``user_id``, ``item_id`` of the training interactions; adds ``novelty@k``.
    """
    require_columns(recs_df, ["user_id", "rank", "item_id"], "ranking_metrics recommendations")
    require_columns(truth_df, ["user_id", "item_id"], "ranking_metrics truth")
    recs = recs_df.where(F.col("rank") <= k).select("user_id", "rank", "item_id")
    out = _accuracy(recs, truth_df.select("user_id", "item_id").distinct(), k)
    if catalog_size:
        distinct = recs.select("item_id").distinct().count()
        out[f"coverage@{k}"] = distinct / catalog_size
    if item_vectors is not None:
        out[f"diversity@{k}"] = intra_list_diversity(recs, item_vectors)
    if train_df is not None:
        out[f"novelty@{k}"] = novelty(recs, train_df)
    return out


def _accuracy(recs: DataFrame, truth: DataFrame, k: int) -> dict[str, float]:
    relevant = truth.groupBy("user_id").agg(F.count(F.lit(1)).alias("n_relevant"))
    by_rank = Window.partitionBy("user_id").orderBy("rank").rowsBetween(Window.unboundedPreceding, 0)
    hits = (
        recs.join(truth.withColumn("hit", F.lit(1)), ["user_id", "item_id"], "left")
        .withColumn("hit", F.coalesce("hit", F.lit(0)))
        .withColumn("hits_so_far", F.sum("hit").over(by_rank))
    )
    per_user = (
        hits.groupBy("user_id")
        .agg(
            F.sum("hit").alias("hits"),
            F.sum(F.col("hit") / F.log2(F.col("rank") + 1)).alias("dcg"),
            F.sum(F.col("hit") * F.col("hits_so_far") / F.col("rank")).alias("ap_sum"),
            F.min(F.when(F.col("hit") == 1, F.col("rank"))).alias("first_hit"),
        )
        .join(relevant, "user_id")
    )
    ideal_hits = F.least(F.lit(k), F.col("n_relevant"))
    idcg = _ideal_dcg(ideal_hits)
    row = per_user.agg(
        F.avg(F.col("hits") / F.lit(k)).alias("precision"),
        F.avg(F.col("hits") / F.col("n_relevant")).alias("recall"),
        F.avg(F.col("dcg") / idcg).alias("ndcg"),
        F.avg(F.col("ap_sum") / F.col("n_relevant")).alias("map"),
        F.avg(F.col("ap_sum") / ideal_hits).alias("map_k"),
        F.avg(F.coalesce(1.0 / F.col("first_hit"), F.lit(0.0))).alias("mrr"),
        F.avg(F.when(F.col("hits") > 0, 1.0).otherwise(0.0)).alias("hit"),
        F.count(F.lit(1)).alias("users"),
    ).first()
    users = int(row["users"]) if row is not None else 0
    names = {
        "precision": f"precision@{k}",
        "recall": f"recall@{k}",
        "ndcg": f"ndcg@{k}",
        "map": "map",
        "map_k": f"map@{k}",
        "mrr": f"mrr@{k}",
        "hit": f"hit@{k}",
    }
    values = {name: (float(row[col]) if row is not None and users else 0.0) for col, name in names.items()}
    return {**values, "users": float(users)}


def intra_list_diversity(recs: DataFrame, item_vectors: DataFrame) -> float:
    """Mean pairwise cosine distance of each user's recommended items, averaged over users.

    Per user, with u_i the unit vectors of the n listed items that have one, the pairs' cosines sum to
    (|sum u_i|^2 - n) / 2, so a list costs n vectors, not n^2 pairs. An item without text (a zero
    vector) has no direction, so its pairs are left out, and a user with fewer than two such items
    counts for nothing.

    All in Spark: the lists' rows are gathered by user, meet the vectors in a broadcast join (Spark's,
    so the driver's Python process never holds them) and are summed per user as the sorted rows
    stream through the workers; one number comes back.

    Args:
        item_vectors: ``item_id``, ``embedding`` (array of floats, one size).

    Raises:
        ValueError: the vectors differ in size (more than one text model?).
    """
    vectors = item_vectors.where(F.col("embedding").isNotNull()).select("item_id", "embedding")
    sizes = vectors.agg(F.countDistinct(F.size("embedding")).alias("n")).first()
    if sizes is not None and sizes["n"] > 1:
        raise ValueError("intra_list_diversity: the item vectors differ in size (more than one text model?)")
    listed = (
        recs.select("user_id", "item_id")
        .repartition("user_id")  # a user's rows in one partition ...
        .join(F.broadcast(vectors), "item_id")
        .sortWithinPartitions("user_id")  # ... one after another
        .select("user_id", "embedding")
    )
    row = listed.mapInPandas(_list_diversity, "d double").where(~F.isnan("d")).agg(F.avg("d")).first()
    return float(row[0]) if row and row[0] is not None else 0.0


def _list_diversity(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Each user's diversity (NaN: under two items with a direction) from rows sorted by user; a user's
    rows may span batches, so the last user of a batch is carried into the next."""
    user, total, n = None, np.zeros(0), 0
    for frame in frames:
        out = []
        if len(frame):
            listed = np.stack(frame["embedding"].to_numpy()).astype(np.float64)
            norms = np.sqrt(np.einsum("ij,ij->i", listed, listed))
            directed = norms > 0
            users = frame["user_id"].to_numpy()[directed]
            unit = listed[directed] / norms[directed, None]
            starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.zeros(0, np.int64)
            counts = np.diff(np.r_[starts, len(users)])
            sums = np.add.reduceat(unit, starts, axis=0) if len(users) else unit
            for who, vector, count in zip(users[starts], sums, counts, strict=True):
                if who == user:
                    total, n = total + vector, n + int(count)
                    continue
                if user is not None:
                    out.append(_diversity(total, n))
                user, total, n = who, vector, int(count)
        yield pd.DataFrame({"d": np.array(out, dtype=np.float64)})
    if user is not None:
        yield pd.DataFrame({"d": [_diversity(total, n)]})


def _diversity(total: np.ndarray, n: int) -> float:
    """1 - mean pairwise cosine of n unit vectors summing to ``total``."""
    return 1.0 - (total @ total - n) / (n * (n - 1)) if n >= 2 else math.nan


def novelty(recs: DataFrame, train_df: DataFrame) -> float:
    """Mean self-information -log2(p_i) of the recommended items, averaged per user then over users."""
    users = train_df.select("user_id").distinct().count()
    if not users:
        return 0.0
    share = train_df.groupBy("item_id").agg((F.countDistinct("user_id") / F.lit(users)).alias("p"))
    row = (
        recs.join(share, "item_id", "left")
        .withColumn("info", -F.log2(F.coalesce("p", F.lit(1.0 / (users + 1)))))
        .groupBy("user_id")
        .agg(F.avg("info").alias("u"))
        .agg(F.avg("u"))
        .first()
    )
    return float(row[0]) if row and row[0] is not None else 0.0


def _ideal_dcg(hits: Column) -> Column:
    """sum_{i=1}^{hits} 1 / log2(i + 1): the DCG of ``hits`` relevant items on top."""
    return F.aggregate(F.sequence(F.lit(1), hits), F.lit(0.0), lambda acc, i: acc + 1.0 / F.log2(i + 1))


def metric_curve(recs_df: DataFrame, truth_df: DataFrame, max_k: int) -> pd.DataFrame:
    """The accuracy metrics at every cut-off 1..``max_k``, computed in Spark (one small row per k comes
    back, never the lists): ``k``, ``precision``, ``recall``, ``ndcg``, ``hit``, averaged over the users
    present in both frames, each defined as in ``ranking_metrics``.

    Args:
        recs_df: ``user_id``, ``rank``, ``item_id``.
        truth_df: ``user_id``, ``item_id``.
    """
    require_columns(recs_df, ["user_id", "rank", "item_id"], "metric_curve recommendations")
    truth = truth_df.select("user_id", "item_id").distinct()
    relevant = truth.groupBy("user_id").agg(F.count(F.lit(1)).alias("n_relevant"))
    hits = (
        recs_df.where(F.col("rank") <= max_k)
        .select("user_id", "rank", "item_id")
        .join(truth.withColumn("hit", F.lit(1.0)), ["user_id", "item_id"])
        .select("user_id", F.col("rank").alias("k"), "hit")
    )
    # Every user listed at every cut-off 1..max_k (a list shorter than k keeps its last value), the
    # hits and DCG up to k as running sums over the cut-offs: one row per user and k, all in Spark.
    listed = recs_df.select("user_id").distinct().join(relevant, "user_id")
    cuts = listed.select("user_id", "n_relevant", F.explode(F.sequence(F.lit(1), F.lit(max_k))).alias("k"))
    upto = Window.partitionBy("user_id").orderBy("k").rowsBetween(Window.unboundedPreceding, Window.currentRow)
    ideal = F.array(*[F.lit(sum(1.0 / math.log2(i + 1) for i in range(1, j + 1))) for j in range(1, max_k + 1)])
    at_k = (
        cuts.join(hits, ["user_id", "k"], "left")
        .select(
            "k",
            "n_relevant",
            F.sum(F.coalesce("hit", F.lit(0.0))).over(upto).alias("hits"),
            F.sum(F.coalesce(F.col("hit") / F.log2(F.col("k") + 1), F.lit(0.0))).over(upto).alias("dcg"),
        )
        .withColumn("idcg", F.element_at(ideal, F.least(F.col("k"), F.col("n_relevant")).cast("int")))
    )
    curve = (
        at_k.groupBy("k")
        .agg(
            F.avg(F.col("hits") / F.col("k")).alias("precision"),
            F.avg(F.col("hits") / F.col("n_relevant")).alias("recall"),
            F.avg(F.col("dcg") / F.col("idcg")).alias("ndcg"),
            F.avg(F.when(F.col("hits") > 0, 1.0).otherwise(0.0)).alias("hit"),
        )
        .orderBy("k")
    )
    got = pd.DataFrame(curve.collect(), columns=["k", "precision", "recall", "ndcg", "hit"])
    if got.empty:  # no user in both frames
        return pd.DataFrame({"k": range(1, max_k + 1), "precision": 0.0, "recall": 0.0, "ndcg": 0.0, "hit": 0.0})
    return got
