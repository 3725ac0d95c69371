"""The steady-state nightly up a ladder of sizes: per-stage time, driver and JVM peak memory, rows.

    .venv/bin/python bench/scale.py [--rungs 1000000:100000:10000,3000000:300000:30000,...]
        [--days 14] [--set key=value ...] [--output bench/results/scale.json] [--append]

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

``--append`` adds rungs to the report already at ``--output`` (measured with the same ``--days``
and ``--set``), so a long rung can run on its own; each rung records the commit it ran on.

``catalogue`` (``--catalogue items:events:users``, in a process of its own): the collaborative score
alone on a catalogue too large for EASE — item-kNN fitted in Spark on synthetic (user, item)
events, then every user's top 10 over the whole catalogue — its times, the sparse weights' size and
the same peaks.
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

import numpy as np

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
    parser.add_argument("--catalogue", default="1000000:2000000:200000", help="items:events:users for the "
                        "collaborative fit and top-K alone ('' to skip)")  # fmt: skip
    parser.add_argument("--append", action="store_true", help="add the rungs to the report at --output (same "
                        "--days and --set) instead of starting a new one")  # fmt: skip
    parser.add_argument("--one", help=argparse.SUPPRESS)  # events:users:items, run in this process
    parser.add_argument("--one-catalogue", help=argparse.SUPPRESS)  # items:events:users, in this process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_rung(*_rung(args.one), args.days, args.settings)), flush=True)
        return 0
    if args.one_catalogue:
        print(json.dumps(run_catalogue(*_rung(args.one_catalogue), args.settings)), flush=True)
        return 0
    previous = json.loads(Path(args.output).read_text()) if args.append else {}
    if previous and (previous["days"], previous["settings"]) != (args.days, args.settings):
        raise SystemExit(f"--append: {args.output} was measured with --days {previous['days']} and --set "
                         f"{previous['settings']}; run the new rungs with the same")  # fmt: skip
    catalogue = previous.get("catalogue")
    if args.catalogue:
        catalogue = _in_process(["--one-catalogue", args.catalogue], args.settings)
    rungs: list[dict[str, Any]] = list(previous.get("rungs", []))
    for rung in filter(None, args.rungs.split(",")):  # the report is rewritten after each rung
        rungs.append(_in_process(["--one", rung, "--days", str(args.days)], args.settings))
        rungs.sort(key=lambda r: r["events"])
        first, last = rungs[0], rungs[-1]
        report = {
            "benchmark": "steady-state nightly on synthetic events over a ladder of sizes",
            "days": args.days,
            "settings": args.settings,
            "machine": next(r["machine"] for r in rungs if "machine" in r),
            "rungs": [{k: v for k, v in r.items() if k != "machine"} for r in rungs],
            "driver_peak_ratio": round(last["driver_peak_gib"] / first["driver_peak_gib"], 3),
            "per_event_cost_ratio": round(
                (last["nightly_s"] / last["events"]) / (first["nightly_s"] / first["events"]), 3
            ),
            "catalogue": catalogue,
        }
        write_report(args.output, report)
        plot(report, Path(args.output).with_suffix(".png"))
    return 0


def plot(report: dict[str, Any], path: Path) -> None:
    """Nightly seconds per stage and peak memory against events, one point per rung."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rungs = report["rungs"]
    events = [r["events"] / 1e6 for r in rungs]
    fig, (time_ax, memory_ax) = plt.subplots(1, 2, figsize=(10, 4))
    bottom = [0.0] * len(rungs)
    for stage in STAGES:
        seconds = [r["stages"].get(stage, 0.0) for r in rungs]
        time_ax.bar([str(round(e, 2)) for e in events], seconds, bottom=bottom, label=stage)
        bottom = [b + s for b, s in zip(bottom, seconds, strict=True)]
    time_ax.set(xlabel="events (millions)", ylabel="nightly seconds", title="steady-state nightly by stage")
    time_ax.legend(fontsize=8)
    for key, label in (("driver_peak_gib", "driver (Python)"), ("jvm_peak_gib", "Spark JVM"),
                       ("workers_peak_gib", "Python workers")):  # fmt: skip
        memory_ax.plot(events, [r[key] for r in rungs], marker="o", label=label)
    memory_ax.set(xlabel="events (millions)", ylabel="peak RSS (GiB)", title="peak memory", ylim=(0, None))
    memory_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")


