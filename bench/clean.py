"""Clean-stage throughput: raw rows/s and peak memory on synthetic logs of 1M and 10M rows.

    .venv/bin/python bench/clean.py [--rows 1000000,10000000] [--output bench/results/clean.json]

For each size: generate one landing day with ``sparkrec.synthetic`` (default dirt rates) and its
20,000-item catalog, then time ``stages.run_clean`` on it: read + parse + classify (the known-item
join included) + dedupe + bot flag + the items MERGE + Delta writes of interactions, quarantine and
run_metrics, and the reconciliation. Peak memory is the largest
resident set of this process and its children (the Spark JVM) sampled every 0.2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sparkrec import stages  # noqa: E402
from sparkrec.config import load_config  # noqa: E402
from sparkrec.session import build_session  # noqa: E402
from sparkrec.synthetic import DirtRates, synthetic_events, synthetic_items, write_landing_day  # noqa: E402

DAY = "2024-06-01"
ITEMS = 20_000  # the generator's default catalogue


class PeakMemory:
    """Largest summed RSS of this process tree while the block runs."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        me = psutil.Process(os.getpid())
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(0.2)

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,10000000", help="comma-separated sizes")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "clean.json"))
    parser.add_argument("--workdir", help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="sparkrec-bench-"))
    config = load_config(None, [f"lakehouse.root={work / 'lakehouse'}", f"landing.root={work / 'landing'}",
                                f"mlflow.tracking_uri=sqlite:///{work / 'mlflow.db'}",
                                f"mlflow.artifact_location={work / 'mlartifacts'}", "spark.show_progress=false"])
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
        raw = int(out["raw_rows"])
        result = {
            "rows": rows, "raw_rows": raw, "clean_rows": int(out["clean_rows"]),
            "duplicate_rows": int(out["duplicate_rows"]), "quarantined_rows": int(out["quarantined_rows"]),
            "generate_s": round(generate_s, 1), "clean_s": round(clean_s, 1),
            "rows_per_s": round(raw / clean_s), "peak_rss_gib": round(memory.peak / 2**30, 2),
        }
        print(json.dumps(result), flush=True)
        results.append(result)
    report = {
        "benchmark": "clean stage on synthetic logs (sparkrec.synthetic default dirt rates)",
        "machine": {"cpus": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                    "python": platform.python_version(), "spark": spark.version,
                    "master": spark.sparkContext.master, "driver_memory": config.spark.driver_memory,
                    "shuffle_partitions": config.spark.shuffle_partitions},
        "results": results,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
