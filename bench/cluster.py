"""The sample's nightly run in local mode and on a two-worker standalone cluster, side by side.

    .venv/bin/python bench/cluster.py [--date 2010-12-23] [--output bench/results/cluster.json]

Set-up (not timed): imports the bundled Online Retail sample, cleans every landing day before
``--date`` and embeds the catalogue, then copies that lakehouse twice. Timed: ``sparkrec nightly``
with conf/local.yaml (local mode: Spark and the training processes on this machine's cores) on one
copy, and ``spark-submit`` of jobs/nightly.py with conf/cluster-local.yaml on a standalone master
and two one-core workers (tools/standalone_cluster.sh, started before and stopped after the timed
run) on the other. Reported: each run's wall time (process start to exit), its per-stage times from
the driver log, the evaluation metrics of both (they must agree), and ``ratio`` = cluster / local.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import machine, scratch_config, stage_times, write_report  # noqa: E402

from sparkrec import stages  # noqa: E402
from sparkrec.adapters.online_retail import import_online_retail  # noqa: E402
from sparkrec.landing import landing_days  # noqa: E402
from sparkrec.session import build_session  # noqa: E402

SAMPLE = ROOT / "data" / "online-retail" / "online_retail_2010-12.csv.gz"
SCRIPT = ROOT / "tools" / "standalone_cluster.sh"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--date", default="2010-12-23", help="the landing day the nightly runs for")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "cluster.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sparkrec-bench-cluster-") as tmp:
        work = Path(tmp)
        config = scratch_config(work / "prepared", "spark.master=local[2]")
        import_online_retail(SAMPLE, config.landing.root)
        spark = build_session(config)
        stages.run_clean(spark, config, [d for d in landing_days(config, "events") if d < args.date])
        stages.run_embed(spark, config, args.date)
        meta = machine(spark)
        spark.stop()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_GATEWAY")}
        runs = {"local": _run_local(work, config.landing.root, args.date, env)}
        cluster_env = {
            **env,
            "SPARKREC_CLUSTER_DIR": str(work / "cluster"),
            "SPARKREC_MASTER_PORT": "7277",
            "SPARKREC_MASTER_UI_PORT": "8280",
        }
        subprocess.run([str(SCRIPT), "start"], check=True, env=cluster_env, cwd=ROOT)
        try:
            runs["cluster"] = _run_cluster(work, config.landing.root, args.date, cluster_env)
        finally:
            subprocess.run([str(SCRIPT), "stop"], env=cluster_env, cwd=ROOT)
    agree = runs["local"]["metrics"] == runs["cluster"]["metrics"]
    report = {
        "benchmark": "nightly run of the Online Retail sample, local mode vs two-worker standalone cluster",
        "date": args.date,
        "machine": {k: v for k, v in meta.items() if k != "master"},
        "runs": runs,
        "ratio": runs["cluster"]["wall_s"] / runs["local"]["wall_s"],
        "metrics_agree": agree,
    }
    write_report(args.output, report)
    print(
        f"nightly {args.date}: local {runs['local']['wall_s']:.0f} s, cluster {runs['cluster']['wall_s']:.0f} s "
        f"(x{report['ratio']:.2f}); metrics agree: {agree}"
    )
    return 0 if agree else 1


def _sets(root: Path, landing: str) -> list[str]:
    sets = [
        f"lakehouse.root={root / 'lakehouse'}",
        f"landing.root={landing}",
        f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
        f"mlflow.artifact_location={root / 'mlartifacts'}",
        "spark.show_progress=false",
    ]
    return [arg for s in sets for arg in ("--set", s)]


def _prepare(work: Path, name: str) -> Path:
    root = work / name
    shutil.copytree(work / "prepared" / "lakehouse", root / "lakehouse")
    return root


def _run_local(work: Path, landing: str, day: str, env: dict[str, str]) -> dict:
    root = _prepare(work, "local")
    cmd = [
        str(ROOT / ".venv" / "bin" / "sparkrec"),
        "nightly",
        "--date",
        day,
        "--conf",
        str(ROOT / "conf" / "local.yaml"),
        *_sets(root, landing),
    ]
    return _timed(cmd, root, env, "local[*] (sparkrec nightly)")


def _run_cluster(work: Path, landing: str, day: str, env: dict[str, str]) -> dict:
    root = _prepare(work, "cluster")
    submit = subprocess.run(
        [str(SCRIPT), "submit-args"], check=True, capture_output=True, text=True, env=env, cwd=ROOT
    ).stdout.split()
    cmd = [
        str(ROOT / ".venv" / "bin" / "spark-submit"),
        *submit,
        str(ROOT / "jobs" / "nightly.py"),
        "--date",
        day,
        "--conf",
        str(ROOT / "conf" / "cluster-local.yaml"),
        *_sets(root, landing),
    ]
    return _timed(cmd, root, env, f"{submit[1]}, 2 workers x 1 core (spark-submit)")


def _timed(cmd: list[str], root: Path, env: dict[str, str], how: str) -> dict:
    started = time.perf_counter()
    with open(root / "driver.log", "w") as log:
        code = subprocess.run(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - started
    text = (root / "driver.log").read_text()
    if code != 0:
        raise SystemExit(f"{how} failed (exit {code}):\n{text[-3000:]}")
    lines = text.splitlines()
    first, last = lines.index("{"), len(lines) - 1 - lines[::-1].index("}")
    result = json.loads("\n".join(lines[first : last + 1]))
    metrics = {
        source: {m: round(v, 6) for m, v in values.items()} for source, values in result["evaluate"]["metrics"].items()
    }
    return {
        "how": how,
        "wall_s": wall,
        "stages_s": stage_times(text),
        "users": result["recommend"]["users"],
        "metrics": metrics,
    }


if __name__ == "__main__":
    sys.exit(main())
