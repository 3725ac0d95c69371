"""What the training processes read, built by Spark: the ranker's labels split from its context, and
its training lists with their signals, as Parquet."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sparkrec.config import Config, with_values
from sparkrec.encoding import USER_FEATURES, UserEncoding
from sparkrec.features import ranking_split
from sparkrec.loader import ParquetConverter
from sparkrec.models.baselines import EaseTooLargeError, resolved
from sparkrec.models.specs import RankerSpec
from sparkrec.training_data import ranking_lists

MARKED = "user_id string, item_id string, event_ts timestamp, event_id string, event_type string, is_label boolean"


def test_ranking_split_marks_the_latest_share_or_a_seeded_random_share(spark) -> None:
    rows = [(u, f"i{n}", f"2024-01-{n + 1:02d} 00:00:00", f"{u}{n}", 1.0) for u in ("a", "b") for n in range(10)]
    df = spark.createDataFrame(rows, "user_id string, item_id string, event_ts string, event_id string, weight double")
    df = df.selectExpr("user_id", "item_id", "CAST(event_ts AS timestamp) AS event_ts", "event_id", "weight")
    latest = ranking_split(df, "latest", 0.2, 0).where("is_label").orderBy("user_id", "item_id").collect()
    assert [(r["user_id"], r["item_id"]) for r in latest] == [("a", "i8"), ("a", "i9"), ("b", "i8"), ("b", "i9")]
    random_a = ranking_split(df, "random", 0.5, 1).where("is_label").collect()
    random_b = ranking_split(df, "random", 0.5, 1).where("is_label").collect()
    assert sorted(random_a) == sorted(random_b) and 0 < len(random_a) < 20
    with pytest.raises(ValueError, match="train.ranker.labels"):
        ranking_split(df, "newest", 0.2, 0)


def lists_of(spark, config: Config, marked: list[tuple], tmp_path: Path, vocab: list[str]) -> pd.DataFrame:
    vocab_df = spark.createDataFrame([(item, i + 1) for i, item in enumerate(vocab)], "item_id string, idx int")
    text = np.zeros((len(vocab) + 1, 2), dtype=np.float32)
    encoding = UserEncoding(2, ("purchase", "view"), USER_FEATURES)
    spec = resolved(RankerSpec.from_config(config.train), len(text), config.experiment.ease_max_items)
    marked_df = spark.createDataFrame(marked, MARKED)
    converter = ranking_lists(spark, config, marked_df, vocab_df, text, encoding, tmp_path, spec)
    assert converter is not None
    return pd.read_parquet(ParquetConverter.from_json(converter.to_json()).path)


def test_lists_carry_popularity_over_the_contexts_and_over_their_last_days(spark, config: Config, tmp_path: Path):
    """i1 was held by three users weeks ago, i2 by three in the last days; i3 is the label of a and d."""
    day = dt.datetime(2024, 1, 1)
    events = [("a", "i1", 0), ("b", "i1", 1), ("c", "i1", 2), ("b", "i2", 27), ("c", "i2", 29), ("d", "i2", 28)]
    marked = [(u, i, day + dt.timedelta(days=d), f"e{n}", "view", False) for n, (u, i, d) in enumerate(events)]
    marked += [("a", "i3", day + dt.timedelta(days=30), "e8", "purchase", True)]
    marked += [("d", "i3", day + dt.timedelta(days=30), "e9", "purchase", True)]
    config = with_values(config, {"train": {"num_processes": 1, "ranker": {"candidates": 3, "recent_days": 7}}})
    lists = lists_of(spark, config, marked, tmp_path / "recent", ["i1", "i2", "i3"])
    assert len(lists) == 2  # b and c have no label: no list

    def signals(row: int) -> dict[int, tuple[float, float]]:
        r = lists.iloc[row]
        return dict(zip(r["candidates"], zip(r["popularity"], r["recent_popularity"], strict=True), strict=True))

    assert np.allclose(signals(0)[2], [np.log1p(3), np.log1p(3)])  # a's candidate i2: held by b, c, d this week
    assert np.allclose(signals(1)[1], [np.log1p(3), 0.0])  # d's candidate i1: held by a, b, c weeks ago
    assert np.allclose(signals(0)[3], [0.0, 0.0]) and np.allclose(signals(1)[3], [0.0, 0.0])  # labels are no context
    assert lists.iloc[0]["labels"][list(lists.iloc[0]["candidates"]).index(3)] == 1.0
    # the context as serving reads it: a's one item, its type coded, then padding
    assert list(lists.iloc[0]["history"]) == [1, 0] and list(lists.iloc[0]["history_types"]) == [2, 0]
    assert np.allclose(lists.iloc[0]["user_features"], [np.log1p(1), 0.0])
    off = lists_of(spark, with_values(config, {"train": {"ranker": {"recent_days": 0}}}), marked, tmp_path / "off",
                   ["i1", "i2", "i3"])  # fmt: skip
    assert all(not any(r) for r in off["recent_popularity"])
    assert [list(p) for p in off["popularity"]] == [list(p) for p in lists["popularity"]]


def test_beyond_max_lists_a_seeded_sample_of_users_is_kept(spark, config: Config, tmp_path: Path) -> None:
    day = dt.datetime(2024, 1, 1)
    marked = []
    for u in range(30):
        marked += [(f"u{u:02d}", f"i{u % 5}", day, f"c{u}", "view", False)]
        marked += [(f"u{u:02d}", f"i{(u + 1) % 5}", day + dt.timedelta(days=1), f"l{u}", "view", True)]
    vocab = [f"i{j}" for j in range(5)]

    def users(seed: int, folder: str) -> list[list[int]]:
        small = with_values(config, {"train": {"seed": seed, "num_processes": 1, "ranker": {"max_lists": 10}}})
        return sorted(map(list, lists_of(spark, small, marked, tmp_path / folder, vocab)["history"]))

    first = users(1, "a")
    assert len(first) == 10 and users(1, "b") == first


def test_above_the_dense_limit_the_lists_come_from_item_knn_and_forced_ease_is_a_clear_error(
    spark, config, tmp_path: Path
) -> None:
    day = dt.datetime(2024, 1, 1)
    marked = [("u", i, day, i, "view", i == "c") for i in ("a", "b", "c")]
    marked += [("v", i, day, f"v{i}", "view", i == "c") for i in ("a", "c")]
    marked += [("w", i, day, f"w{i}", "view", False) for i in ("b", "c")]
    small = with_values(config, {"train": {"num_processes": 1}, "experiment": {"ease_max_items": 2}})
    lists = lists_of(spark, small, marked, tmp_path / "auto", ["a", "b", "c"])
    # Contexts: u {a, b}, v {a}, w {b, c}; a and b are held by 2 users, c by 1. A walk a -> u -> b
    # weighs 1/2 (u holds two items) over a's 2 users and b's 2 ** damping; b -> w -> c: 1/2 / 2 / 1.
    # u's candidate c scores W[a, c] + W[b, c] = 0 + 1/4; v's b scores W[a, b], its c 0.
    assert len(lists) == 2  # w has no label
    first = sorted((int(r["candidates"][0]), float(r["collaborative"][0])) for _, r in lists.iterrows())
    damping = small.train.ranker.damping
    assert first[0][0] == 2 and np.isclose(first[0][1], 0.25 / 2**damping, rtol=1e-5)
    assert first[1][0] == 3 and np.isclose(first[1][1], 0.25, rtol=1e-5)
    forced = with_values(small, {"train": {"ranker": {"collaborative": "ease"}}})
    with pytest.raises(EaseTooLargeError, match="train.ranker.collaborative: auto"):
        lists_of(spark, forced, marked, tmp_path / "ease", ["a", "b", "c"])
