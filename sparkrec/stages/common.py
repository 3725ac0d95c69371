"""What every stage shares: the run date check and the stage's rows of ``run_metrics``."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import SparkSession

from sparkrec import tables
from sparkrec.config import Config
from sparkrec.errors import UserError
from sparkrec.landing import DATE_RE
from sparkrec.schemas import RUN_METRICS, RUN_METRICS_SCHEMA

# (ds, metric, value, source): one row of run_metrics; source None is the run's total.
MetricRow = tuple[str, str, float, str | None]


def check_date(day: str) -> str:
    """``day`` when it is a real YYYY-MM-DD date, else ValueError."""
    if not DATE_RE.match(day or ""):
        raise UserError(f"date must be YYYY-MM-DD, got {day!r}")
    try:
        dt.date.fromisoformat(day)
    except ValueError as err:
        raise UserError(f"date must be YYYY-MM-DD, got {day!r}: {err}") from err
    return day


def write_run_metrics(
    spark: SparkSession, config: Config, stage: str, run_id: str, days: list[str], rows: list[MetricRow]
) -> None:
    """Replace this stage's rows of ``run_metrics`` for the given days."""
    data = [
        (dt.date.fromisoformat(ds), run_id, stage, metric, float(value), source) for ds, metric, value, source in rows
    ]
    df = spark.createDataFrame(data, RUN_METRICS_SCHEMA)
    where = f"{tables.in_days(days)} AND stage = '{stage}'"
    tables.replace_partitions(df, config, RUN_METRICS, where)
