"""Results people would rather see than read, drawn with matplotlib and logged to the active MLflow
run under ``plots/``: the training loss, the served scores, metric@k curves, the popularity of what
each model recommends, and the held-out metrics side by side."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: figures go to files

import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
from pyspark.sql import DataFrame  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from sparkrec.evaluation import Curves  # noqa: E402


def log_loss_curve(
    losses: list[float], val_losses: list[float] | None = None, rank_losses: list[float] | None = None
) -> None:
    """Training (and validation, ranking) loss per epoch: ``plots/loss.png``."""
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


def score_histogram(recs_df: DataFrame, bins: int = 50) -> tuple[np.ndarray, dict[bool, np.ndarray]]:
    """The day's scores in ``bins`` equal bins over their range, counted in Spark (every row, and only
    the counts reach the driver): the bin edges [bins + 1] and, for model rows (False) and fallback
    rows (True), the rows in each bin [bins]. The last bin holds its right edge, as numpy's."""
    fallback = F.coalesce(F.col("reason").startswith("fallback:"), F.lit(False))
    scored = recs_df.select(F.col("score").cast("double").alias("score"), fallback.alias("fallback")).where(
        F.col("score").isNotNull() & ~F.isnan("score")
    )
    low, high = scored.agg(F.min("score"), F.max("score")).collect()[0]  # one row, nulls when none
    if low is None:
        return np.zeros(bins + 1), {False: np.zeros(bins, np.int64), True: np.zeros(bins, np.int64)}
    if high == low:
        low, high = low - 0.5, high + 0.5  # one value: a unit range around it, as numpy's
    width = (high - low) / bins
    index = F.least(F.floor((F.col("score") - F.lit(low)) / F.lit(width)).cast("int"), F.lit(bins - 1))
    counted = scored.groupBy("fallback", index.alias("bin")).count().toArrow()  # at most 2 x bins rows
    counts = {flag: np.zeros(bins, np.int64) for flag in (False, True)}
    for flag, row, n in zip(*(counted.column(c).to_pylist() for c in ("fallback", "bin", "count")), strict=True):
        counts[flag][row] = n
    return np.linspace(low, high, bins + 1), counts


def log_score_distribution(recs_df: DataFrame) -> None:
    """Histogram of the day's scores, model rows and fallback rows apart, to MLflow."""
    edges, counts = score_histogram(recs_df)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for fallback, label in ((False, "model"), (True, "popularity fallback")):
        if counts[fallback].sum():
            ax.stairs(counts[fallback], edges, fill=True, alpha=0.7, label=f"{label} ({counts[fallback].sum()} rows)")
    ax.set_xlabel("score")
    ax.set_ylabel("rows")
    ax.set_title("recommendation scores")
    ax.legend()
    fig.tight_layout()
    mlflow.log_figure(fig, "plots/score_distribution.png")
    plt.close(fig)


def log_metrics_at_k(curves: dict[str, Curves], k: int, popularity: dict[str, float]) -> None:
    """metric@k for every cut-off per model on one chart; popularity of the items each recommends
    (``popularity``: item -> training users holding it)."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for source, curves_ in curves.items():
        curve = curves_.at_k
        for ax, name in zip(axes, ("recall", "ndcg", "precision"), strict=True):
            ax.plot(curve["k"], curve[name], label=source)
            ax.set_title(f"{name}@k")
            ax.set_xlabel("k")
    axes[0].legend()
    fig.tight_layout()
    mlflow.log_figure(fig, "plots/metrics_at_k.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for source, curves_ in curves.items():
        items = list(curves_.recommended)
        held = np.array([popularity.get(item, 0.0) for item in items], dtype=float)
        lists = np.array([curves_.recommended[item] for item in items], dtype=float)
        ax.hist(np.log10(held + 1), bins=30, weights=lists, alpha=0.5, label=source)
    ax.set_xlabel("log10(1 + training users of the item)")
    ax.set_ylabel(f"recommended items (top {k})")
    ax.set_title("popularity of recommended items")
    ax.legend()
    fig.tight_layout()
    mlflow.log_figure(fig, "plots/recommended_popularity.png")
    plt.close(fig)


def log_metric_bars(results: dict[str, dict[str, Any]], k: int) -> None:
    """One bar per model and metric (users and novelty left out: other scales)."""
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
