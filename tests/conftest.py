"""One Delta-enabled SparkSession for the whole run; a fresh table root per test."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from sparkrec.config import Config, load_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("SPARKREC_SPARK_LOG_LEVEL", "ERROR")

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "online-retail" / "online_retail_2010-12.csv.gz"


def make_config(root: Path, mlflow_db: Path, *extra: str) -> Config:
    """The test config: everything under ``root``, small Spark settings, quick training."""
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
