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
    cluster = load_config(Path(__file__).resolve().parents[2] / "conf" / "cluster-local.yaml")
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
    conf = Path(__file__).resolve().parents[2] / "conf"
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


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("recommend.k=0", "recommend.k must be at least 1"),
        ("recommend.k=.inf", "recommend.k must be a finite number"),
        ("train.learning_rate=.nan", "train.learning_rate must be a finite number"),
        ("train.learning_rate=-0.1", "train.learning_rate must be above 0"),
        ("recommend.mmr_lambda=1.5", "recommend.mmr_lambda must be at least 0 and at most 1"),
        ("train.ranker.label_fraction=1", "train.ranker.label_fraction must be above 0 and below 1"),
        ("train.weight_average=1.0", "train.weight_average must be at least 0 and below 1"),
        ("recommend.ranker=deep", "recommend.ranker must be one of learned, retrieval"),
        ("recommend.fallback_segment=none", "recommend.fallback_segment must be one of category, global"),
        ("train.ranker.labels=newest", "train.ranker.labels must be one of latest, random"),
        ("embed.pooling=max", "embed.pooling must be one of mean, cls"),
        ("catalog.metastore=glue", "catalog.metastore must be one of in-memory, hive"),
        ("catalog.database=my-db", "catalog.database must be a name of letters"),
        ("catalog.name=main.x", "catalog.name must be a name of letters, digits and _, or empty"),
        ("catalog.metastore_url=postgres://h/db", "catalog.metastore_url must be a JDBC URL"),
        ("sql_server.port=0", "sql_server.port must be at least 1 and at most 65535"),
        ("spark.driver_memory=lots", "spark.driver_memory must be a size"),
        ("evaluate.holdout_days=-2", "evaluate.holdout_days must be at least 1"),
        ("train.window_days=-1", "train.window_days must be at least 0"),
        ("train.epochs=1e9", "train.epochs must be a number"),
        ("train.epochs=1000000000", "train.epochs must be at least 1 and at most 100000"),
        ("spark.master=[a, b]", "spark.master must be text"),
        ("clean.event_types=[view, [a]]", r"clean.event_types\[1\] must be text"),
        ("clean.event_weights={view: -1}", "clean.event_weights.view must be at least 0"),
        ("experiment.ease_lambdas=[]", "experiment.ease_lambdas needs at least 1 entry"),
        ("experiment.ease_lambdas=[10, -1]", r"experiment.ease_lambdas\[1\] must be above 0"),
        ("experiment.als_grid={rank: [0.5]}", "experiment.als_grid.rank values must be a whole number"),
        ("experiment.als_grid={depth: [1]}", "experiment.als_grid has unknown key 'depth'"),
        ("embed.text_fields=[title, colour]", "'colour', which are not item columns"),
        ("embed.template='{title'", "embed.template .* is not a template"),
        ("maintenance.zorder={orders: [user_id]}", "maintenance.zorder names 'orders'"),
        ("recommend.exclude_file=/nonexistent/list.txt", "recommend.exclude_file /nonexistent/list.txt is not a file"),
        ("embed.model_path=/nonexistent/bert", "embed.model_path /nonexistent/bert is not a model folder"),
        ("recommend.k=[1", "--set recommend.k: '\\[1' is not a YAML value"),
    ],
)
def test_every_bad_value_fails_at_load_naming_its_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_every_number_has_a_range_and_every_mode_its_choices() -> None:
    import dataclasses
    import typing

    from sparkrec.config import Config, settings

    def leaves(cls: type, prefix: str) -> list[tuple[str, dataclasses.Field, object]]:
        hints = typing.get_type_hints(cls, vars(settings))
        out = []
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                out += leaves(hints[f.name], f"{prefix}{f.name}.")
            else:
                out.append((f"{prefix}{f.name}", f, hints[f.name]))
        return out

    fields = leaves(Config, "")
    unbounded = [key for key, f, hint in fields if hint in (int, float) and not f.metadata.get("rule")]
    assert unbounded == []
    modes = {"catalog.metastore", "embed.pooling", "embed.long_text", "embed.cuda_precision", "train.example_history",
             "train.ranker.labels", "recommend.ranker", "recommend.fallback_segment"}  # fmt: skip
    assert all(dict((k, f) for k, f, _ in fields)[key].metadata["rule"].choices for key in modes)


def test_a_broken_file_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("recommend:\n  k: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken.yaml is not valid YAML \(line \d+\)"):
        load_config(tmp_path / "broken.yaml")
    with pytest.raises(ConfigError, match="is not a file"):
        load_config(tmp_path)
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(tmp_path / "list.yaml")


def test_the_defaults_live_in_the_dataclasses_alone() -> None:
    """conf/local.yaml sets only what the embedded default changes: no key repeats its default."""
    import dataclasses

    import yaml

    from sparkrec.config import Config

    defaults = Config().to_dict()

    def repeated(raw: dict, default: dict, prefix: str) -> list[str]:
        out = []
        for key, value in raw.items():
            if isinstance(value, dict) and isinstance(default.get(key), dict) and key != "conf":
                out += repeated(value, default[key], f"{prefix}{key}.")
            elif value == default.get(key) or (isinstance(value, list) and tuple(value) == default.get(key)):
                out.append(prefix + key)
        return out

    local = yaml.safe_load(DEFAULT_CONF.read_text())
    assert repeated(local, defaults, "") == []
    assert dataclasses.asdict(load_config().clean) != defaults["clean"]  # the sample's own cleaning rule is kept


def test_every_shipped_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABRICKS_HOST", "DATABRICKS_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_URI",
                 "MLFLOW_TRACKING_URI", "SPARKREC_BUCKET"):  # fmt: skip
        monkeypatch.setenv(name, "https://example.invalid" if "URI" in name or "HOST" in name else "x")
    conf = Path(__file__).resolve().parents[2] / "conf"
    for path in sorted(conf.glob("*.yaml")):
        load_config(path)


def test_the_configuration_reference_is_current() -> None:
    import subprocess
    import sys

    tool = Path(__file__).resolve().parents[2] / "tools" / "config_reference.py"
    out = subprocess.run([sys.executable, str(tool), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
