"""Two runs of one day at once: one runs, the other stops at once with one line; one table state."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparkrec.tables import read_table
from tests.conftest import make_config
from tests.helpers import cli_args, write_landing
from tests.spark.test_clean_refusal import DAY, GOOD


@pytest.mark.slow
def test_two_runs_of_one_day_at_once(spark, tmp_path: Path, mlflow_db: Path) -> None:
    config = make_config(tmp_path, mlflow_db)
    write_landing(config, DAY, GOOD)
    command = [sys.executable, "-m", "sparkrec.cli", "clean", "--date", DAY, *cli_args(config)]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    runs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outcomes = sorted((run.wait(timeout=600), run.stderr.read()) for run in runs)
    (won, _), (lost, err) = outcomes
    assert (won, lost) == (0, 2), outcomes
    assert err.strip().splitlines()[-1].startswith(f"sparkrec: error: {DAY} is being run by "), err[-2000:]
    assert read_table(spark, config, "interactions").count() == len(GOOD)
    clean_runs = read_table(spark, config, "run_metrics").where("stage = 'clean'").select("run_id").distinct()
    assert clean_runs.count() == 1
    assert not list((Path(config.lakehouse.root) / "_locks").glob("*.lock"))
