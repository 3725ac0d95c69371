"""Offline evaluation shared by the nightly ``evaluate`` stage and ``sparkrec experiment``.

Given a train part and a test part of the interactions, every model is scored the same way: the
users are those with training history and at least one relevant test item; relevant items are the
test part's positive events (ratings at or above ``min_rating`` when one is given) on items the user
had not interacted with in training; each model's top-k comes from ``scoring.top_k`` over the same
catalogue with the same masking; the metrics are ``metrics.ranking_metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkrec import features
from sparkrec.catalog import Catalog
from sparkrec.metrics import metric_curve, ranking_metrics
from sparkrec.models.scoring import Scorer, to_matrix_rows, top_k
from sparkrec.schemas import require_columns


def to_truth(train_df: DataFrame, test_df: DataFrame, min_rating: float | None = None) -> DataFrame:
    """Relevant (user_id, item_id) pairs of the test part that the user had not seen in training."""
    require_columns(test_df, ["user_id", "item_id", "weight", "event_type", "value"], "to_truth")
    relevant = test_df.where(F.col("weight") > 0)
    if min_rating is not None:
        relevant = relevant.where((F.col("event_type") != "rating") | (F.col("value") >= F.lit(float(min_rating))))
    seen = train_df.select("user_id", "item_id").distinct()
    return relevant.select("user_id", "item_id").distinct().join(seen, ["user_id", "item_id"], "left_anti")


def sample_users(truth_df: DataFrame, max_users: int, seed: int) -> DataFrame:
    """``truth_df`` restricted to a seeded sample of about ``max_users`` of its users (by a hash of the
    user id, so a re-run and every model see the same ones); all of them when ``max_users`` is 0 or
    no more than that many hold a relevant item."""
    if max_users <= 0:
        return truth_df
    users = truth_df.select("user_id").distinct().count()
    if users <= max_users:
        return truth_df
    draw = F.pmod(F.xxhash64("user_id", F.lit(int(seed))), F.lit(1_000_000))
    return truth_df.where(draw < F.lit(int(1_000_000 * max_users / users)))


def to_evaluation_users(train_df: DataFrame, truth_df: DataFrame, catalog: Catalog, history_length: int) -> DataFrame:
    """Users with training history and a relevant test item, as rows of the item matrix."""
    histories = features.to_user_histories(train_df, history_length).join(
        truth_df.select("user_id").distinct(), "user_id"
    )
    return to_matrix_rows(histories, catalog.index_df)


def score_models(
    users_df: DataFrame,
    truth_df: DataFrame,
    scorers: dict[str, Scorer],
    catalog: Catalog,
    k: int,
    longest: int,
    block_size: int,
    *,
    item_vectors: DataFrame | None = None,
    train_df: DataFrame | None = None,
    with_curves: bool = False,
) -> tuple[dict[str, dict[str, float]], dict[str, Curves]]:
    """Metrics at ``k`` of every scorer and, ``with_curves``, each one's ``Curves`` over its top
    ``longest``, all computed in Spark: only metrics and per-item counts come back to the driver."""
    results: dict[str, dict[str, float]] = {}
    curves: dict[str, Curves] = {}
    for name, scorer in scorers.items():
        recs = top_k(users_df, scorer, catalog.item_ids, catalog.eligible, longest, block_size).cache()
        results[name] = ranking_metrics(
            recs,
            truth_df,
            k,
            catalog_size=int(catalog.eligible.sum()),
            item_vectors=item_vectors,
            train_df=None if train_df is None else train_df.select("user_id", "item_id"),
        )
        if with_curves:
            top = recs.where(F.col("rank") <= k).groupBy("item_id").count().toArrow()  # not a Row an item
            held = dict(zip(top.column("item_id").to_pylist(), top.column("count").to_pylist(), strict=True))
            curves[name] = Curves(metric_curve(recs, truth_df, longest), held)
        recs.unpersist()
    return results, curves


@dataclass(frozen=True)
class Curves:
    """What a model's plots read: ``metrics.metric_curve`` at every cut-off, and how many lists hold
    each item in their top k."""

    at_k: pd.DataFrame  # k, precision, recall, ndcg, hit
    recommended: dict[str, int]  # item_id -> lists holding it in their top k
