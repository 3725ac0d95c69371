"""Ranking metrics computed in Spark, with their exact definitions.

For a user u with recommendations r_1..r_k (rank order) and relevant test items R_u:

- ``precision@k`` = |{r_i in R_u}| / k
- ``recall@k``    = |{r_i in R_u}| / |R_u|
- ``ndcg@k``      = DCG / IDCG with binary relevance: DCG = sum over hits of 1 / log2(rank + 1),
  IDCG = sum_{i=1}^{min(k, |R_u|)} 1 / log2(i + 1)

Each is averaged over the users present both in the test set and in the recommendations.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkrec.schemas import require_columns


def ranking_metrics(recs_df: DataFrame, truth_df: DataFrame, k: int) -> dict[str, float]:
    """Mean precision@k, recall@k and ndcg@k, plus the number of users evaluated.

    Args:
        recs_df: ``user_id``, ``rank`` (1 = best), ``item_id``; ranks above k are ignored.
        truth_df: ``user_id``, ``item_id``: the relevant test items (duplicates ignored).
    """
    require_columns(recs_df, ["user_id", "rank", "item_id"], "ranking_metrics recommendations")
    require_columns(truth_df, ["user_id", "item_id"], "ranking_metrics truth")
    truth = truth_df.select("user_id", "item_id").distinct()
    relevant = truth.groupBy("user_id").agg(F.count(F.lit(1)).alias("n_relevant"))
    recs = recs_df.where(F.col("rank") <= k).select("user_id", "rank", "item_id")
    hits = recs.join(truth.withColumn("hit", F.lit(1)), ["user_id", "item_id"], "left")
    per_user = (
        hits.groupBy("user_id")
        .agg(
            F.count(F.col("hit")).alias("hits"),
            F.sum(F.when(F.col("hit") == 1, 1.0 / F.log2(F.col("rank") + 1)).otherwise(0.0)).alias("dcg"),
        )
        .join(relevant, "user_id")
    )
    ideal = F.aggregate(
        F.sequence(F.lit(1), F.least(F.lit(k), F.col("n_relevant"))),
        F.lit(0.0),
        lambda acc, i: acc + 1.0 / F.log2(i + 1),
    )
    row = per_user.agg(
        F.avg(F.col("hits") / F.lit(k)).alias("precision"),
        F.avg(F.col("hits") / F.col("n_relevant")).alias("recall"),
        F.avg(F.col("dcg") / ideal).alias("ndcg"),
        F.count(F.lit(1)).alias("users"),
    ).first()
    users = int(row["users"]) if row else 0
    if not users:
        return {f"precision@{k}": 0.0, f"recall@{k}": 0.0, f"ndcg@{k}": 0.0, "users": 0.0}
    return {
        f"precision@{k}": float(row["precision"]),
        f"recall@{k}": float(row["recall"]),
        f"ndcg@{k}": float(row["ndcg"]),
        "users": float(users),
    }
