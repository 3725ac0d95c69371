"""``sparkrec experiment`` end to end on a tiny MovieLens-layout set: all four models, real parts."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from sparkrec.adapters.movielens import import_movielens
from sparkrec.experiment import ExperimentSpec, format_table, run_experiment
from sparkrec.tracking import configure_mlflow
from tests.conftest import make_config
from tests.movielens_fixtures import write_two_communities

K = 5


def experiment_config(root: Path, mlflow_db: Path):
    return make_config(
        root,
        mlflow_db,
        f"experiment.root={root / 'experiments'}",
        f"experiment.mlflow_experiment=experiments-{root.name}",
        f"experiment.registered_model=experiment_model_{root.name}",
        "experiment.als_grid={rank: [4, 8], alpha: [5.0], reg_param: [0.1], max_iter: [5]}",
        "experiment.ease_lambdas=[1.0, 10.0]",
        "evaluate.curve_k=10",
        "train.ranker.candidates=20",
    )


@pytest.fixture(scope="module")
def experiment(spark, tmp_path_factory: pytest.TempPathFactory, mlflow_db: Path):
    """All four models, the seeded ones twice: minutes (make test-all runs the tests that read it)."""
    root = tmp_path_factory.mktemp("experiment")
    config = experiment_config(root, mlflow_db)
    landing = root / "landing"
    import_movielens(write_two_communities(root / "ml"), landing)
    spec = ExperimentSpec(landing=str(landing), split="chrono", holdout_days=3, k=K, repeat=2)
    output = root / "metrics.json"
    return config, run_experiment(spark, config, spec, str(output)), output


# Tunes and trains every baseline (over a minute): with the slow tests.
@pytest.mark.slow
def test_the_baselines_are_tuned_scored_and_logged_on_one_split(spark, tmp_path: Path, mlflow_db: Path) -> None:
    """The quick cut of an experiment: two deterministic baselines."""
    config = experiment_config(tmp_path, mlflow_db)
    landing = tmp_path / "landing"
    import_movielens(write_two_communities(tmp_path / "ml"), landing)
    spec = ExperimentSpec(landing=str(landing), split="chrono", holdout_days=3, k=K, models=("popularity", "ease"))
    result = run_experiment(spark, config, spec, str(tmp_path / "metrics.json"))
    assert list(result["models"]) == ["popularity", "ease"] and result["protocol"]["users_evaluated"] == 40
    assert result["models"]["ease"]["params"]["lambda"] in (1.0, 10.0) and len(result["models"]["ease"]["tuning"]) == 2
    assert result["models"]["ease"][f"ndcg@{K}"] > result["models"]["popularity"][f"ndcg@{K}"]
    assert json.loads((tmp_path / "metrics.json").read_text())["protocol"]["split"] == "chrono"
    configure_mlflow(config)
    runs = mlflow.search_runs(experiment_names=[config.experiment.mlflow_experiment], output_format="list")
    assert {r.data.tags.get("sparkrec.model") for r in runs} >= {"popularity", "ease"}


@pytest.mark.slow
def test_every_model_is_scored_on_the_same_users_and_written_as_json(experiment) -> None:
    config, result, output = experiment
    assert json.loads(output.read_text()) == json.loads(json.dumps(result, default=str))
    protocol = result["protocol"]
    assert (protocol["split"], protocol["holdout_days"], protocol["k"], protocol["dataset"]) == (
        "chrono",
        3,
        K,
        "movielens-latest",
    )
    assert list(result["models"]) == ["sparkrec", "popularity", "als", "ease"]
    for name, metrics in result["models"].items():
        for metric in (
            f"ndcg@{K}",
            f"precision@{K}",
            f"recall@{K}",
            "map",
            f"map@{K}",
            f"mrr@{K}",
            f"coverage@{K}",
            "train_s",
        ):
            assert 0.0 <= metrics[metric] <= (1.0 if metric != "train_s" else 1e4), (name, metric)
        assert metrics["users"] == protocol["users_evaluated"] == 40
    table = format_table(result)
    assert all(f"| {name} | " in table for name in result["models"])


@pytest.mark.slow
def test_seeded_models_repeat_and_deterministic_ones_run_once(experiment) -> None:
    _, result, _ = experiment
    models = result["models"]
    assert models["sparkrec"]["runs"] == models["als"]["runs"] == 2
    assert f"ndcg@{K}_std" in models["sparkrec"] and f"ndcg@{K}_std" in models["als"]
    assert models["popularity"]["runs"] == models["ease"]["runs"] == 1
    assert f"ndcg@{K}_std" not in models["ease"]


@pytest.mark.slow
def test_baselines_are_tuned_on_validation_and_beat_popularity_on_community_data(experiment) -> None:
    _, result, _ = experiment
    for name in ("als", "ease"):
        tuning = result["models"][name]["tuning"]
        key = f"validation_ndcg@{K}"
        best = max(tuning, key=lambda point: point[key])
        assert result["models"][name]["params"] == {k: v for k, v in best.items() if k != key}
    assert [p["lambda"] for p in result["models"]["ease"]["tuning"]] == [1.0, 10.0]
    # Half the users belong to the side popularity ignores; the item-item models see the communities.
    popularity = result["models"]["popularity"][f"ndcg@{K}"]
    assert result["models"]["ease"][f"ndcg@{K}"] > popularity + 0.2
    assert result["models"]["als"][f"ndcg@{K}"] > popularity


@pytest.mark.slow
def test_sparkrec_s_collaborative_score_is_tuned_on_validation_and_trained_with(experiment) -> None:
    config, result, _ = experiment
    sparkrec = result["models"]["sparkrec"]
    key = f"validation_ndcg@{K}"
    assert [p["ranker_ease_lambda"] for p in sparkrec["tuning"]] == [1.0, 10.0]
    chosen = max(sparkrec["tuning"], key=lambda point: point[key])["ranker_ease_lambda"]
    assert sparkrec["params"]["ranker_ease_lambda"] == chosen != config.train.ranker.ease_lambda
    configure_mlflow(config)
    runs = mlflow.search_runs(experiment_names=[config.experiment.mlflow_experiment], output_format="list")
    trained = [r for r in runs if r.info.run_name.startswith("sparkrec seed ")]
    assert len(trained) == 2 and {r.data.params["ranker_ease_lambda"] for r in trained} == {str(chosen)}
    assert {r.data.params["ranker_candidates"] for r in trained} == {"20"}  # the ranker's other settings kept


def test_a_lambda_the_user_sets_is_not_tuned(tmp_path: Path, mlflow_db: Path) -> None:
    from sparkrec.experiment import tunes_collaborative

    config = make_config(tmp_path, mlflow_db)
    spec = ExperimentSpec(landing=str(tmp_path / "landing"))
    assert tunes_collaborative(config, spec)
    assert not tunes_collaborative(config, ExperimentSpec(landing=spec.landing, fixed=("train.ranker.ease_lambda",)))
    assert not tunes_collaborative(config, ExperimentSpec(landing=spec.landing, models=("ease",)))


@pytest.mark.slow
def test_experiments_register_under_their_own_name_and_never_touch_production(experiment) -> None:
    config, _, _ = experiment
    configure_mlflow(config)
    client = MlflowClient()
    versions = client.search_model_versions(f"name='{config.experiment.registered_model}'")
    assert len(versions) == 2  # one per seed
    assert "champion" not in client.get_registered_model(config.experiment.registered_model).aliases
    assert client.search_model_versions(f"name='{config.mlflow.registered_model}'") == []
    runs = mlflow.search_runs(experiment_names=[config.experiment.mlflow_experiment], output_format="list")
    names = {r.info.run_name for r in runs}
    assert {"sparkrec", "popularity", "als", "ease", "clean 2017-07-23", "embed 2017-07-23"} <= names
    parent = next(r for r in runs if r.info.run_name.startswith("experiment "))
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/metrics_at_k.png", "plots/recommended_popularity.png", "plots/metrics.png"} <= artifacts


def test_cold_items_split_holds_out_whole_items_by_a_seeded_hash(spark) -> None:
    from pyspark.sql import functions as F

    from sparkrec.splits import split

    rows = [(f"e{u}-{i}", f"u{u}", f"i{i}") for u in range(30) for i in range(40) if (u + i) % 3]
    df = spark.createDataFrame(rows, "event_id string, user_id string, item_id string")
    train, test = split(df, "cold-items", ratio=0.75, seed=7)
    warm = {r[0] for r in train.select("item_id").distinct().collect()}
    cold = {r[0] for r in test.select("item_id").distinct().collect()}
    assert not warm & cold and len(warm | cold) == 40  # every item on exactly one side
    assert train.count() + test.count() == df.count()
    assert 4 <= len(cold) <= 18  # about a quarter of 40 items
    again, _ = split(df, "cold-items", ratio=0.75, seed=7)
    assert {r[0] for r in again.select("item_id").distinct().collect()} == warm
    other, _ = split(df, "cold-items", ratio=0.75, seed=8)
    assert {r[0] for r in other.select("item_id").distinct().collect()} != warm
    assert test.where(F.col("item_id").isin(list(warm))).count() == 0


def test_the_towers_and_the_ranker_learn_what_the_protocol_hides(tmp_path: Path, mlflow_db: Path) -> None:
    from sparkrec.experiment import experiment_config

    config = make_config(tmp_path, mlflow_db, "train.ranker.candidates=7")
    assert config.train.ranker.recent_days == 7
    for split, history, labels, share, recent in (
        ("chrono", "earlier", "latest", 0.2, 7),
        ("stratified-by-item", "others", "random", 0.05, 0),
        ("random-by-user", "others", "random", 0.05, 0),
        ("cold-items", "others", "random", 0.05, 0),
    ):
        chosen, _ = experiment_config(config, ExperimentSpec(landing=str(tmp_path / "landing"), split=split))
        assert (chosen.train.example_history, chosen.train.ranker.labels) == (history, labels), split
        assert chosen.train.ranker.label_fraction == share, split  # chrono: the config's own
        assert chosen.train.ranker.recent_days == recent, split
        assert chosen.train.ranker.candidates == 7  # the rest of the ranker's settings kept
    mine = make_config(
        tmp_path,
        mlflow_db,
        "train.example_history=earlier",
        "train.ranker.labels=latest",
        "train.ranker.label_fraction=0.3",
        "train.ranker.recent_days=3",
    )
    fixed = ("train.example_history", "train.ranker.labels", "train.ranker.label_fraction", "train.ranker.recent_days")
    chosen, _ = experiment_config(
        mine, ExperimentSpec(landing=str(tmp_path / "landing"), split="cold-items", fixed=fixed)
    )
    assert (chosen.train.example_history, chosen.train.ranker.labels) == ("earlier", "latest")  # the user's --set wins
    assert chosen.train.ranker.label_fraction == 0.3 and chosen.train.ranker.recent_days == 3
