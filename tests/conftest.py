"""One Delta-enabled SparkSession for the whole run, a fresh table root per test, and the bundled
sample prepared once per run: tests copy the state they need and never share what they change.

- ``sample_snapshot`` (session): the Online Retail sample's first days imported, cleaned and
  embedded; ``sample`` copies it for one test (its landing zone also holds ``SAMPLE_DAY``).
- ``nightly_snapshot`` (session): that copy after the nightly run of ``SAMPLE_DAY`` (tables, MLflow
  store and registered model); ``nightly`` copies it for one test.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sparkrec.config import Config, load_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("SPARKREC_SPARK_LOG_LEVEL", "ERROR")

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "online-retail" / "online_retail_2010-12.csv.gz"
# The cut of the sample the tests run on: five landing days cleaned, the sixth left for the nightly run.
SAMPLE_DAYS = ["2010-12-01", "2010-12-02", "2010-12-03", "2010-12-05", "2010-12-06"]
SAMPLE_DAY = "2010-12-07"
NIGHTLY_SETTINGS = ["evaluate.holdout_days=2", "train.epochs=2", "train.num_processes=2"]


def make_config(root: Path, mlflow_db: Path, *extra: str) -> Config:
    """The test config: everything under ``root``, small Spark settings, quick training, MLflow names
    of its own (``extra`` overrides any of it)."""
    name = uuid.uuid4().hex[:8]
    return load_config(
        None,
        [
            "spark.master=local[2]",
            "spark.shuffle_partitions=2",
            "spark.driver_memory=2g",
            "spark.show_progress=false",
            f"lakehouse.root={root / 'lakehouse'}",
            f"landing.root={root / 'landing'}",
            f"mlflow.tracking_uri=sqlite:///{mlflow_db}",
            f"mlflow.artifact_location={root / 'mlartifacts'}",
            f"mlflow.experiment=test-{name}",
            f"mlflow.registered_model=test_model_{name}",
            "train.epochs=2",
            "train.batch_size=64",
            "train.model.dim=16",
            *extra,
        ],
    )


@pytest.fixture(scope="session")
def mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow") / "mlflow.db"


@pytest.fixture(scope="session")
def spark(tmp_path_factory: pytest.TempPathFactory, mlflow_db: Path):
    from sparkrec.session import build_session

    session = build_session(make_config(tmp_path_factory.mktemp("session"), mlflow_db))
    yield session
    session.stop()


@pytest.fixture
def config(tmp_path: Path, mlflow_db: Path) -> Config:
    return make_config(tmp_path, mlflow_db)


@pytest.fixture(scope="session")
def sample_snapshot(spark, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root with ``landing/`` (the whole sample) and ``lakehouse/`` (``SAMPLE_DAYS`` cleaned and
    embedded). Read-only: copy it with ``sample``."""
    from sparkrec import stages
    from sparkrec.adapters.online_retail import import_online_retail

    root = tmp_path_factory.mktemp("sample")
    config = make_config(root, root / "mlflow.db")
    import_online_retail(SAMPLE, config.landing.root)
    stages.run_clean(spark, config, SAMPLE_DAYS)
    stages.run_embed(spark, config, SAMPLE_DAYS[-1])
    return root


def copy_sample(snapshot: Path, dest: Path, mlflow_db: Path, *extra: str) -> Config:
    """A config over a copy of ``snapshot``'s lakehouse; the landing zone is shared (read-only)."""
    shutil.copytree(snapshot / "lakehouse", dest / "lakehouse")
    return make_config(dest, mlflow_db, f"landing.root={snapshot / 'landing'}", *extra)


@pytest.fixture
def sample(sample_snapshot: Path, tmp_path: Path, mlflow_db: Path) -> Config:
    """This test's own copy of the cleaned and embedded sample."""
    return copy_sample(sample_snapshot, tmp_path, mlflow_db)


@dataclass(frozen=True)
class Nightly:
    """A test's copy of the sample after the nightly run of ``SAMPLE_DAY``."""

    config: Config
    result: dict[str, Any]  # what run_nightly returned
    cli_args: list[str]  # --set arguments that point a sparkrec command at this copy

    def __iter__(self):  # config, result, cli_args = nightly
        return iter((self.config, self.result, self.cli_args))


@pytest.fixture(scope="session")
def nightly_snapshot(spark, sample_snapshot: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The nightly run of ``SAMPLE_DAY`` on a copy of the sample, with its own MLflow store."""
    from sparkrec import stages

    root = tmp_path_factory.mktemp("nightly")
    config = copy_sample(sample_snapshot, root, root / "mlflow.db", *NIGHTLY_SETTINGS)
    result = stages.run_nightly(spark, config, SAMPLE_DAY)
    return root, {"result": result, "names": (config.mlflow.experiment, config.mlflow.registered_model)}


@pytest.fixture
def nightly(spark, nightly_snapshot: tuple[Path, dict], sample_snapshot: Path, tmp_path: Path) -> Nightly:
    """This test's own copy of the nightly run: tables (registered by name in the session) and MLflow
    store (runs, registered model, aliases); the artifacts already logged are read where the run
    wrote them."""
    from sparkrec.session import register_tables

    snapshot, run = nightly_snapshot
    shutil.copytree(snapshot / "lakehouse", tmp_path / "lakehouse")
    shutil.copy(snapshot / "mlflow.db", tmp_path / "mlflow.db")
    experiment, model = run["names"]
    config = make_config(
        tmp_path,
        tmp_path / "mlflow.db",
        f"landing.root={sample_snapshot / 'landing'}",
        f"mlflow.artifact_location={snapshot / 'mlartifacts'}",
        f"mlflow.experiment={experiment}",
        f"mlflow.registered_model={model}",
        *NIGHTLY_SETTINGS,
    )
    register_tables(spark, config)
    cli_args = [
        f"--set=lakehouse.root={config.lakehouse.root}",
        f"--set=landing.root={config.landing.root}",
        f"--set=mlflow.tracking_uri={config.mlflow.tracking_uri}",
        f"--set=mlflow.registered_model={model}",
        "--set=spark.master=local[1]",
        "--set=spark.show_progress=false",
        "--set=spark.driver_memory=1g",
    ]
    return Nightly(config, run["result"], cli_args)
