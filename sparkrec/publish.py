"""The publish gate: checks on a day's recommendations before they replace what is served.

The lists are computed and held (persisted) first; the checks read them; only when every check
passes is the day's partition of ``recommendations`` replaced. A failing gate raises
``PublishGateError`` — the table keeps the previous day's lists (``recommendations_latest`` still
shows them) and the run fails loudly, naming each failed check.

Checks (``recommend.gate``):

- ``row_change``: |rows - previous rows| / previous rows ≤ ``max_row_change``, against the latest
  earlier day in the table (skipped on the first day);
- ``user_coverage``: users with a list / the day's active users ≥ ``min_user_coverage``;
- ``scores``: no score is NaN or infinite;
- ``lists``: no list is empty, ranks run 1..n without gaps, and no item repeats within a list.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkrec.config import PublishGateConfig


class PublishGateError(RuntimeError):
    """The day's recommendations failed a publish check; the previous day stays served."""


@dataclass(frozen=True)
class GateResult:
    checks: dict[str, bool]
    values: dict[str, float]
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def list_stats(recs_df: DataFrame) -> dict[str, float]:
    """Row and user counts and the sanity counts the gate needs, in one pass over the lists."""
    per_user = recs_df.groupBy("user_id").agg(
        F.count(F.lit(1)).alias("n"),
        F.countDistinct("item_id").alias("items"),
        F.max("rank").alias("max_rank"),
        F.min("rank").alias("min_rank"),
        F.sum(
            (F.isnan("score") | F.col("score").isin(float("inf"), float("-inf")) | F.col("score").isNull()).cast("int")
        ).alias("bad_scores"),
    )
    row = per_user.agg(
        F.coalesce(F.sum("n"), F.lit(0)).alias("rows"),
        F.count(F.lit(1)).alias("users"),
        F.coalesce(F.sum("bad_scores"), F.lit(0)).alias("bad_scores"),
        F.sum(
            ((F.col("min_rank") != 1) | (F.col("max_rank") != F.col("n")) | (F.col("items") != F.col("n"))).cast("int")
        ).alias("broken_lists"),
    ).collect()[0]
    return {
        "rows": float(row["rows"]),
        "users": float(row["users"]),
        "bad_scores": float(row["bad_scores"]),
        "broken_lists": float(row["broken_lists"] or 0),
    }


def check(
    stats: dict[str, float], active_users: int, previous_rows: float | None, gate: PublishGateConfig
) -> GateResult:
    """The gate's verdict on ``list_stats`` of the day."""
    values = {
        "rows": stats["rows"],
        "users": stats["users"],
        "active_users": float(active_users),
        "user_coverage": stats["users"] / active_users if active_users else 1.0,
    }
    failures = []
    checks = {}
    if previous_rows:
        values["previous_rows"] = previous_rows
        values["row_change"] = abs(stats["rows"] - previous_rows) / previous_rows
        checks["row_change"] = values["row_change"] <= gate.max_row_change
        if not checks["row_change"]:
            failures.append(
                f"row count {stats['rows']:.0f} is {values['row_change']:.0%} away from the previous "
                f"day's {previous_rows:.0f} (recommend.gate.max_row_change={gate.max_row_change})"
            )
    checks["user_coverage"] = values["user_coverage"] >= gate.min_user_coverage
    if not checks["user_coverage"]:
        failures.append(
            f"{stats['users']:.0f} of {active_users} active users have a list "
            f"({values['user_coverage']:.1%}; recommend.gate.min_user_coverage={gate.min_user_coverage})"
        )
    checks["scores"] = stats["bad_scores"] == 0
    if not checks["scores"]:
        failures.append(f"{stats['bad_scores']:.0f} scores are NaN or infinite")
    checks["lists"] = stats["broken_lists"] == 0 and stats["users"] > 0
    if not checks["lists"]:
        failures.append(
            "no user has a list"
            if stats["users"] == 0
            else f"{stats['broken_lists']:.0f} lists have gaps in their ranks or repeated items"
        )
    return GateResult(checks, values, failures)
