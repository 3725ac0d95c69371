"""What several test modules build: training inputs written as Parquet without Spark, and training
settings for the training function run in-process."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sparkrec.config import Config, ModelConfig, RankerConfig, TrainConfig
from sparkrec.loader import ParquetConverter
from sparkrec.models.specs import TrainingParams


def converter(frame: pd.DataFrame, folder: Path) -> str:
    """``frame`` as a Parquet folder, as ``loader.make_converter`` writes one (its JSON)."""
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / "part-00000.parquet")
    return ParquetConverter(str(folder), len(frame)).to_json()


def train_params(checkpoint_dir: Path | None = None, *, ranker: dict[str, Any] | None = None, **settings: Any) -> dict:
    """``TrainingParams`` as the training function takes them: small and quick, no sampled negatives
    and no weight averaging unless asked; ``settings`` are TrainConfig or ModelConfig fields."""
    model_keys = {f.name for f in dataclasses.fields(ModelConfig)}
    base = {"dim": 8, "history_length": 4, "temperature": 0.1, "dropout": 0.2, "sampled_negatives": 0}
    run = {"epochs": 2, "batch_size": 16, "learning_rate": 0.01, "seed": 7, "timeout_s": 60, "weight_average": 0.0}
    model = ModelConfig(**{**base, **{k: v for k, v in settings.items() if k in model_keys}})
    run.update({k: v for k, v in settings.items() if k not in model_keys})
    train = TrainConfig(**run, model=model, ranker=RankerConfig(**(ranker or {})))
    return TrainingParams(train, 0, str(checkpoint_dir) if checkpoint_dir else "").to_dict()


def cli_args(config: Config) -> list[str]:
    """The ``--set`` arguments that point a ``sparkrec`` command at ``config``'s tables, landing and MLflow."""
    return [
        f"--set=lakehouse.root={config.lakehouse.root}",
        f"--set=landing.root={config.landing.root}",
        f"--set=mlflow.tracking_uri={config.mlflow.tracking_uri}",
        f"--set=mlflow.experiment={config.mlflow.experiment}",
        "--set=spark.show_progress=false",
    ]


def write_landing(config: Config, day: str, lines: list[str], name: str = "part-0.jsonl") -> None:
    folder = Path(config.landing.root) / "events" / f"ds={day}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_items(config: Config, day: str, items: list[dict]) -> None:
    folder = Path(config.landing.root) / "items" / f"ds={day}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "catalog.jsonl").write_text("\n".join(json.dumps(i) for i in items) + "\n", encoding="utf-8")


# Texts with the awkward cases in them: empty, blank, not Latin, emoji, upper case, long.
AWKWARD = [
    "red ceramic coffee mug",
    "",
    "   ",
    "陶瓷咖啡杯，红色",  # Chinese
    "🎁 gift box ✨ with ribbons",
    "WHITE HANGING HEART T-LIGHT HOLDER",
    "a hand painted wooden toy train " * 12,  # about 100 tokens
]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def assert_lists_contract(spark: Any, config: Config, day: str, k: int) -> list[str]:
    """The day's recommendations keep their contract: every active user has k distinct items, ranks
    1..k, none already seen; returns the users."""
    from pyspark.sql import functions as F

    from sparkrec.tables import read_table

    recs = read_table(spark, config, "recommendations").where(F.col("ds") == F.lit(day))
    per_user = recs.groupBy("user_id").agg(
        F.count(F.lit(1)).alias("n"),
        F.countDistinct("item_id").alias("items"),
        F.sort_array(F.collect_list("rank")).alias("ranks"),
    )
    broken = (F.col("n") != k) | (F.col("items") != k) | (F.col("ranks") != F.sequence(F.lit(1), F.lit(k)))
    assert per_user.where(broken).count() == 0
    interactions = read_table(spark, config, "interactions").where(F.col("event_date") <= F.lit(day))
    assert recs.join(interactions.select("user_id", "item_id").distinct(), ["user_id", "item_id"]).count() == 0
    users = sorted(r[0] for r in per_user.select("user_id").collect())
    assert users == sorted(r[0] for r in interactions.select("user_id").distinct().collect())
    return users


def write_recommendations(spark: Any, config: Config, day: str, users: int, k: int = 3) -> int:
    """``users`` lists of ``k`` rows as the recommendations of ``day`` (replacing the day, as the
    recommend stage does); the rows written."""
    import datetime as dt

    from sparkrec import tables
    from sparkrec.schemas import RECOMMENDATIONS, RECOMMENDATIONS_SCHEMA

    when = dt.datetime(2026, 1, 1)
    rows = [
        (dt.date.fromisoformat(day), f"u{u}", r, f"i{u + r}", 1.0 / r, "1", "run", "test:two_tower", when)
        for u in range(users)
        for r in range(1, k + 1)
    ]
    tables.ensure_contract(spark, config, RECOMMENDATIONS)
    df = spark.createDataFrame(rows, RECOMMENDATIONS_SCHEMA)
    tables.replace_partitions(df, config, RECOMMENDATIONS, tables.in_days([day]))
    return len(rows)
