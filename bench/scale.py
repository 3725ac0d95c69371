"""The steady-state nightly up a ladder of sizes: per-stage time, driver and JVM peak memory, rows.

    .venv/bin/python bench/scale.py [--rungs 1000000:100000:10000,3000000:300000:30000,...]
        [--days 14] [--set key=value ...] [--output bench/results/scale.json]

A rung is ``events:users:items``. Each rung runs in a process of its own (a fresh driver, so one
rung's memory never shows in the next), on a scratch lakehouse:

- set-up, not timed: ``days - 1`` days of synthetic events (``sparkrec.synthetic``, events / days a
  day, no dirt) and their catalogue, cleaned and embedded: the history a nightly finds;
- timed: the nightly of the last day, whose catalogue adds 1 % new items (embedded that night):
  clean, embed, train, evaluate and recommend, one after another as ``sparkrec nightly`` runs them.

Memory is sampled every 0.2 s over the timed nightly: ``driver_peak_gib`` is the RSS of the
driver's Python process, ``jvm_peak_gib`` the Spark JVM's (in local mode it also runs the
executors), ``workers_peak_gib`` the Python workers and training processes together. The report's
``driver_peak_ratio`` is the largest rung's ``driver_peak_gib`` over the smallest's, and
``per_event_cost_ratio`` the largest rung's nightly seconds per event over the smallest's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import PeakMemory, machine, scratch_config, write_report  # noqa: E402

START = "2024-06-01"
RUNGS = "1000000:100000:10000,3000000:300000:30000,10000000:1000000:100000"
STAGES = ("clean", "embed", "train", "evaluate", "recommend")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rungs", default=RUNGS, help="comma-separated events:users:items")
    parser.add_argument("--days", type=int, default=14, help="days the events are spread over")
    parser.add_argument("--set", action="append", default=[], dest="settings", help="config key=value")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "scale.json"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # events:users:items, run in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_rung(*_rung(args.one), args.days, args.settings)), flush=True)
        return 0
    rungs = []
    for rung in args.rungs.split(","):
        cmd = [sys.executable, __file__, "--one", rung, "--days", str(args.days)]
        cmd += [f"--set={s}" for s in args.settings]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(out.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"rung {rung} failed (exit {out.returncode})")
        rungs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rungs[-1]), flush=True)
    first, last = rungs[0], rungs[-1]
    report = {
        "benchmark": "steady-state nightly on synthetic events over a ladder of sizes",
        "days": args.days,
        "settings": args.settings,
        "machine": rungs[-1].pop("machine"),
        "rungs": [{k: v for k, v in r.items() if k != "machine"} for r in rungs],
        "driver_peak_ratio": round(last["driver_peak_gib"] / first["driver_peak_gib"], 3),
        "per_event_cost_ratio": round((last["nightly_s"] / last["events"]) / (first["nightly_s"] / first["events"]), 3),
    }
    write_report(args.output, report)
    return 0


def _rung(text: str) -> tuple[int, int, int]:
    events, users, items = (int(float(v)) for v in text.split(":"))
    return events, users, items


def run_rung(events: int, users: int, items: int, days: int, settings: list[str]) -> dict[str, Any]:
    """One rung in this process: the history set up, then the nightly of its last day timed."""
    import datetime as dt

    from sparkrec import stages
    from sparkrec.session import build_session
    from sparkrec.synthetic import DirtRates, synthetic_events, synthetic_items, write_landing_day

    work = Path(tempfile.mkdtemp(prefix="sparkrec-bench-scale-"))
    config = scratch_config(work, *settings)
    spark = build_session(config)
    all_days = [(dt.date.fromisoformat(START) + dt.timedelta(days=d)).isoformat() for d in range(days)]
    history, today = all_days[:-1], all_days[-1]
    clean = DirtRates(0, 0, 0, 0, 0, 0, 0, 0, 0)
    per_day = events // days
    new_items = items + max(1, items // 100)
    start = time.perf_counter()
    for n, day in enumerate(all_days):
        shop = new_items if day == today else items
        lines = synthetic_events(spark, per_day, day, users=users, items=shop, seed=n + 1, dirt=clean)
        write_landing_day(lines, config.landing.root, day)
    write_landing_day(synthetic_items(spark, items, history[0]), config.landing.root, history[0], kind="items")
    write_landing_day(synthetic_items(spark, new_items, today), config.landing.root, today, kind="items")
    stages.run_clean(spark, config, history)
    stages.run_embed(spark, config, history[-1])
    setup_s = time.perf_counter() - start
    timings: dict[str, float] = {}
    rows: dict[str, Any] = {}
    with PeakMemory() as memory:
        for name in STAGES:
            begin = time.perf_counter()
            out = getattr(stages, f"run_{name}")(spark, config, today if name != "clean" else [today])
            timings[name] = round(time.perf_counter() - begin, 1)
            rows[name] = _rows(out)
    result = {
        "events": per_day * days,
        "users": users,
        "items": new_items,
        "stages": timings,
        "nightly_s": round(sum(timings.values()), 1),
        "driver_peak_gib": round(memory.self_peak / 2**30, 3),
        "jvm_peak_gib": round(memory.jvm_peak / 2**30, 3),
        "workers_peak_gib": round(memory.python_peak / 2**30, 3),
        "rows": rows,
        "setup_s": round(setup_s, 1),
        "machine": machine(spark, driver_memory=config.spark.driver_memory),
    }
    spark.stop()
    return result


def _rows(out: dict[str, Any]) -> dict[str, Any]:
    """The counts a stage reported (its numbers, without run ids and metrics)."""
    return {k: v for k, v in out.items() if isinstance(v, int | float) and not isinstance(v, bool)}


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
