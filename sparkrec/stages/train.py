"""The train stage: the two-tower model and its ranker on the interactions before the held-out days."""

from __future__ import annotations

from typing import Any

from pyspark.sql import SparkSession

from sparkrec import features, tables
from sparkrec.config import Config
from sparkrec.schemas import INTERACTIONS, ITEM_EMBEDDINGS
from sparkrec.stages.common import check_date, write_run_metrics
from sparkrec.tracking import report_counts, stage_run
from sparkrec.trainer import fit_two_tower


def run_train(spark: SparkSession, config: Config, day: str) -> dict[str, Any]:
    """Train through TorchDistributor on the interactions up to ``evaluate.holdout_days`` before
    ``day`` (within ``train.window_days``), register the model and point the candidate alias at it."""
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