def _in_process(args: list[str], settings: list[str]) -> dict[str, Any]:
    """This script with ``args`` in a process of its own; its JSON line."""
    cmd = [sys.executable, __file__, *args, *(f"--set={s}" for s in settings)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        print(out.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"{' '.join(args)} failed (exit {out.returncode})")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def _rung(text: str) -> tuple[int, int, int]:
    events, users, items = (int(float(v)) for v in text.split(":"))
    return events, users, items


def run_rung(events: int, users: int, items: int, days: int, settings: list[str]) -> dict[str, Any]:
    """One rung in this process: the history set up, then the nightly of its last day timed."""
    import datetime as dt

    from sparkrec import stages
    from sparkrec.session import build_session
    from sparkrec.synthetic import DirtRates, synthetic_events, synthetic_items, write_landing_day
    from sparkrec.tracking import git_commit

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
        "commit": git_commit(),
        "machine": machine(spark, driver_memory=config.spark.driver_memory),
    }
    spark.stop()
    return result


def run_catalogue(items: int, events: int, users: int, settings: list[str], k: int = 10) -> dict[str, Any]:
    """The collaborative score alone on a catalogue of ``items``: item-kNN fitted in Spark on
    ``events`` synthetic (user, item) events, then every user's top ``k`` over the whole catalogue."""
    from pyspark.sql import functions as F

    from sparkrec.config import RankerConfig
    from sparkrec.models.baselines import CollaborativeScorer, item_neighbours
    from sparkrec.models.scoring import top_k
    from sparkrec.session import build_session

    work = Path(tempfile.mkdtemp(prefix="sparkrec-bench-catalogue-"))
    config = scratch_config(work, *settings)
    spark = build_session(config)
    rc = RankerConfig()
    pairs = spark.range(events).select(
        F.concat(F.lit("u"), F.floor(F.rand(1) * users).cast("string")).alias("user_id"),
        F.concat(F.lit("i"), F.floor(F.pow(F.rand(2), F.lit(3.0)) * items).cast("string")).alias("item_id"),
    )
    pairs = pairs.cache()
    index_df = spark.range(items).select(F.concat(F.lit("i"), F.col("id").cast("string")).alias("item_id"),
                                         F.col("id").cast("int").alias("row"))  # fmt: skip
    held = pairs.distinct().join(index_df, "item_id").groupBy("user_id").agg(F.collect_set("row").alias("seen"))
    users_df = held.select("user_id", F.col("seen").alias("history"), "seen").cache()
    users_df.count()
    with PeakMemory() as memory:
        begin = time.perf_counter()
        weights = item_neighbours(pairs, index_df, items, rc.neighbours, rc.damping)
        fit_s = time.perf_counter() - begin
        item_ids = [f"i{i}" for i in range(items)]
        begin = time.perf_counter()
        listed = top_k(users_df, CollaborativeScorer(weights, "knn"), item_ids, np.ones(items, dtype=bool), k)
        rows = listed.count()
        topk_s = time.perf_counter() - begin
    result = {
        "items": items,
        "events": events,
        "users": users,
        "neighbours": int(weights.nnz),
        "weights_mib": round((weights.data.nbytes + weights.indices.nbytes + weights.indptr.nbytes) / 2**20, 1),
        "fit_s": round(fit_s, 1),
        "topk_s": round(topk_s, 1),
        "rows": rows,
        "driver_peak_gib": round(memory.self_peak / 2**30, 3),
        "jvm_peak_gib": round(memory.jvm_peak / 2**30, 3),
        "workers_peak_gib": round(memory.python_peak / 2**30, 3),
    }
    spark.stop()
    return result


def _rows(out: dict[str, Any]) -> dict[str, Any]:
    """The counts a stage reported (its numbers, without run ids and metrics)."""
    return {k: v for k, v in out.items() if isinstance(v, int | float) and not isinstance(v, bool)}


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
