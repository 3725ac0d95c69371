"""Training throughput: the two-tower model through TorchDistributor with 1 and with 2 processes.

    .venv/bin/python bench/train.py [--processes 1,2] [--epochs 6] [--output bench/results/train.json]

Imports the bundled Online Retail sample, cleans every day and embeds the catalogue (set-up, not
timed), then runs the train stage on the same interactions (everything before the evaluation
holdout) once per process count, in the same session. Reported per run: examples/s summed over the
processes (the mean over epochs after the first, which includes warm-up), examples/s per process,
the stage's wall time (materialising the examples, launching the processes, logging the model) and
the final loss. ``ratio`` is the throughput of the largest process count over one process.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import machine, scratch_config, write_report  # noqa: E402

from sparkrec import stages  # noqa: E402
from sparkrec.adapters.online_retail import import_online_retail  # noqa: E402
from sparkrec.config import with_values  # noqa: E402
from sparkrec.landing import landing_days  # noqa: E402
from sparkrec.session import build_session  # noqa: E402

SAMPLE = ROOT / "data" / "online-retail" / "online_retail_2010-12.csv.gz"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "train.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sparkrec-bench-train-"))
    config = scratch_config(work, f"train.epochs={args.epochs}")
    spark = build_session(config)
    import_online_retail(SAMPLE, config.landing.root)
    days = landing_days(config, "events")
    stages.run_clean(spark, config, days)
    stages.run_embed(spark, config, days[-1])
    runs = []
    for processes in [int(p) for p in args.processes.split(",")]:
        run_config = with_values(config, {"train": {"num_processes": processes}})
        start = time.perf_counter()
        out = stages.run_train(spark, run_config, days[-1])
        wall = time.perf_counter() - start
        speeds = out["examples_per_s"][1:] or out["examples_per_s"]
        speed = sum(speeds) / len(speeds)
        runs.append(
            {
                "processes": processes,
                "examples": int(out["examples"]),
                "epochs": args.epochs,
                "examples_per_s": round(speed),
                "examples_per_s_per_process": round(speed / processes),
                "stage_wall_s": round(wall, 1),
                "final_loss": round(out["final_loss"], 4),
            }
        )
        print(runs[-1], flush=True)
    report = {
        "benchmark": "train stage (two-tower, TorchDistributor local mode) on the Online Retail sample",
        "machine": machine(spark, driver_memory=config.spark.driver_memory),
        "settings": {
            "batch_size": config.train.batch_size,
            "dim": config.train.model.dim,
            "history_length": config.train.model.history_length,
        },
        "runs": runs,
        "ratio": round(runs[-1]["examples_per_s"] / runs[0]["examples_per_s"], 2) if len(runs) > 1 else None,
    }
    write_report(args.output, report)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
