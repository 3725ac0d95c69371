"""The nightly job where the driver must not grow: a catalogue above the dense collaborative limit runs
on item-kNN, and a Spark driver that may receive less than a day's events still trains and recommends
(nothing per-event or per-user is collected)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pyspark.sql import functions as F

from sparkrec import stages
from sparkrec.registry import load_model
from sparkrec.synthetic import DirtRates, synthetic_events, synthetic_items, write_landing_day
from sparkrec.tables import read_table
from tests.conftest import NIGHTLY_SETTINGS, SAMPLE_DAY, copy_sample, make_config
from tests.helpers import assert_lists_contract

pytestmark = pytest.mark.slow  # each test runs a nightly of its own


def test_a_catalogue_above_the_dense_limit_runs_the_whole_nightly_on_item_knn(
    spark, sample_snapshot, tmp_path, mlflow_db
) -> None:
    config = copy_sample(sample_snapshot, tmp_path, mlflow_db, *NIGHTLY_SETTINGS, "experiment.ease_max_items=100")
    result = stages.run_nightly(spark, config, SAMPLE_DAY)
    loaded, version = load_model(config, config.mlflow.champion_alias)
    assert loaded.spec.ranker is not None and loaded.spec.ranker.collaborative == "knn"
    assert 0.0 < result["evaluate"]["metrics"]["two_tower"]["ndcg@10"] <= 1.0  # evaluated, then promoted
    users = assert_lists_contract(spark, config, SAMPLE_DAY, config.recommend.k)
    assert len(users) == result["recommend"]["users"] > 100
    served = read_table(spark, config, "recommendations").where(F.col("ds") == F.lit(SAMPLE_DAY))
    assert {r[0] for r in served.select("model_version").distinct().collect()} == {version}


DAYS = ["2024-06-01", "2024-06-02", "2024-06-03", "2024-06-04", "2024-06-05"]


def test_a_driver_that_may_receive_less_than_a_day_s_events_still_trains_and_recommends(
    spark, tmp_path, mlflow_db
) -> None:
    config = make_config(tmp_path, mlflow_db, *NIGHTLY_SETTINGS, "train.epochs=1")
    clean = DirtRates(0, 0, 0, 0, 0, 0, 0, 0, 0)
    for n, day in enumerate(DAYS):
        events = synthetic_events(spark, 30_000, day, users=2_000, items=200, seed=n + 1, dirt=clean, partitions=2)
        write_landing_day(events, config.landing.root, day)
    write_landing_day(synthetic_items(spark, 200, DAYS[0]), config.landing.root, DAYS[0], kind="items")
    stages.run_clean(spark, config, DAYS[:-1])
    stages.run_embed(spark, config, DAYS[-2])
    day = read_table(spark, config, "interactions").where(F.col("event_date") == F.lit(DAYS[-2]))
    day_bytes = day.select(F.sum(F.length(F.to_json(F.struct("*"))))).collect()[0][0]
    assert day_bytes > 2 * 2**20  # a day's events (as JSON) are over twice the limit below
    out = subprocess.run(
        [
            sys.executable, "-m", "sparkrec.cli", "nightly", "--date", DAYS[-1],
            f"--set=lakehouse.root={config.lakehouse.root}",
            f"--set=landing.root={config.landing.root}",
            f"--set=mlflow.tracking_uri={config.mlflow.tracking_uri}",
            f"--set=mlflow.experiment={config.mlflow.experiment}",
            f"--set=mlflow.registered_model={config.mlflow.registered_model}",
            *(f"--set={s}" for s in (*NIGHTLY_SETTINGS, "train.epochs=1")),
            "--set=spark.master=local[2]",
            "--set=spark.show_progress=false",
            "--set=spark.conf.spark.driver.maxResultSize=1m",
            # a broadcast join's small side passes through the driver: it must stay under the limit too
            "--set=spark.conf.spark.sql.autoBroadcastJoinThreshold=256k",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable},
    )  # fmt: skip
    assert out.returncode == 0, "\n".join(line for line in out.stderr.splitlines() if "\tat " not in line)[-3000:]
    served = read_table(spark, config, "recommendations").where(F.col("ds") == F.lit(DAYS[-1]))
    assert served.select("user_id").distinct().count() > 1_000
