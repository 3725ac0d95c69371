"""End to end: the nightly job on a small cut of the bundled sample, on the real components. Each
test reads or changes its own copy of the run (the ``nightly`` fixture)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient
from pyspark.sql import functions as F

from sparkrec import stages
from sparkrec.catalog import item_catalog
from sparkrec.serving import two_tower_scorer
from sparkrec.tables import read_table
from sparkrec.trainer import fit_two_tower
from tests.conftest import SAMPLE_DAY
from tests.helpers import assert_lists_contract

DAY = SAMPLE_DAY


def test_every_active_user_gets_k_distinct_unseen_items(spark, nightly) -> None:
    config, result, _ = nightly
    users = assert_lists_contract(spark, config, DAY, config.recommend.k)
    assert len(users) == result["recommend"]["users"] > 100
    recs = read_table(spark, config, "recommendations").where(F.col("ds") == F.lit(DAY))
    inactive = read_table(spark, config, "items").where(~F.col("active")).select("item_id")
    assert recs.join(inactive, "item_id").count() == 0
    assert recs.where(F.isnan("score") | F.col("model_version").isNull()).count() == 0


def test_rerunning_recommend_replaces_the_day(spark, nightly) -> None:
    config, result, _ = nightly
    table = read_table(spark, config, "recommendations")
    before = table.where(F.col("ds") == F.lit(DAY)).select("user_id", "rank", "item_id").collect()
    again = stages.run_recommend(spark, config, DAY)
    after = read_table(spark, config, "recommendations").where(F.col("ds") == F.lit(DAY))
    assert sorted(after.select("user_id", "rank", "item_id").collect()) == sorted(before)
    assert after.select("run_id").distinct().collect()[0][0] == again["run_id"] != result["recommend"]["run_id"]


def test_evaluation_is_logged_to_mlflow_and_run_metrics(spark, nightly) -> None:
    config, result, _ = nightly
    rows = read_table(spark, config, "run_metrics").where((F.col("stage") == "evaluate") & (F.col("ds") == F.lit(DAY)))
    got = {(r["source"], r["metric"]) for r in rows.collect()}
    for source in ("two_tower", "popularity"):
        assert {(source, "ndcg@10"), (source, "recall@10")} <= got
    run = MlflowClient(config.mlflow.tracking_uri).get_run(result["evaluate"]["run_id"])
    assert run.data.metrics["popularity.ndcg_at_10"] == pytest.approx(
        result["evaluate"]["metrics"]["popularity"]["ndcg@10"]
    )
    assert 0.0 <= run.data.metrics["two_tower.recall_at_10"] <= 1.0
    assert run.data.params["table_version.interactions"] != "absent"
    assert run.data.tags["mlflow.source.git.commit"]
    assert run.data.tags["mlflow.parentRunId"]  # nested under the nightly run
    assert ("gate", "promoted") in got
    for source in ("two_tower", "popularity"):
        assert {
            (source, m) for m in ("map", "map@10", "mrr@10", "hit@10", "coverage@10", "diversity@10", "novelty@10")
        } <= got
    plots = {a.path for a in MlflowClient(config.mlflow.tracking_uri).list_artifacts(run.info.run_id, "plots")}
    assert {"plots/metrics.png", "plots/metrics_at_k.png", "plots/recommended_popularity.png"} <= plots


def test_model_is_registered_with_its_vocabulary(spark, nightly) -> None:
    config, result, _ = nightly
    client = MlflowClient(config.mlflow.tracking_uri)
    version = client.get_model_version_by_alias(config.mlflow.registered_model, config.recommend.model_alias)
    assert str(version.version) == result["train"]["model_version"]
    train_run = client.get_run(result["train"]["run_id"])
    assert [m.step for m in client.get_metric_history(train_run.info.run_id, "loss")] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(train_run.info.run_id)} | {
        a.path for a in client.list_artifacts(train_run.info.run_id, "plots")
    }
    assert {"config.json", "plots/loss.png"} <= artifacts
    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{config.mlflow.registered_model}@{config.recommend.model_alias}")
    import pandas as pd

    top = model.predict(pd.DataFrame({"history": [["85123A", "71053"]]}), params={"k": 5})
    assert len(top["item_ids"][0]) == 5 and all(isinstance(i, str) for i in top["item_ids"][0])
    assert not {"85123A", "71053"} & set(top["item_ids"][0])  # the history is not recommended back


def test_the_towers_read_the_text_vectors_a_part_at_a_time_as_from_one_matrix(spark, nightly, monkeypatch) -> None:
    from sparkrec import catalog as catalog_module
    from sparkrec.registry import load_model
    from sparkrec.serving import catalogue_text

    config, _, _ = nightly
    loaded, _ = load_model(config, config.recommend.model_alias)
    catalog = item_catalog(spark, config)
    whole = two_tower_scorer(spark, config, loaded, catalog, catalogue_text(spark, config, loaded, catalog))
    monkeypatch.setattr(catalog_module, "COLLECT_BYTES", 40 * 384 * 4)  # parts of about 40 items
    parted = two_tower_scorer(spark, config, loaded, catalog)
    assert len(catalog.item_ids) > 200 and np.allclose(parted.item_vectors, whole.item_vectors, atol=1e-6)


# Another session by name: the SQL server test reads them from other processes in the default run.
@pytest.mark.slow
def test_a_new_session_reads_the_tables_by_name(nightly, capsys) -> None:
    config, _, cli_args = nightly
    query = (
        f"SELECT count(DISTINCT user_id) AS users, max(rank) AS k FROM sparkrec.recommendations WHERE ds = DATE'{DAY}'"
    )
    out = subprocess.run(
        [sys.executable, "-m", "sparkrec.cli", "sql", query, *cli_args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    row = [line for line in out.stdout.splitlines() if line.startswith("|") and "users" not in line][0]
    users, k = (int(x) for x in row.strip("|").split("|"))
    assert k == config.recommend.k and users > 100
    from sparkrec.cli import main

    for wrong in ("SELECT * FROM sparkrec.nope", "SELECT nope FROM sparkrec.recommendations"):
        assert main(["sql", wrong, *cli_args]) == 2
        err = capsys.readouterr().err
        assert "SQL error" in err and "Traceback" not in err and "at org.apache.spark" not in err, err[-2000:]


@pytest.mark.slow  # a training run of its own; tests/unit/test_registry.py checks the gate's rule quickly
def test_a_worse_model_is_not_promoted_and_the_champion_stays_served(spark, nightly) -> None:
    import dataclasses

    config, result, _ = nightly
    champion = result["train"]["model_version"]
    assert result["evaluate"]["promoted"] and result["evaluate"]["champion_version"] == champion
    # learning rate 0: the towers stay at their random start, and without a ranker they are the whole model
    # (a ranker at its random start still weighs EASE and popularity, which can beat a model by luck)
    worse = dataclasses.replace(
        config,
        train=dataclasses.replace(
            config.train, epochs=1, learning_rate=0.0, ranker=dataclasses.replace(config.train.ranker, enabled=False)
        ),
    )
    trained = stages.run_train(spark, worse, DAY)
    evaluated = stages.run_evaluate(spark, worse, DAY)
    metrics = evaluated["metrics"]
    assert metrics["two_tower"]["ndcg@10"] < metrics["champion"]["ndcg@10"]
    assert not evaluated["promoted"]
    assert evaluated["champion_version"] == champion != trained["model_version"]
    client = MlflowClient(config.mlflow.tracking_uri)
    tags = client.get_model_version(config.mlflow.registered_model, trained["model_version"]).tags
    assert tags["promotion"].startswith("rejected")
    assert stages.run_recommend(spark, worse, DAY)["model_version"] == champion


def test_recommendations_table_contract(spark, nightly) -> None:
    config, result, _ = nightly
    from sparkrec.ranking import FALLBACK_CATEGORY, FALLBACK_GLOBAL
    from sparkrec.schemas import COLUMN_COMMENTS, TABLE_PROPERTIES

    detail = spark.sql("DESCRIBE DETAIL sparkrec.recommendations").first()
    assert detail["partitionColumns"] == ["ds"]
    assert TABLE_PROPERTIES["recommendations"].items() <= detail["properties"].items()
    assert "Top-k items per active user" in detail["description"]
    comments = {f.name: f.metadata.get("comment") for f in spark.table("sparkrec.recommendations").schema.fields}
    assert comments == COLUMN_COMMENTS["recommendations"]
    latest = spark.sql("SELECT DISTINCT ds FROM sparkrec.recommendations_latest").collect()
    assert [str(r["ds"]) for r in latest] == [DAY]
    recs = read_table(spark, config, "recommendations").where(F.col("ds") == F.lit(DAY))
    sources = {r[0] for r in recs.select(F.split("reason", ":")[0]).distinct().collect()}
    assert sources == {"two_tower+dcn", "fallback"}  # the towers' candidates, re-scored by the learned ranker
    assert {
        r[0] for r in recs.where(F.col("reason").startswith("fallback:")).select("reason").distinct().collect()
    } <= {FALLBACK_CATEGORY, FALLBACK_GLOBAL}
    # a model row names the history item that explains it: one the user interacted with positively
    explained = recs.where(F.col("reason").startswith("two_tower+dcn:history=")).select(
        "user_id", F.substring_index("reason", "=", -1).alias("item_id")
    )
    assert explained.count() == recs.where(F.col("reason").startswith("two_tower")).count()
    positives = (
        read_table(spark, config, "interactions")
        .where((F.col("event_date") <= F.lit(DAY)) & (F.col("weight") > 0))
        .select("user_id", "item_id")
        .distinct()
    )
    assert explained.join(positives, ["user_id", "item_id"], "left_anti").count() == 0
    # the fallback flag marks exactly the users without a positive event on a catalogue item
    interactions = read_table(spark, config, "interactions").where(F.col("event_date") <= F.lit(DAY))
    with_history = interactions.where(F.col("weight") > 0).select("user_id").distinct()
    fallback = recs.where(F.col("reason").startswith("fallback:")).select("user_id").distinct()
    assert fallback.join(with_history, "user_id").count() == 0
    assert recs.select("user_id").distinct().join(with_history, "user_id", "left_anti").count() == fallback.count()
    assert result["recommend"]["fallback_users"] == fallback.count()
    assert result["recommend"]["gate.user_coverage"] == 1.0


def test_delta_rs_reads_the_table_without_spark(spark, nightly) -> None:
    from deltalake import DeltaTable

    config, _, _ = nightly
    table = DeltaTable(config.table_path("recommendations"))
    assert table.metadata().partition_columns == ["ds"]
    frame = table.to_pandas(filters=[("ds", "=", dt.date.fromisoformat(DAY))])
    want = read_table(spark, config, "recommendations").where(F.col("ds") == F.lit(DAY))
    assert len(frame) == want.count() > 0
    assert set(zip(frame["user_id"], frame["rank"], frame["item_id"], strict=True)) == {
        (r["user_id"], r["rank"], r["item_id"]) for r in want.select("user_id", "rank", "item_id").collect()
    }
    assert table.version() == spark.sql("DESCRIBE HISTORY sparkrec.recommendations").agg(F.max("version")).first()[0]


def test_a_failing_publish_gate_keeps_the_previous_day_served(spark, nightly) -> None:
    import dataclasses

    from sparkrec.publish import PublishGateError
    from sparkrec.tables import table_version

    config, _, _ = nightly
    next_day = "2010-12-08"
    strict = dataclasses.replace(
        config,
        recommend=dataclasses.replace(
            config.recommend, gate=dataclasses.replace(config.recommend.gate, max_row_change=-1.0)
        ),
    )
    before = table_version(spark, config, "recommendations")
    with pytest.raises(
        PublishGateError, match=f"publish gate failed for {next_day} \\(the lists of {DAY} stay served\\)"
    ):
        stages.run_recommend(spark, strict, next_day)
    assert table_version(spark, config, "recommendations") == before
    assert [str(r[0]) for r in spark.sql("SELECT DISTINCT ds FROM sparkrec.recommendations_latest").collect()] == [DAY]
    gate = {
        r["metric"]: r["value"]
        for r in read_table(spark, config, "run_metrics")
        .where((F.col("stage") == "recommend") & (F.col("ds") == F.lit(next_day)))
        .collect()
    }
    assert gate["gate.row_change"] == 0.0 and gate["gate.user_coverage"] == 1.0


@pytest.mark.slow
def test_a_model_promoted_today_is_put_back_when_todays_lists_fail_the_gate(spark, nightly) -> None:
    import dataclasses

    from sparkrec.publish import PublishGateError
    from sparkrec.registry import alias_version
    from sparkrec.tables import replace_partitions

    config, result, _ = nightly
    first = result["train"]["model_version"]
    # Any candidate passes the promotion gate; the publish gate then refuses every list.
    lenient = dataclasses.replace(
        config,
        train=dataclasses.replace(config.train, epochs=1),
        evaluate=dataclasses.replace(config.evaluate, promotion_tolerance=1.0),
    )
    second = stages.run_train(spark, lenient, DAY)["model_version"]
    assert stages.run_evaluate(spark, lenient, DAY)["promoted"]
    assert alias_version(config, config.mlflow.champion_alias) == second != first
    # A day before with lists to compare with: the row-change check then fails for any list.
    before = (dt.date.fromisoformat(DAY) - dt.timedelta(days=1)).isoformat()
    served = read_table(spark, config, "recommendations").withColumn("ds", F.date_sub("ds", 1))
    replace_partitions(served, config, "recommendations", f"ds = DATE'{before}'")
    strict = dataclasses.replace(
        config,
        recommend=dataclasses.replace(
            config.recommend, gate=dataclasses.replace(config.recommend.gate, max_row_change=-1.0)
        ),
    )
    with pytest.raises(PublishGateError, match=f"@champion is back on version {first}, not the version {second}"):
        stages.run_recommend(spark, strict, DAY)
    assert alias_version(config, config.mlflow.champion_alias) == first
    tags = MlflowClient(config.mlflow.tracking_uri).get_model_version(config.mlflow.registered_model, second).tags
    assert tags["promotion"] == f"reverted: the lists of {DAY} failed the publish gate"
    assert stages.run_recommend(spark, config, DAY)["model_version"] == first


def test_exclusions_and_seen_window_then_rollback(spark, nightly, tmp_path, caplog) -> None:
    import dataclasses
    import logging

    from sparkrec.cli import main
    from sparkrec.tables import table_version

    config, _, cli_args = nightly
    recs = read_table(spark, config, "recommendations").where(F.col("ds") == F.lit(DAY))
    before = sorted(recs.select("user_id", "rank", "item_id").collect())
    top = [r["item_id"] for r in recs.groupBy("item_id").count().orderBy(F.desc("count"), "item_id").limit(3).collect()]
    exclude_file = tmp_path / "exclude.txt"
    exclude_file.write_text(f"# promotions that ended\n{top[1]}\n{top[2]}  # comment\n")
    ruled = dataclasses.replace(
        config,
        recommend=dataclasses.replace(
            config.recommend,
            exclude_items=(top[0],),
            exclude_file=str(exclude_file),
            seen_window_days=1,
            mmr_lambda=0.7,
            max_per_category=2,
        ),
    )
    version_before = table_version(spark, config, "recommendations")
    caplog.set_level(logging.INFO, logger="sparkrec")
    stages.run_recommend(spark, ruled, DAY)
    # the sample's catalogue has neither in_stock nor categories: those rules are skipped, and said so
    assert "rule out_of_stock skipped" in caplog.text and "rule max_per_category" in caplog.text
    assert "rule exclusion_list: 3 listed items, 3 in the catalogue" in caplog.text
    after = read_table(spark, config, "recommendations").where(F.col("ds") == F.lit(DAY))
    assert after.where(F.col("item_id").isin(top)).count() == 0
    per_user = after.groupBy("user_id").agg(F.count(F.lit(1)).alias("n"), F.countDistinct("item_id").alias("items"))
    assert per_user.where((F.col("n") != config.recommend.k) | (F.col("items") != F.col("n"))).count() == 0
    # with only the last day's items removed, items a user saw earlier may come back
    interactions = read_table(spark, config, "interactions").where(F.col("event_date") < F.lit(DAY))
    assert after.join(interactions.select("user_id", "item_id").distinct(), ["user_id", "item_id"]).count() > 0
    assert main(["rollback", "--table", "recommendations", "--to-version", str(version_before), *cli_args]) == 0
    restored = read_table(spark, config, "recommendations").where(F.col("ds") == F.lit(DAY))
    assert sorted(restored.select("user_id", "rank", "item_id").collect()) == before
    assert table_version(spark, config, "recommendations") == version_before + 2  # RESTORE is a new version
    assert main(["rollback", "--table", "recommendations", "--to-version", "999", *cli_args]) == 2
    assert main(["rollback", "--table", "nope", "--to-version", "0", *cli_args]) == 2


@pytest.mark.slow
def test_maintenance_compacts_and_vacuums(spark, nightly, capsys) -> None:
    import json

    from sparkrec.cli import main
    from sparkrec.locks import day_locks

    config, _, cli_args = nightly
    rows = read_table(spark, config, "recommendations").count()
    maintain = ["maintain", "--table", "recommendations", "--retain-hours", "0", *cli_args]
    assert main(maintain) == 2  # below Delta's 168 hours only with --force
    assert "add --force" in capsys.readouterr().err
    lock = Path(config.lakehouse.root) / "_locks" / f"ds={DAY}.lock"
    with day_locks(config, [DAY], "nightly"):
        assert lock.is_file() and main([*maintain, "--force"]) == 2  # never while a run holds a day
    assert "a run is writing" in capsys.readouterr().err and not lock.exists()
    assert main([*maintain, "--force"]) == 0
    report = json.loads(capsys.readouterr().out)["recommendations"]
    assert report["files_after"] <= 2  # one Z-ordered file per partition
    assert read_table(spark, config, "recommendations").count() == rows
    ops = [r["operation"] for r in spark.sql("DESCRIBE HISTORY sparkrec.recommendations").collect()]
    assert "OPTIMIZE" in ops and "VACUUM END" in ops
    assert main(["rollback", "--table", "recommendations", "--to-version", "1", *cli_args]) == 2  # files vacuumed


@pytest.mark.slow  # starts training processes of its own
def test_a_failing_training_process_is_one_clear_error(spark, nightly) -> None:
    import dataclasses

    from sparkrec.models.training import TrainingFailedError

    config, _, _ = nightly
    impossible = dataclasses.replace(config, train=dataclasses.replace(config.train, batch_size=10**7, epochs=1))
    with pytest.raises(
        TrainingFailedError,
        match=r"training failed after 0 finished epoch\(s\) .*lower "
        r"train.batch_size.*no epoch finished, so a re-run starts over",
    ):
        stages.run_train(spark, impossible, DAY)


@pytest.mark.slow  # a three-epoch training run of its own
def test_train_stage_early_stopping_logs_validation_loss(spark, nightly) -> None:
    import dataclasses

    config, _, _ = nightly
    stopping = dataclasses.replace(
        config, train=dataclasses.replace(config.train, epochs=3, patience=1, validation_fraction=0.2, num_processes=1)
    )
    result = stages.run_train(spark, stopping, DAY)
    client = MlflowClient(config.mlflow.tracking_uri)
    run = client.get_run(result["run_id"])
    val = client.get_metric_history(result["run_id"], "val_loss")
    assert 1 <= len(val) <= 3 and len(val) == len(client.get_metric_history(result["run_id"], "loss"))
    assert int(run.data.params["best_epoch"]) == 1 + min(range(len(val)), key=lambda i: val[i].value)
    assert int(run.data.params["validation_examples"]) > 0
    assert not list((Path(config.lakehouse.root) / "_checkpoints" / "train").glob("*/last.pt"))  # cleaned up


@pytest.mark.slow  # a training run of its own
def test_an_extra_item_vector_column_is_trained_on_and_read_again_when_serving(spark, nightly, tmp_path) -> None:
    import dataclasses

    from sparkrec.registry import load_model

    config, _, _ = nightly
    ids = [r[0] for r in read_table(spark, config, "items").select("item_id").orderBy("item_id").collect()]
    rng = np.random.default_rng(0)
    vectors = {item: rng.standard_normal(4).tolist() for item in ids[:-5]}  # the last 5 items have none
    source = tmp_path / "image_vectors"

    def write(rows: dict[str, list[float]]) -> None:
        spark.createDataFrame(list(rows.items()), "item_id string, image array<double>").write.mode(
            "overwrite"
        ).parquet(str(source))

    write(vectors)
    model = dataclasses.replace(config.train.model, item_vectors={"image": str(source)})
    extra = dataclasses.replace(
        config,
        train=dataclasses.replace(
            config.train,
            model=model,
            epochs=1,
            num_processes=1,
            ranker=dataclasses.replace(config.train.ranker, enabled=False),
        ),
    )
    stages.run_train(spark, extra, DAY)
    loaded, _ = load_model(extra, config.mlflow.candidate_alias)
    assert loaded.spec.extra_columns == {"image": 4} and loaded.model.item_extra.shape[1] == 4
    catalog = item_catalog(spark, extra)
    before = two_tower_scorer(spark, extra, loaded, catalog).item_vectors
    assert np.isfinite(before).all()

    changed = ids[0]
    write({**vectors, changed: [5.0, -5.0, 5.0, -5.0]})  # the source is read again when serving
    after = two_tower_scorer(spark, extra, loaded, catalog).item_vectors
    moved = ~np.isclose(before, after, atol=1e-6).all(axis=1)
    assert moved.tolist() == [item == changed for item in catalog.item_ids]

    write({**vectors, changed: [1.0, 2.0]})
    with pytest.raises(
        ValueError, match=r"train.model.item_vectors.image .* has 2-d vectors but the model expects 4-d"
    ):
        two_tower_scorer(spark, extra, loaded, catalog)
    with pytest.raises(ValueError, match=r"vectors must all have one size, found sizes \[2, 4\]"):
        stages.run_train(spark, extra, DAY)


@pytest.mark.slow  # a training run of its own; tests/spark/test_encoding_paths.py checks the same encoding quickly
def test_views_beside_purchases_reach_the_user_tower_from_training_to_serving(spark, nightly) -> None:
    import dataclasses

    from sparkrec import features
    from sparkrec.models.scoring import to_matrix_rows, top_k, user_block
    from sparkrec.registry import load_model
    from sparkrec.tracking import stage_run

    config, _, _ = nightly
    purchases = features.filter_until(read_table(spark, config, "interactions"), "2010-12-05")
    views = (
        purchases.where(F.col("weight") > 0)
        .sample(0.3, seed=1)  # each viewed an hour before a purchase
        .withColumn("event_id", F.concat(F.lit("view-"), "event_id"))
        .withColumn("event_type", F.lit("view"))
        .withColumn("event_ts", F.col("event_ts") - F.expr("INTERVAL 1 HOUR"))
        .withColumn("weight", F.lit(0.2))
    )
    history = purchases.unionByName(views)
    # a random-holdout protocol's settings: histories of the user's other items, random labels
    typed = dataclasses.replace(
        config,
        train=dataclasses.replace(
            config.train,
            epochs=1,
            num_processes=1,
            example_history="others",
            ranker=dataclasses.replace(config.train.ranker, labels="random"),
        ),
    )
    with stage_run(typed, "train", DAY) as run_id:
        fit_two_tower(spark, typed, history, run_id, "purchases and views")
    loaded, _ = load_model(typed, config.mlflow.candidate_alias)
    assert loaded.spec.event_types == ("purchase", "view")
    assert loaded.spec.user_feature_names == ("activity", "tenure_days")
    assert float(loaded.model.users.event_type.weight[1:].detach().abs().sum()) > 0  # trained
    catalog = item_catalog(spark, typed)
    scorer = two_tower_scorer(spark, typed, loaded, catalog)
    assert scorer.encoding == loaded.spec.encoding
    users = to_matrix_rows(features.to_user_histories(history, loaded.spec.history_length), catalog.index_df)
    recs = top_k(users, scorer, catalog.item_ids, catalog.eligible, 5, 64)
    assert recs.select("user_id").distinct().count() == users.count()
    frame = users.toPandas()
    block = user_block(frame)
    assert any("view" in list(t) for t in block.history_types)
    bought = np.array([len(h) > 0 for h in block.history])
    assert block.user_features.shape == (len(frame), 2) and (block.user_features[bought, 0] > 0).all()
    untyped = dataclasses.replace(block, history_types=None)
    moved = ~np.isclose(scorer.user_vectors(block), scorer.user_vectors(untyped), atol=1e-6).all(axis=1)
    has_view = np.array(["view" in list(t) for t in block.history_types])
    assert moved[has_view].all()
