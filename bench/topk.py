"""Top-K throughput: sparkrec's blocked top-K against Spark MLlib ALS ``recommendForAllUsers``.

    .venv/bin/python bench/topk.py [--grid 10000x20000,50000x20000,100000x20000,100000x50000]
        [--rank 32] [--k 10] [--cell-timeout 900] [--output bench/results/topk.json]

For each users x items cell of the grid: synthetic implicit interactions (every user and every item
present, item popularity skewed) are fitted with ALS at ``--rank`` (one iteration: the fit is set-up,
reported but not compared). Then, in the same session and on the same factors:

- ``als``: ``model.recommendForAllUsers(k)``, written to Spark's ``noop`` sink;
- ``sparkrec``: ``scoring.top_k`` over the same user factors (the ``vector`` column, ``VectorScorer``)
  and the same item matrix, collected to the driver and broadcast inside the timing, ``noop`` sink.

Both lists are compared on a sample of users (``agreement@k``: share of ALS's items sparkrec also
returns; ties can differ). users/s = users / seconds of the step; peak memory = largest summed RSS of
this process and its children (the Spark JVM, Python workers), and of the Python workers alone. A
step over ``--cell-timeout`` seconds is cancelled and recorded as a timeout. ``ratio_vs_als`` is taken at the
largest cell both finished.
A small cell runs first, unrecorded, so that neither side pays worker start-up or JIT warm-up.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import PeakMemory, machine, scratch_config, write_report  # noqa: E402

from sparkrec.session import build_session  # noqa: E402

INTERACTIONS_PER_USER = 20


def synthetic_pairs(spark: Any, users: int, items: int, seed: int) -> Any:
    """(user, item, strength): every user and item at least once, item popularity skewed (u^2)."""
    from pyspark.sql import functions as F

    draws = spark.range(users * INTERACTIONS_PER_USER).select(
        (F.col("id") % users).cast("int").alias("user"),
        F.floor(F.pow(F.rand(seed), 2) * items).cast("int").alias("item"),
    )
    cover = spark.range(items).select(
        (F.col("id") * 7919 % users).cast("int").alias("user"), F.col("id").cast("int").alias("item")
    )
    return draws.unionByName(cover).groupBy("user", "item").agg(F.count(F.lit(1)).cast("float").alias("strength"))


def timed(spark: Any, label: str, action: Any, timeout_s: float) -> dict[str, Any]:
    """Run ``action`` under a job group cancelled after ``timeout_s``; seconds and peak memory."""
    sc = spark.sparkContext
    group = f"bench-{label}-{time.monotonic_ns()}"
    sc.setJobGroup(group, label, interruptOnCancel=True)
    timer = threading.Timer(timeout_s, lambda: sc.cancelJobGroup(group))
    timer.start()
    try:
        with PeakMemory() as memory:
            start = time.perf_counter()
            try:
                action()
            except Exception:  # noqa: BLE001 - a cancelled job surfaces as a Py4J/Spark error
                if time.perf_counter() - start >= timeout_s * 0.99:
                    return {"status": "timeout", "seconds": round(timeout_s, 1)}
                raise
            seconds = time.perf_counter() - start
    finally:
        timer.cancel()
        sc.setLocalProperty("spark.jobGroup.id", None)
    return {
        "status": "ok",
        "seconds": round(seconds, 2),
        "peak_rss_gib": round(memory.peak / 2**30, 2),
        "python_workers_peak_rss_gib": round(memory.python_peak / 2**30, 2),
    }


def run_cell(
    spark: Any, users: int, items: int, rank: int, k: int, block_size: int, timeout_s: float, seed: int
) -> dict[str, Any]:
    import numpy as np
    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    from sparkrec.models.scoring import VectorScorer, top_k

    pairs = synthetic_pairs(spark, users, items, seed).cache()
    n_pairs = pairs.count()
    start = time.perf_counter()
    model = ALS(
        rank=rank,
        maxIter=1,
        regParam=0.1,
        implicitPrefs=True,
        userCol="user",
        itemCol="item",
        ratingCol="strength",
        seed=seed,
    ).fit(pairs)
    model.userFactors.count()
    model.itemFactors.count()
    fit_s = time.perf_counter() - start
    pairs.unpersist()
    cell: dict[str, Any] = {
        "users": users,
        "items": items,
        "rank": rank,
        "k": k,
        "interactions": n_pairs,
        "als_fit_s": round(fit_s, 1),
    }

    def als_action() -> None:
        model.recommendForAllUsers(k).write.format("noop").mode("overwrite").save()

    def sparkrec_action() -> None:
        factors = model.itemFactors.orderBy("id").toPandas()
        item_ids = factors["id"].astype(str).tolist()
        matrix = np.stack(factors["features"].to_numpy()).astype(np.float32)
        users_df = model.userFactors.select(
            F.col("id").cast("string").alias("user_id"),
            F.array().cast("array<int>").alias("history"),
            F.array().cast("array<int>").alias("seen"),
            F.col("features").alias("vector"),
        )
        recs = top_k(
            users_df, VectorScorer(matrix, "sparkrec"), item_ids, np.ones(len(item_ids), dtype=bool), k, block_size
        )
        recs.write.format("noop").mode("overwrite").save()

    for name, action in (("als", als_action), ("sparkrec", sparkrec_action)):
        got = timed(spark, f"{name}-{users}x{items}", action, timeout_s)
        if got["status"] == "ok":
            got["users_per_s"] = round(users / got["seconds"], 1)
        cell[name] = got
        print(f"  {users:>7} users x {items:>6} items  {name:<9} {got}", flush=True)
    if cell["als"]["status"] == cell["sparkrec"]["status"] == "ok":
        cell["ratio_vs_als"] = round(cell["sparkrec"]["users_per_s"] / cell["als"]["users_per_s"], 2)
        cell["agreement_at_k"] = agreement(spark, model, k, block_size)
    return cell


def agreement(spark: Any, model: Any, k: int, block_size: int, sample: int = 500) -> float:
    """Share of ALS's top-k items that sparkrec's top-k also holds, over ``sample`` users."""
    import numpy as np
    from pyspark.sql import functions as F

    from sparkrec.models.scoring import VectorScorer, top_k

    some = model.userFactors.orderBy("id").limit(sample)
    subset = model.recommendForUserSubset(some.select(F.col("id").alias("user")), k).collect()
    als = {r["user"]: {x["item"] for x in r["recommendations"]} for r in subset}
    factors = model.itemFactors.orderBy("id").collect()
    matrix = np.asarray([r["features"] for r in factors], dtype=np.float32)
    users_df = some.select(
        F.col("id").cast("string").alias("user_id"),
        F.array().cast("array<int>").alias("history"),
        F.array().cast("array<int>").alias("seen"),
        F.col("features").alias("vector"),
    )
    ours: dict[int, set[int]] = {}
    for r in top_k(
        users_df,
        VectorScorer(matrix),
        [str(f["id"]) for f in factors],
        np.ones(len(factors), dtype=bool),
        k,
        block_size,
    ).collect():
        ours.setdefault(int(r["user_id"]), set()).add(int(r["item_id"]))
    shared = sum(len(items & ours.get(user, set())) for user, items in als.items())
    return round(shared / max(1, sum(len(v) for v in als.values())), 4)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--grid",
        default="10000x20000,50000x20000,100000x20000,100000x50000",
        help="comma-separated USERSxITEMS cells, smallest first",
    )
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--block-size", type=int, default=0, help="users per block (default recommend.block_size)")
    parser.add_argument("--cell-timeout", type=float, default=900.0, help="seconds before a step counts as a timeout")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "topk.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sparkrec-bench-topk-"))
    config = scratch_config(work)
    block_size = args.block_size or config.recommend.block_size
    spark = build_session(config)
    spark.sparkContext.setCheckpointDir(str(work / "checkpoints"))
    print("warm-up (not recorded): Python workers, torch import, JIT of both paths", flush=True)
    run_cell(spark, 2000, 2000, args.rank, args.k, block_size, args.cell_timeout, args.seed)
    cells = []
    for spec in args.grid.split(","):
        users, items = (int(x) for x in spec.lower().split("x"))
        cells.append(run_cell(spark, users, items, args.rank, args.k, block_size, args.cell_timeout, args.seed))
    both = [c for c in cells if "ratio_vs_als" in c]
    largest = max(both, key=lambda c: c["users"] * c["items"]) if both else None
    report = {
        "benchmark": "top-K per user: sparkrec scoring.top_k vs Spark MLlib ALS recommendForAllUsers",
        "machine": machine(spark, driver_memory=config.spark.driver_memory, block_size=block_size),
        "cells": cells,
        "ratio_vs_als": largest["ratio_vs_als"] if largest else None,
        "ratio_at": {"users": largest["users"], "items": largest["items"]} if largest else None,
    }
    write_report(args.output, report)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
