"""The nightly run (every stage for one landing day) and the backfill (clean a range of days, then the
rest for the last), nested under one MLflow run."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import mlflow
from pyspark.sql import SparkSession

from sparkrec.config import Config
from sparkrec.errors import UserError
from sparkrec.landing import LandingMissingError, landing_days
from sparkrec.stages.clean import run_clean
from sparkrec.stages.common import check_date
from sparkrec.stages.embed import run_embed
from sparkrec.stages.evaluate import run_evaluate
from sparkrec.stages.recommend import run_recommend
from sparkrec.stages.train import run_train
from sparkrec.tracking import configure_mlflow


def run_nightly(spark: SparkSession, config: Config, day: str) -> dict[str, Any]:
    """clean → embed → train → evaluate (promotion gate) → recommend for one landing day."""
    return _run_all(spark, config, [day], day, "nightly")


def run_backfill(spark: SparkSession, config: Config, start: str, end: str) -> dict[str, Any]:
    """Clean every landing day in [start, end], then embed, train, evaluate and recommend for ``end``."""
    check_date(start)
    check_date(end)
    if start > end:
        raise UserError(f"--from {start} is after --to {end}")
    days = [d for d in landing_days(config, "events") if start <= d <= end]
    if not days:
        raise LandingMissingError(f"no landing days between {start} and {end} under {config.landing.root}/events/")
    return _run_all(spark, config, days, end, "backfill")


def _run_all(spark: SparkSession, config: Config, clean_days: list[str], day: str, name: str) -> dict[str, Any]:
    configure_mlflow(config)
    parent = mlflow.start_run(run_name=f"{name} {day}") if mlflow.active_run() is None else nullcontext()
    with parent:
        mlflow.set_tags({"sparkrec.stage": name, "sparkrec.date": day})
        out = {"clean": run_clean(spark, config, clean_days)}
        out["embed"] = run_embed(spark, config, day)
        out["train"] = run_train(spark, config, day)
        out["evaluate"] = run_evaluate(spark, config, day, out["train"]["model_version"])
        out["recommend"] = run_recommend(spark, config, day)
        return out
