"""The clean stage: landing files of some days into ``interactions``, ``items`` and ``quarantine``."""

from __future__ import annotations

import logging
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from sparkrec import clean, tables
from sparkrec.config import Config
from sparkrec.landing import LandingMissingError, landing_days, read_landing
from sparkrec.schemas import INTERACTIONS, ITEMS, QUARANTINE, REQUIRED_EVENT_FIELDS, REQUIRED_ITEM_FIELDS
from sparkrec.stages.common import check_date, write_run_metrics
from sparkrec.tracking import log_metrics, report_counts, stage_run

log = logging.getLogger("sparkrec")


def run_clean(spark: SparkSession, config: Config, days: list[str]) -> dict[str, Any]:
    """Clean landing days into ``interactions``, ``items`` and ``quarantine``; replace those days.

    Raises:
        LandingMissingError: a requested day has no event files.
        clean.ReconciliationError: counts do not add up (nothing is written).
    """
    days = sorted({check_date(d) for d in days})
    present = set(landing_days(config, "events"))
    missing = [d for d in days if d not in present]
    if missing:
        raise LandingMissingError(
            f"no landing event files for {', '.join(missing)} under {config.landing.root}/events/ds=YYYY-MM-DD/"
        )
    label = days[0] if len(days) == 1 else f"{days[0]}..{days[-1]}"
    with stage_run(config, "clean", label) as run_id:
        item_days = [d for d in days if d in set(landing_days(config, "items"))]
        items = item_quarantine = None
        if item_days:
            items, item_quarantine = clean.clean_items(
                read_landing(spark, config, "items", item_days, REQUIRED_ITEM_FIELDS), config.clean
            )
        known_items = _known_items(spark, config, items)
        events = read_landing(spark, config, "events", days, REQUIRED_EVENT_FIELDS)
        result = clean.clean_events(events, config.clean, known_items)
        # Parse and classify once: the counts, interactions and quarantine all read this.
        result.persist()
        try:
            counts = [r.asDict() for r in result.counts.collect()]
            clean.reconcile(counts)
            _warn_unknown_fields(counts)
            totals = _totals(counts)
            rows = [(str(r["ds"]), r["metric"], r["value"], r["source"]) for r in counts]
            refused = clean.refusal(counts, days, config.clean)
            if refused:
                # The attempt stays inspectable; the days' interactions and quarantine stay as they were.
                write_run_metrics(spark, config, "clean_refused", run_id, days, rows)
                log_metrics(totals)
                raise clean.CleanRefusedError(_refused_message(spark, config, refused))
            quarantine = result.quarantine
            if item_quarantine is not None:
                quarantine = quarantine.unionByName(item_quarantine)
            in_days = tables.in_days(days)
            tables.ensure_contract(spark, config, INTERACTIONS)
            tables.replace_partitions(result.interactions, config, INTERACTIONS, in_days)
            tables.replace_partitions(quarantine, config, QUARANTINE, in_days)
            if items is not None:
                # Last: a write to the items table drops the cached rows, which read it (known items).
                newest_wins = "t.updated_at IS NULL OR s.updated_at >= t.updated_at"
                tables.merge_upsert(spark, items, config, ITEMS, ["item_id"], update_condition=newest_wins)
            write_run_metrics(spark, config, "clean", run_id, days, rows)
            log_metrics(totals)
            log.info("clean %s: %s", label, ", ".join(f"{k}={v:.0f}" for k, v in totals.items()))
            report_counts(run_id, **{k: totals.get(k, 0.0) for k in ("raw_rows", "clean_rows", "quarantined_rows")})
            return {"days": days, "run_id": run_id, **totals}
        finally:
            result.unpersist()


def _refused_message(spark: SparkSession, config: Config, refused: dict[str, str]) -> str:
    """One line per refused day: why, and what the day keeps."""
    kept = {day: 0 for day in refused}
    if tables.table_exists(spark, config, INTERACTIONS):
        day_rows = tables.read_table(spark, config, INTERACTIONS).where(tables.in_days(refused))
        counted = day_rows.groupBy("ds").count().collect()
        kept.update({str(r["ds"]): int(r["count"]) for r in counted})
    return "; ".join(
        f"clean {day}: {why}; nothing replaced (the day keeps its {kept[day]} rows; --allow-empty to replace)"
        for day, why in refused.items()
    )


def _known_items(spark: SparkSession, config: Config, day_items: DataFrame | None) -> DataFrame | None:
    """Item ids of the catalog (the items table and the days' catalog files); None when there is none."""
    frames = [day_items.select("item_id")] if day_items is not None else []
    if tables.table_exists(spark, config, ITEMS):
        frames.append(tables.read_table(spark, config, ITEMS).select("item_id"))
    if not config.clean.require_known_items or not frames:
        return None
    return frames[0] if len(frames) == 1 else frames[0].unionByName(frames[1])


def _warn_unknown_fields(counts: list[dict[str, Any]]) -> None:
    """Schema drift: fields outside the landing contract are dropped; say so, per file."""
    for row in counts:
        if str(row["metric"]).startswith("unknown_field.") and row["source"] is not None:
            log.warning(
                "clean %s: %s carries field %r outside the landing contract in %d rows; dropped "
                "(run_metrics metric %s)",
                row["ds"],
                row["source"],
                row["metric"].split(".", 1)[1],
                row["value"],
                row["metric"],
            )


def _totals(counts: list[dict[str, Any]]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for row in counts:
        if row["source"] is None:
            totals[row["metric"]] = totals.get(row["metric"], 0.0) + float(row["value"])
    return dict(sorted(totals.items()))
