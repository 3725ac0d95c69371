"""What a person reads after a run: rows per table, the day's evaluation, a query to try, the MLflow UI."""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sparkrec import tables
from sparkrec.config import Config
from sparkrec.schemas import INTERACTIONS, ITEM_EMBEDDINGS, ITEMS, QUARANTINE, RECOMMENDATIONS, RUN_METRICS

SOURCES = ("two_tower", "champion", "popularity", "served")


def summary(spark: SparkSession, config: Config, day: str) -> str:
    """The summary of ``day`` as text."""
    db = config.catalog.namespace
    lines = [f"sparkrec summary for {day}", "", "Delta tables (rows) under " + config.lakehouse.root]
    for table in (INTERACTIONS, QUARANTINE, ITEMS, ITEM_EMBEDDINGS, RECOMMENDATIONS, RUN_METRICS):
        if tables.table_exists(spark, config, table):
            n = tables.read_table(spark, config, table).count()
            lines.append(f"  {db}.{table:<16} {n:>8}")
    if tables.table_exists(spark, config, RUN_METRICS):
        lines += _evaluation_lines(spark, config, day)
    query = f"SELECT user_id, rank, item_id, score FROM {db}.recommendations WHERE ds = DATE'{day}'"
    lines += [
        "",
        "Try SQL:",
        f'  .venv/bin/sparkrec sql "{query} ORDER BY user_id, rank LIMIT 20"',
        "",
        "MLflow UI:",
        f"  .venv/bin/mlflow ui --backend-store-uri {config.mlflow.tracking_uri}   # then open http://127.0.0.1:5000",
    ]
    return "\n".join(lines)


def _evaluation_lines(spark: SparkSession, config: Config, day: str) -> list[str]:
    """The evaluate stage's metrics of ``day``, one row per metric and a column per model; the gate's verdict."""
    metrics = (
        tables.read_table(spark, config, RUN_METRICS)
        .where((F.col("ds") == F.to_date(F.lit(day))) & (F.col("stage") == "evaluate") & (F.col("metric") != "users"))
        .orderBy("source", "metric")
        .collect()
    )
    if not metrics:
        return []
    sources = [s for s in SOURCES if any(r["source"] == s for r in metrics)]
    table = {(r["metric"], r["source"]): r["value"] for r in metrics}
    names = sorted({r["metric"] for r in metrics if r["source"] in sources})
    lines = ["", f"Evaluation (last {config.evaluate.holdout_days} days held out; two_tower = the new model)"]
    lines.append(f"  {'metric':<16}" + "".join(f"{s:>12}" for s in sources))
    for name in names:
        cells = "".join(f"{table[(name, s)]:>12.4f}" if (name, s) in table else f"{'':>12}" for s in sources)
        lines.append(f"  {name:<16}{cells}")
    promoted = table.get(("promoted", "gate"))
    if promoted is not None:
        lines.append(f"  promotion gate: {'promoted to champion' if promoted else 'not promoted (champion kept)'}")
    return lines
