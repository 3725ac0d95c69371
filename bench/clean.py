"""Clean-stage throughput: raw rows/s and peak memory on synthetic logs of 1M and 10M rows.

    .venv/bin/python bench/clean.py [--rows 1000000,10000000] [--output bench/results/clean.json]

For each size: generate one landing day with ``sparkrec.synthetic`` (default dirt rates) and its
20,000-item catalog, then time ``stages.run_clean`` on it: read + parse + classify (the known-item
join included) + dedupe + bot flag + the items MERGE + Delta writes of interactions, quarantine and
run_metrics, and the reconciliation. Peak memory is the largest
resident set of this process and its children (the Spark JVM) sampled every 0.2 s.

In the same run, a bare pass over the same files is timed as the peer: ``read.text`` ->
``from_json`` -> ``dropDuplicates`` -> Parquet, what Spark itself costs for the rows;
``ratio_vs_bare`` is the clean stage's rows/s over the bare pass's.

A third pass times the floor the interactions table's contract sets, with none of the stage's own
work: the same parse, timestamp formats and event ids (``sparkrec.clean``), one copy per event
(``dropDuplicates``: an arbitrary copy, no dearer than the stage's ordered one), and the same Delta
write (``tables.replace_partitions``, the table's properties and NOT NULL columns) into a scratch
lakehouse. No rules, drift keys, counts, bot flag, quarantine, items MERGE or MLflow.
``floor_ratio_vs_bare`` is ``ratio_vs_bare`` for that pass: the most the stage could reach on this
machine with its contract.
"""

from __future__ import annotations

import argparse
import functools
import json
import operator
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import PeakMemory, machine, scratch_config, write_report  # noqa: E402

from sparkrec import stages  # noqa: E402
from sparkrec.session import build_session  # noqa: E402
from sparkrec.synthetic import DirtRates, synthetic_events, synthetic_items, write_landing_day  # noqa: E402

DAY = "2024-06-01"
ITEMS = 20_000  # the generator's default catalogue


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,10000000", help="comma-separated sizes")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "clean.json"))
    parser.add_argument("--workdir", help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="sparkrec-bench-"))
    config = scratch_config(work)
    spark = build_session(config)
    results = []
    for rows in [int(r) for r in args.rows.split(",")]:
        start = time.perf_counter()
        write_landing_day(synthetic_events(spark, rows, DAY, dirt=DirtRates()), config.landing.root, DAY)
        write_landing_day(synthetic_items(spark, ITEMS, DAY), config.landing.root, DAY, kind="items")
        generate_s = time.perf_counter() - start
        with PeakMemory() as memory:
            start = time.perf_counter()
            out = stages.run_clean(spark, config, [DAY])
            clean_s = time.perf_counter() - start
        bare_s = bare_pass(spark, config.landing.root, work / "bare")
        floor_s = contract_floor(spark, config, scratch_config(work / "floor"))
        raw = int(out["raw_rows"])
        result = {
            "rows": rows,
            "raw_rows": raw,
            "clean_rows": int(out["clean_rows"]),
            "duplicate_rows": int(out["duplicate_rows"]),
            "quarantined_rows": int(out["quarantined_rows"]),
            "generate_s": round(generate_s, 1),
            "clean_s": round(clean_s, 1),
            "rows_per_s": round(raw / clean_s),
            "bare_s": round(bare_s, 1),
            "bare_rows_per_s": round(raw / bare_s),
            "ratio_vs_bare": round(bare_s / clean_s, 3),
            "floor_s": round(floor_s, 1),
            "floor_ratio_vs_bare": round(bare_s / floor_s, 3),
            "peak_rss_gib": round(memory.peak / 2**30, 2),
        }
        print(json.dumps(result), flush=True)
        results.append(result)
    report = {
        "benchmark": "clean stage on synthetic logs (sparkrec.synthetic default dirt rates)",
        "machine": machine(
            spark, driver_memory=config.spark.driver_memory, shuffle_partitions=config.spark.shuffle_partitions
        ),
        "results": results,
    }
    write_report(args.output, report)
    spark.stop()
    return 0


def bare_pass(spark, landing_root: str, output: Path) -> float:  # noqa: ANN001
    """Seconds Spark takes to parse, deduplicate and write the day's raw lines, and nothing more."""
    from pyspark.sql import functions as F

    from sparkrec.schemas import RAW_EVENT_SCHEMA

    start = time.perf_counter()
    lines = spark.read.text(f"{landing_root}/events/ds={DAY}")
    parsed = lines.select(F.from_json("value", RAW_EVENT_SCHEMA).alias("e")).select("e.*")
    parsed.dropDuplicates().write.mode("overwrite").parquet(str(output))
    return time.perf_counter() - start


def contract_floor(spark, config, floor_config) -> float:  # noqa: ANN001
    """Seconds the interactions contract alone costs: parse, event time, event id, one copy per event,
    the table's NOT NULL columns and the Delta write of the day; landing from ``config``, table under
    ``floor_config``."""
    from pyspark.sql import functions as F

    from sparkrec import clean, tables
    from sparkrec.landing import read_landing
    from sparkrec.schemas import INTERACTIONS, INTERACTIONS_SCHEMA, RAW_EVENT_SCHEMA, REQUIRED_EVENT_FIELDS

    start = time.perf_counter()
    lines = read_landing(spark, config, "events", [DAY], REQUIRED_EVENT_FIELDS)
    j = lines.select("source_file", "ds", F.from_json("value", RAW_EVENT_SCHEMA).alias("j"))
    fields = j.select(
        "source_file",
        "ds",
        F.lit(None).cast("string").alias("reason"),
        F.col("j.event_id").alias("given_event_id"),
        *[F.col(f"j.{name}").alias(name) for name in ("user_id", "item_id", "session_id", "linked_event_id")],
        F.lower("j.event_type").alias("event_type"),
        F.col("j.value").try_cast("double").alias("value"),
        clean.parse_timestamp(F.col("j.ts")).alias("event_ts"),
    )
    day = (
        clean.with_event_id(fields)
        .dropDuplicates(["ds", "event_id"])
        .withColumn("event_date", F.to_date("event_ts"))
        .withColumn("weight", F.lit(1.0))
        .withColumn("is_bot", F.lit(False))
    )
    # The table's NOT NULL columns are the only rule the floor keeps: the write refuses rows without them.
    required = [F.col(f.name).isNotNull() for f in INTERACTIONS_SCHEMA.fields if not f.nullable]
    day = day.where(functools.reduce(operator.and_, required))
    tables.ensure_contract(spark, floor_config, INTERACTIONS)
    tables.replace_partitions(day, floor_config, INTERACTIONS, tables.in_days([DAY]))
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
