"""A clean run killed part-way (a real SIGKILL of the process) leaves the previous day readable;
the re-run completes with exactly the rows of a clean run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sparkrec import stages
from sparkrec.synthetic import synthetic_events, write_landing_day
from sparkrec.tables import read_table, table_version

DAY = "2024-06-01"


def _data_files(table: Path) -> set[Path]:
    return {p for p in table.rglob("*.parquet")}


# Kills a running clean (a minute of Spark): with the slow tests.
@pytest.mark.slow
def test_killed_clean_leaves_the_last_commit_and_the_rerun_completes(spark, config, tmp_path: Path) -> None:
    write_landing_day(synthetic_events(spark, 2_000, DAY, seed=1, partitions=2), config.landing.root, DAY)
    first = stages.run_clean(spark, config, [DAY])
    table = Path(config.table_path("interactions"))
    before = sorted(tuple(r) for r in read_table(spark, config, "interactions").select("event_id", "ds").collect())
    version = table_version(spark, config, "interactions")

    # A bigger delivery of the same day, cleaned by a separate process that is killed as soon as it
    # starts writing data files (before its commit).
    write_landing_day(synthetic_events(spark, 100_000, DAY, seed=2, partitions=2), config.landing.root, DAY)
    files = _data_files(table)
    args = [
        f"--set=lakehouse.root={config.lakehouse.root}",
        f"--set=landing.root={config.landing.root}",
        f"--set=mlflow.tracking_uri={config.mlflow.tracking_uri}",
        f"--set=mlflow.experiment={config.mlflow.experiment}",
        "--set=spark.master=local[2]",
        "--set=spark.show_progress=false",
        "--set=spark.driver_memory=1g",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "sparkrec.cli", "clean", "--date", DAY, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not (_data_files(table) - files):
        time.sleep(0.05)
    assert proc.poll() is None, "the clean run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its JVM
    proc.wait()

    assert table_version(spark, config, "interactions") == version  # nothing committed
    after_kill = sorted(tuple(r) for r in read_table(spark, config, "interactions").select("event_id", "ds").collect())
    assert after_kill == before  # the previous state, readable, untouched

    rerun = stages.run_clean(spark, config, [DAY])
    assert rerun["raw_rows"] > first["raw_rows"]
    assert read_table(spark, config, "interactions").count() == rerun["clean_rows"]
    assert read_table(spark, config, "interactions").select("event_id").distinct().count() == rerun["clean_rows"]
    metrics = {
        r["metric"]: r["value"]
        for r in read_table(spark, config, "run_metrics").where("stage = 'clean' AND source IS NULL").collect()
    }
    assert json.dumps(metrics["raw_rows"]) == json.dumps(rerun["raw_rows"])
