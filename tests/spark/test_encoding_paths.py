"""One encoding of a user, whichever path reads it: a training example, a served history, a ranker's
training list and the MLflow model's input give the user tower the same arrays for the same user.

The user's events hold the awkward cases: two events at the same time (their order is the event
ids'), an item outside the vocabulary, two event types, and a return (no weight)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pyspark.sql import functions as F

from sparkrec.config import Config, with_values
from sparkrec.encoding import USER_FEATURES, EncodedUsers, UserEncoding, encode_users, index_histories
from sparkrec.features import encode_examples, to_training_examples, to_user_histories
from sparkrec.loader import ParquetConverter
from sparkrec.models.packaging import TwoTowerPyfunc, load_model_dir, write_model_dir
from sparkrec.models.scoring import to_matrix_rows, user_block
from sparkrec.models.specs import ModelSpec
from sparkrec.models.two_tower import TwoTower
from sparkrec.training_data import ranking_lists

T0 = dt.datetime(2024, 3, 1, 9, 0)
VOCAB = ["a", "b", "c", "d", "e", "f"]  # index i + 1; "zz" is outside it
ENCODING = UserEncoding(4, ("purchase", "view"), USER_FEATURES)
# (event_id, user, item, type, weight, hours after T0); u's next event is e9, a purchase of e
EVENTS = [
    ("e1", "u", "a", "view", 0.1, 0),
    ("e2", "u", "c", "purchase", 1.0, 5),  # c and b at the same time: b (e3) is the later one
    ("e3", "u", "b", "purchase", 1.0, 5),
    ("e4", "u", "zz", "view", 0.1, 7),
    ("e5", "u", "f", "return", 0.0, 8),
    ("e6", "u", "d", "view", 0.1, 30),
    ("e9", "u", "e", "purchase", 1.0, 40),
    *[(f"o{i}", f"o{i}", item, "purchase", 1.0, i) for i, item in enumerate("dedfae")],
]
SCHEMA = "event_id string, user_id string, item_id string, event_type string, weight double, event_ts timestamp"


@pytest.fixture(scope="module")
def events(spark):
    rows = [(e, u, i, t, w, T0 + dt.timedelta(hours=h)) for e, u, i, t, w, h in EVENTS]
    return spark.createDataFrame(rows, SCHEMA)


def vocabulary(spark):
    return spark.createDataFrame([(item, i + 1) for i, item in enumerate(VOCAB)], "item_id string, idx int")


def training_example(spark, events) -> EncodedUsers:
    """The training example whose target is u's purchase of e."""
    examples = to_training_examples(events, ENCODING.length).where("event_id = 'e9'")
    row = encode_examples(examples, vocabulary(spark), ENCODING).collect()[0]
    return EncodedUsers(
        np.array([row["history"]]), np.array([row["history"]]) > 0, np.array([row["history_types"]]),
        np.array([row["user_features"]], dtype=np.float32), np.array([True]),
    )  # fmt: skip


def served(spark, events) -> tuple[EncodedUsers, pd.DataFrame]:
    """u as the batch scorer reads it the moment before e9 (item rows here: the vocabulary indices)."""
    before = events.where(F.col("event_ts") < F.lit(T0 + dt.timedelta(hours=40)))
    histories = to_user_histories(before, ENCODING.length).where("user_id = 'u'")
    index = vocabulary(spark).withColumnRenamed("idx", "row")
    block = user_block(to_matrix_rows(histories, index).toPandas())
    return encode_users(block.history, block.history_types, block.user_features, ENCODING), histories.toPandas()


def ranking_list(spark, config: Config, events, tmp_path: Path) -> EncodedUsers:
    """u's training list for the ranker, whose label is e9 and whose context is everything before it."""
    marked = events.where("weight > 0").select(
        "user_id",
        "item_id",
        "event_ts",
        "event_id",
        "event_type",
        (F.col("event_id").isin("e9", "o5")).alias("is_label"),
    )
    small = with_values(config, {"train": {"num_processes": 1, "ranker": {"candidates": 10, "text_weight": 0.0}}})
    text = np.zeros((len(VOCAB) + 1, 2), dtype=np.float32)
    lists = ranking_lists(spark, small, marked, vocabulary(spark), text, ENCODING, tmp_path)
    assert lists is not None
    frame = pd.read_parquet(ParquetConverter.from_json(lists.to_json()).path)
    row = frame[
        [5 in list(c) and 1.0 in list(lab) for c, lab in zip(frame["candidates"], frame["labels"], strict=True)]
    ].iloc[0]
    return EncodedUsers(
        np.array([row["history"]]), np.array([row["history"]]) > 0, np.array([row["history_types"]]),
        np.array([row["user_features"]], dtype=np.float32), np.array([True]),
    )  # fmt: skip


def test_training_serving_lists_and_the_mlflow_model_encode_a_user_alike(spark, events, config, tmp_path) -> None:
    example = training_example(spark, events)
    serving, raw = served(spark, events)
    listed = ranking_list(spark, config, events, tmp_path / "lists")
    history, types = list(raw["history"].iloc[0]), list(raw["history_types"].iloc[0])
    assert history == ["d", "zz", "b", "c"] and types == ["view", "view", "purchase", "purchase"]
    rows, kept = index_histories([history], [types], {item: i + 1 for i, item in enumerate(VOCAB)})
    model_input = encode_users(rows, kept, [list(raw["user_features"].iloc[0])], ENCODING)  # as the pyfunc reads it
    # d, then b before c (same time, later event id), zz dropped: not in the vocabulary
    assert example.items.tolist() == [[4, 2, 3, 0]] and example.types.tolist() == [[2, 1, 1, 0]]
    # 5 positive events (zz counts, the return does not) over 30 hours
    assert np.allclose(example.features, [[np.log1p(5), np.log1p(30 / 24)]])
    for other in (serving, listed, model_input):
        np.testing.assert_array_equal(other.items, example.items)
        np.testing.assert_array_equal(other.mask, example.mask)
        np.testing.assert_array_equal(other.types, example.types)
        np.testing.assert_allclose(other.features, example.features, rtol=1e-6)


def test_the_mlflow_model_scores_a_user_as_the_tower_reads_the_training_example(spark, events, tmp_path) -> None:
    torch.manual_seed(4)
    text = torch.cat([torch.zeros(1, 3), torch.randn(len(VOCAB), 3)])
    model = TwoTower(text, 4, ENCODING.length, event_types=2, user_features=2).eval()
    with torch.no_grad():
        model.users.features.weight.normal_(0.0, 2.0)
        model.users.event_type.weight[1:].normal_(0.0, 2.0)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    spec = ModelSpec(4, ENCODING.length, "t", event_types=ENCODING.event_types, user_feature_names=USER_FEATURES)
    pyfunc = TwoTowerPyfunc()
    pyfunc.loaded = load_model_dir(write_model_dir(tmp_path / "m", tmp_path / "weights.pt", VOCAB, text.numpy(), spec))
    _, raw = served(spark, events)
    got = pyfunc.predict(None, raw[["history", "history_types", "user_features"]], {"k": 10, "exclude_history": False})
    example = training_example(spark, events)
    with torch.no_grad():
        users = model.users.read(model.item_vectors(torch.from_numpy(example.items)), example)
        scores = (users @ model.item_vectors(torch.arange(1, len(VOCAB) + 1)).T)[0].numpy()
    assert got["item_ids"][0] == [VOCAB[i] for i in np.argsort(-scores, kind="stable")]
    np.testing.assert_allclose(got["scores"][0], np.sort(scores)[::-1], atol=1e-5)
