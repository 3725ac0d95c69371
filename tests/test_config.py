from pathlib import Path

import pytest

from sparkrec.config import DEFAULT_CONF, ConfigError, keys_set_in, load_config


def test_defaults_load_with_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config()
    assert config.lakehouse.root == str(tmp_path / "lakehouse")
    assert config.table_path("recommendations") == str(tmp_path / "lakehouse" / "recommendations")
    assert config.landing.root == str(tmp_path / "landing")
    assert config.mlflow.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    assert config.recommend.k == 10
    assert config.catalog.database == "sparkrec"
    assert config.spark.master == "local[*]"


def test_overrides_types_and_nested_keys() -> None:
    config = load_config(
        None,
        [
            "recommend.k=20",
            "train.model.dim=8",
            "spark.conf.spark.executor.memory=2g",
            "clean.event_types=view,purchase",
            "lakehouse.root=s3a://bucket/lake",
        ],
    )
    assert config.recommend.k == 20
    assert config.train.model.dim == 8
    assert config.spark.conf["spark.executor.memory"] == "2g"
    assert config.clean.event_types == ("view", "purchase")
    assert config.lakehouse.root == "s3a://bucket/lake"  # URIs are left as they are


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("recommend.kk=3", "unknown config key"),
        ("recommend.k=ten", "must be a number"),
        ("recommend.k=2.5", "whole number"),
        ("train.local_mode=maybe", "true or false"),
        ("no_equals_sign", "key=value"),
    ],
)
def test_bad_values_are_clear_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_secrets_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text("mlflow:\n  tracking_uri: ${TRACKING_URI_FOR_TEST}\n")
    with pytest.raises(ConfigError, match="TRACKING_URI_FOR_TEST"):
        load_config(conf)
    monkeypatch.setenv("TRACKING_URI_FOR_TEST", "https://mlflow.example")
    assert load_config(conf).mlflow.tracking_uri == "https://mlflow.example"


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")


def test_a_file_extends_another_and_changes_only_what_it_sets(tmp_path: Path) -> None:
    local = load_config()
    cluster = load_config(Path(__file__).resolve().parent.parent / "conf" / "cluster-local.yaml")
    assert cluster.clean == local.clean and cluster.lakehouse == local.lakehouse and cluster.mlflow == local.mlflow
    assert cluster.spark.master == "" and not cluster.train.local_mode and cluster.train.num_processes == 2
    # spark.conf is merged key by key: the base file's settings stay unless the top file sets them.
    assert (
        cluster.spark.conf["spark.sql.adaptive.enabled"] == "true" and cluster.spark.conf["spark.executor.cores"] == "1"
    )
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nrecommend:\n  k: 5\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="loop"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("recommend:\n  k: 7\n  candidates: 50\n")
    config = load_config(tmp_path / "a.yaml")
    assert (config.recommend.k, config.recommend.candidates) == (5, 50)


def test_the_keys_a_user_file_sets_are_those_above_the_project_defaults(tmp_path: Path) -> None:
    conf = Path(__file__).resolve().parent.parent / "conf"
    cluster = keys_set_in(conf / "cluster-local.yaml")
    assert {"spark.master", "train.num_processes", "train.local_mode", "spark.conf.spark.executor.cores"} <= set(
        cluster
    )
    assert "train.epochs" not in cluster and "clean" not in " ".join(cluster)  # local.yaml's own keys are defaults
    assert keys_set_in(DEFAULT_CONF) == ()
    (tmp_path / "mine.yaml").write_text(f"extends: {conf / 'cluster-local.yaml'}\ntrain:\n  example_history: others\n")
    assert set(keys_set_in(tmp_path / "mine.yaml")) == {*cluster, "train.example_history"}
    (tmp_path / "alone.yaml").write_text("recommend:\n  k: 5\n  gate: {}\n")
    assert keys_set_in(tmp_path / "alone.yaml") == ("recommend.gate", "recommend.k")


def test_training_files_need_a_mounted_path() -> None:
    assert load_config(None, ["lakehouse.root=/data/lake"]).shared_path("_staging") == Path("/data/lake/_staging")
    config = load_config(None, ["lakehouse.root=s3a://bucket/lake"])
    with pytest.raises(ConfigError, match="train.shared_root"):
        config.shared_path("_staging")
    config = load_config(None, ["lakehouse.root=s3a://bucket/lake", "train.shared_root=/mnt/nfs/sparkrec"])
    assert config.shared_path("_checkpoints") == Path("/mnt/nfs/sparkrec/_checkpoints")
