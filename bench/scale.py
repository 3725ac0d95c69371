"""The steady-state nightly up a ladder of sizes: per-stage time, driver and JVM peak memory, rows.

    .venv/bin/python bench/scale.py [--rungs 1000000:100000:10000,3000000:300000:30000,...]
        [--days 14] [--set key=value ...] [--output bench/results/scale.json] [--append]
        [--cluster events:users:items] [--catalogue items:events:users]

A rung is ``events:users:items``. Each rung runs in a process of its own (a fresh driver, so one
rung's memory never shows in the next), on a scratch lakehouse:

- set-up, not timed: ``days - 1`` days of synthetic events (``sparkrec.synthetic``, events / days a
  day, no dirt) and their catalogue, cleaned and embedded: the history a nightly finds;
- timed: the nightly of the last day, whose catalogue adds 1 % new items (embedded that night):
  clean, embed, train, evaluate and recommend, one after another as ``sparkrec nightly`` runs them.

Memory is sampled every 0.2 s over the timed nightly: ``driver_peak_gib`` is the RSS of the
driver's Python process (``driver_peak_by_stage_gib``: its peak in each stage), ``jvm_peak_gib``
the Spark JVM's (in local mode it also runs the executors), ``workers_peak_gib`` the Python workers
and training processes together. The report's
``driver_peak_ratio`` is the largest rung's ``driver_peak_gib`` over the smallest's, and
``per_event_cost_ratio`` the largest rung's nightly seconds per event over the smallest's.

Each rung's scratch folder (under the system's temporary folder: gigabytes at the large rungs) is
removed once the rung is measured; ``--keep`` keeps them, and a rung that fails keeps its own and
says where.

``--append`` adds rungs to the report already at ``--output`` (measured with the same ``--days``
and ``--set``; a rung of the same size is replaced), so a long rung can run on its own; each rung
records the commit it ran on. It keeps the report's catalogue unless ``--catalogue`` is given.

``cluster`` (``--cluster events:users:items``): that rung's nightly once more on a two-worker
standalone cluster on this machine (tools/standalone_cluster.sh, the settings of
conf/cluster-local.yaml): ``spark-submit jobs/nightly.py``, timed, with the peak RSS of the
driver's JVM, the driver's Python and each executor (its JVM and the Python processes under it:
UDF workers, training processes) apart.

``catalogue`` (``--catalogue items:events:users``, in a process of its own): the collaborative score
alone on a catalogue too large for EASE — item-kNN fitted in Spark on synthetic (user, item)
events, then every user's top 10 over the whole catalogue — its times, the sparse weights' size and
the same peaks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import (  # noqa: E402
    ClusterMemory,
    PeakMemory,
    machine,
    measured_commit,
    scratch_config,
    scratch_sets,
    stage_times,
    write_report,
)

START = "2024-06-01"
RUNGS = "1000000:100000:10000,3000000:300000:30000,10000000:1000000:100000"
CATALOGUE = "1000000:2000000:200000"
STAGES = ("clean", "embed", "train", "evaluate", "recommend")
KEEP = "SPARKREC_BENCH_KEEP"  # set by --keep: the rungs' scratch folders stay


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rungs", default=RUNGS, help="comma-separated events:users:items")
    parser.add_argument("--days", type=int, default=14, help="days the events are spread over")
    parser.add_argument("--set", action="append", default=[], dest="settings", help="config key=value")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "scale.json"))
    parser.add_argument("--catalogue", default=None, help="items:events:users for the collaborative fit and "
                        f"top-K alone (default {CATALOGUE}; with --append the report's own; '' skips)")  # fmt: skip
    parser.add_argument("--append", action="store_true", help="add the rungs to the report at --output (same "
                        "--days and --set) instead of starting a new one")  # fmt: skip
    parser.add_argument("--cluster", help="events:users:items: this rung's nightly on a two-worker standalone "
                        "cluster as well (reported as 'cluster')")  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep each rung's scratch lakehouse")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # events:users:items, run in this process
    parser.add_argument("--one-cluster", help=argparse.SUPPRESS)  # events:users:items, on the cluster
    parser.add_argument("--one-catalogue", help=argparse.SUPPRESS)  # items:events:users, in this process
    args = parser.parse_args()
    if args.keep:
        os.environ[KEEP] = "1"  # the rungs' processes inherit it
    if args.one:
        print(json.dumps(run_rung(*_rung(args.one), args.days, args.settings)), flush=True)
        return 0
    if args.one_cluster:
        print(json.dumps(run_cluster_rung(*_rung(args.one_cluster), args.days, args.settings)), flush=True)
        return 0
    if args.one_catalogue:
        print(json.dumps(run_catalogue(*_rung(args.one_catalogue), args.settings)), flush=True)
        return 0
    previous = json.loads(Path(args.output).read_text()) if args.append else {}
    if previous and (previous["days"], previous["settings"]) != (args.days, args.settings):
        raise SystemExit(f"--append: {args.output} was measured with --days {previous['days']} and --set "
                         f"{previous['settings']}; run the new rungs with the same")  # fmt: skip
    report = {
        "benchmark": "steady-state nightly on synthetic events over a ladder of sizes",
        "days": args.days,
        "settings": args.settings,
        **{k: previous[k] for k in ("machine", "catalogue", "cluster") if k in previous},
    }
    rungs: list[dict[str, Any]] = list(previous.get("rungs", []))
    catalogue = args.catalogue if args.catalogue is not None or args.append else CATALOGUE
    if catalogue:
        report["catalogue"] = _in_process(["--one-catalogue", catalogue], args.settings)
    for rung in filter(None, args.rungs.split(",")):  # the report is rewritten after each rung
        result = _in_process(["--one", rung, "--days", str(args.days)], args.settings)
        size = lambda r: (r["events"], r["users"], r["items"])  # noqa: E731
        rungs = [r for r in rungs if size(r) != size(result)] + [result]  # a rung run again replaces the old
        _write(report, rungs, args.output)
    if args.cluster:
        report["cluster"] = _in_process(["--one-cluster", args.cluster, "--days", str(args.days)], args.settings)
        _write(report, rungs, args.output)
    return 0


def _write(report: dict[str, Any], rungs: list[dict[str, Any]], output: str) -> None:
    """The report with ``rungs`` (smallest first) and the ratios of the largest to the smallest, and its plot."""
    rungs.sort(key=lambda r: r["events"])
    if not rungs:
        raise SystemExit("no rungs measured: give --rungs, or --append to a report that has some")
    first, last = rungs[0], rungs[-1]
    report |= {
        "machine": next((r["machine"] for r in rungs if "machine" in r), report.get("machine")),
        "rungs": [{k: v for k, v in r.items() if k != "machine"} for r in rungs],
        "driver_peak_ratio": round(last["driver_peak_gib"] / first["driver_peak_gib"], 3),
        "per_event_cost_ratio": round((last["nightly_s"] / last["events"]) / (first["nightly_s"] / first["events"]), 3),
    }
    write_report(output, report)
    plot(report, Path(output).with_suffix(".png"))


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
    if out.returncode != 0:  # the training processes write to stdout: their error shows there
        print(out.stdout[-4000:], out.stderr[-4000:], sep="\n", file=sys.stderr)
        raise SystemExit(f"{' '.join(args)} failed (exit {out.returncode})")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def _rung(text: str) -> tuple[int, int, int]:
    events, users, items = (int(float(v)) for v in text.split(":"))
    return events, users, items


def run_rung(events: int, users: int, items: int, days: int, settings: list[str]) -> dict[str, Any]:
    """One rung in this process: the history set up, then the nightly of its last day timed."""
    from sparkrec import stages

    spark, config, work, today, setup_s = _set_up("sparkrec-bench-scale-", events, users, items, days, settings)
    timings: dict[str, float] = {}
    driver_by_stage: dict[str, float] = {}
    rows: dict[str, Any] = {}
    with _scratch(work), PeakMemory() as memory:
        for name in STAGES:
            begin = time.perf_counter()
            with PeakMemory() as stage_memory:
                out = getattr(stages, f"run_{name}")(spark, config, today if name != "clean" else [today])
            timings[name] = round(time.perf_counter() - begin, 1)
            driver_by_stage[name] = round(stage_memory.self_peak / 2**30, 3)
            rows[name] = _rows(out)
    result = {
        **_size(events, users, items, days),
        "stages": timings,
        "nightly_s": round(sum(timings.values()), 1),
        # two samplers of one process: a spike between the outer one's samples may fall in a stage's
        "driver_peak_gib": max(round(memory.self_peak / 2**30, 3), *driver_by_stage.values()),
        "driver_peak_by_stage_gib": driver_by_stage,
        "jvm_peak_gib": round(memory.jvm_peak / 2**30, 3),
        "workers_peak_gib": round(memory.python_peak / 2**30, 3),
        "rows": rows,
        "setup_s": round(setup_s, 1),
        "commit": measured_commit(),
        "machine": machine(spark, driver_memory=config.spark.driver_memory),
    }
    spark.stop()
    return result


# How the cluster rung runs: conf/cluster-local.yaml's settings over the default config, so only where
# the work runs differs from the local rungs.
CLUSTER_SETS = (
    "spark.master=",  # spark-submit's --master decides
    "spark.shuffle_partitions=4",
    "spark.conf.spark.executor.memory=2g",
    "spark.conf.spark.executor.cores=1",
    "train.num_processes=2",
    "train.local_mode=false",
)


def run_cluster_rung(events: int, users: int, items: int, days: int, settings: list[str]) -> dict[str, Any]:
    """One rung's nightly on a two-worker standalone cluster on this machine (tools/standalone_cluster.sh,
    one core and ``SPARKREC_WORKER_MEMORY`` each): the history set up in local mode in this process,
    then ``spark-submit jobs/nightly.py`` timed, with the peaks of the driver's JVM, the driver's
    Python and each executor apart."""

    spark, _, work, today, setup_s = _set_up("sparkrec-bench-scale-cluster-", events, users, items, days, settings)
    spark.stop()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_GATEWAY")}
    env |= {"SPARKREC_CLUSTER_DIR": str(work / "cluster"), "SPARKREC_MASTER_PORT": "7277",
            "SPARKREC_MASTER_UI_PORT": "8280"}  # fmt: skip
    cluster = str(ROOT / "tools" / "standalone_cluster.sh")
    subprocess.run([cluster, "start"], check=True, env=env, cwd=ROOT)
    try:
        submit = subprocess.run(
            [cluster, "submit-args"], check=True, capture_output=True, text=True, env=env, cwd=ROOT
        ).stdout.split()
        sets = [*scratch_sets(work), *settings, *CLUSTER_SETS]
        cmd = [str(ROOT / ".venv" / "bin" / "spark-submit"), *submit, str(ROOT / "jobs" / "nightly.py"),
               "--date", today, *(f"--set={s}" for s in sets)]  # fmt: skip
        log = work / "driver.log"
        begin = time.perf_counter()
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
            with ClusterMemory(proc.pid) as memory:
                code = proc.wait()
        wall_s = time.perf_counter() - begin
    finally:
        subprocess.run([cluster, "stop"], env=env, cwd=ROOT, check=False)
    with _scratch(work):
        text = log.read_text()
        if code != 0:
            raise SystemExit(f"the cluster nightly failed (exit {code}):\n{text[-3000:]}")
    timings = stage_times(text)
    gib = lambda b: round(b / 2**30, 3)  # noqa: E731
    return {
        **_size(events, users, items, days),
        "how": f"{submit[1]}, 2 workers x 1 core (spark-submit jobs/nightly.py)",
        "stages": timings,
        "nightly_s": round(sum(timings.values()), 1),
        "wall_s": round(wall_s, 1),
        "driver_jvm_peak_gib": gib(memory.driver_jvm_peak),
        "driver_peak_gib": gib(memory.driver_peak),
        "executors": {
            eid: {"jvm_peak_gib": gib(p["jvm"]), "python_peak_gib": gib(p["python"])}
            for eid, p in sorted(memory.executors.items())
        },  # fmt: skip
        "setup_s": round(setup_s, 1),
        "commit": measured_commit(),
    }


@contextlib.contextmanager
def _scratch(work: Path) -> Iterator[None]:
    """Removes ``work`` when the block succeeds (unless ``--keep``); when it fails, keeps it for a look
    and says where, after the error."""
    try:
        yield
    except BaseException:
        traceback.print_exc()
        print(f"the failed rung's scratch folder is kept: {work}", file=sys.stderr)
        raise SystemExit(1) from None
    if not os.environ.get(KEEP):
        shutil.rmtree(work, ignore_errors=True)


def _size(events: int, users: int, items: int, days: int) -> dict[str, int]:
    """A rung's size as run: whole days of events, and the catalogue with the last day's new items."""
    return {"events": events // days * days, "users": users, "items": items + max(1, items // 100)}


def _set_up(
    prefix: str, events: int, users: int, items: int, days: int, settings: list[str]
) -> tuple[Any, Any, Path, str, float]:
    """A scratch folder, its config and a local session, and the history written, cleaned and
    embedded there (``_history``): (spark, config, folder, the day to run, set-up seconds)."""
    from sparkrec.session import build_session

    work = Path(tempfile.mkdtemp(prefix=prefix))
    config = scratch_config(work, *settings)
    spark = build_session(config)
    start = time.perf_counter()
    today = _history(spark, config, events, users, items, days)
    return spark, config, work, today, round(time.perf_counter() - start, 1)


def _history(spark: Any, config: Any, events: int, users: int, items: int, days: int) -> str:
    """Writes ``days`` days of synthetic events (``events / days`` a day, no dirt) and their catalogue
    to the landing zone, cleans and embeds all but the last; returns the last day, whose catalogue
    adds 1 % new items: the day the timed nightly runs."""
    import datetime as dt

    from sparkrec import stages
    from sparkrec.synthetic import DirtRates, synthetic_events, synthetic_items, write_landing_day

    all_days = [(dt.date.fromisoformat(START) + dt.timedelta(days=d)).isoformat() for d in range(days)]
    history, today = all_days[:-1], all_days[-1]
    clean = DirtRates(0, 0, 0, 0, 0, 0, 0, 0, 0)
    new_items = _size(events, users, items, days)["items"]
    for n, day in enumerate(all_days):
        shop = new_items if day == today else items
        lines = synthetic_events(spark, events // days, day, users=users, items=shop, seed=n + 1, dirt=clean)
        write_landing_day(lines, config.landing.root, day)
    write_landing_day(synthetic_items(spark, items, history[0]), config.landing.root, history[0], kind="items")
    write_landing_day(synthetic_items(spark, new_items, today), config.landing.root, today, kind="items")
    stages.run_clean(spark, config, history)
    stages.run_embed(spark, config, history[-1])
    return today


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
    with _scratch(work), PeakMemory() as memory:
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
