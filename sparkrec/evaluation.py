"""Offline evaluation shared by the nightly ``evaluate`` stage and ``sparkrec experiment``.

Given a train part and a test part of the interactions, every model is scored the same way: the
users are those with training history and at least one relevant test item; relevant items are the
test part's positive events (ratings at or above ``min_rating`` when one is given) on items the user
had not interacted with in training; each model's top-k comes from ``scoring.top_k`` over the same
catalogue with the same masking; the metrics are ``metrics.ranking_metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkrec import features
from sparkrec.metrics import metric_curve, ranking_metrics
from sparkrec.models.scoring import Scorer, to_matrix_rows, top_k
from sparkrec.schemas import require_columns


@dataclass(frozen=True)
class Catalog:
    """The item matrix every scorer works on: row i is ``item_ids[i]``."""

    item_ids: list[str]
    eligible: np.ndarray  # bool [n]: active and not out of stock
    index_df: DataFrame  # item_id, row
    categories: list[str | None] | None = None  # per row, when read from the items table
    prices: list[float | None] | None = None  # per row, when read from the items table
    has_in_stock: bool = True  # false: no item has an in_stock field (the rule is skipped)

    @property
    def size(self) -> int:
        return len(self.item_ids)


def to_truth(train_df: DataFrame, test_df: DataFrame, min_rating: float | None = None) -> DataFrame:
    """Relevant (user_id, item_id) pairs of the test part that the user had not seen in training."""
    require_columns(test_df, ["user_id", "item_id", "weight", "event_type", "value"], "to_truth")
    relevant = test_df.where(F.col("weight") > 0)
    if min_rating is not None:
        relevant = relevant.where((F.col("event_type") != "rating") | (F.col("value") >= F.lit(float(min_rating))))
    seen = train_df.select("user_id", "item_id").distinct()
    return relevant.select("user_id", "item_id").distinct().join(seen, ["user_id", "item_id"], "left_anti")


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
    item_vectors_df: DataFrame | None = None,
    train_df: DataFrame | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, pd.DataFrame]]:
    """Metrics at ``k`` of every scorer, and each one's top-``longest`` lists (for the curves)."""
    results: dict[str, dict[str, float]] = {}
    lists: dict[str, pd.DataFrame] = {}
    for name, scorer in scorers.items():
        recs = top_k(users_df, scorer, catalog.item_ids, catalog.eligible, longest, block_size).cache()
        results[name] = ranking_metrics(
            recs,
            truth_df,
            k,
            catalog_size=int(catalog.eligible.sum()),
            item_vectors_df=item_vectors_df,
            train_df=None if train_df is None else train_df.select("user_id", "item_id"),
        )
        lists[name] = recs.select("user_id", "rank", "item_id").toPandas()
        recs.unpersist()
    return results, lists


def log_evaluation_plots(
    lists: dict[str, pd.DataFrame], truth: pd.DataFrame, longest: int, k: int, popularity: dict[str, float]
) -> None:
    """metric@k for k = 1..longest per model on one chart; popularity of the items each recommends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for source, recs in lists.items():
        curve = metric_curve(recs, truth, longest)
        for ax, name in zip(axes, ("recall", "ndcg", "precision"), strict=True):
            ax.plot(curve["k"], curve[name], label=source)
            ax.set_title(f"{name}@k")
            ax.set_xlabel("k")
    axes[0].legend()
    fig.tight_layout()
    mlflow.log_figure(fig, "plots/metrics_at_k.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for source, recs in lists.items():
        counts = recs[recs["rank"] <= k]["item_id"].map(popularity).fillna(0).to_numpy()
        ax.hist(np.log10(counts + 1), bins=30, alpha=0.5, label=source)
    ax.set_xlabel("log10(1 + training users of the item)")
    ax.set_ylabel(f"recommended items (top {k})")
    ax.set_title("popularity of recommended items")
    ax.legend()
    fig.tight_layout()
    mlflow.log_figure(fig, "plots/recommended_popularity.png")
    plt.close(fig)


def log_metric_bars(results: dict[str, dict[str, Any]], k: int) -> None:
    """One bar per model and metric (users and novelty left out: other scales)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    results = {source: metrics for source, metrics in results.items() if source != "served"}
    names = [
        m
        for m, v in next(iter(results.values())).items()
        if m != "users"
        and not m.startswith("novelty")
        and not m.endswith("_std")
        and isinstance(v, float)
        and not m.endswith("_s")
    ]
    fig, ax = plt.subplots(figsize=(9, 3))
    width = 0.8 / len(results)
    for j, (source, metrics) in enumerate(results.items()):
        ax.bar([i + j * width for i in range(len(names))], [metrics.get(m, 0.0) for m in names], width, label=source)
    ax.set_xticks([i + width * (len(results) - 1) / 2 for i in range(len(names))], names)
    ax.set_title(f"held-out metrics @{k}")
    ax.legend()
    fig.tight_layout()
    mlflow.log_figure(fig, "plots/metrics.png")
    plt.close(fig)
