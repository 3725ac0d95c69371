"""Training examples and served histories from interactions, in Spark: the same order, the same
event types and features, item ids mapped to rows by one join."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from sparkrec.encoding import USER_FEATURES, UserEncoding
from sparkrec.features import (
    encode_examples,
    event_types,
    latest_per_user,
    to_training_examples,
    to_user_histories,
    validation_split,
)
from sparkrec.models.scoring import to_matrix_rows


def test_matrix_rows_keep_history_order_and_drop_unknown_items(spark) -> None:
    histories = spark.createDataFrame(
        [("u1", ["c", "a", "zz", "b"], ["a", "b", "c", "zz"]), ("u2", [], None)],
        "user_id string, history array<string>, seen array<string>",
    )
    index = spark.createDataFrame([("a", 0), ("b", 1), ("c", 2)], "item_id string, row int")
    got = {r["user_id"]: (r["history"], r["seen"]) for r in to_matrix_rows(histories, index).collect()}
    assert got == {"u1": ([2, 0, 1], [0, 1, 2]), "u2": ([], [])}


def test_training_examples_encode_to_padded_vocabulary_indices(spark) -> None:
    examples = spark.createDataFrame(
        [("e2", "b", ["a", "c", "b"]), ("e1", "c", ["a"])], "event_id string, item_id string, history array<string>"
    )
    vocab = spark.createDataFrame([("a", 1), ("b", 2), ("c", 3)], "item_id string, idx int")
    rows = [(r["target"], r["history"]) for r in encode_examples(examples, vocab, UserEncoding(2)).collect()]
    assert rows == [(3, [1, 0]), (2, [1, 3])]  # event_id order; truncated or zero-padded to 2


def test_event_types_keep_step_with_the_history_from_interactions_to_codes(spark) -> None:
    t = dt.datetime(2024, 1, 1)
    events = spark.createDataFrame(
        [
            ("e1", "u", "a", "view", 1.0, t),
            ("e2", "u", "zz", "cart", 1.0, t + dt.timedelta(hours=1)),
            ("e3", "u", "b", "purchase", 1.0, t + dt.timedelta(hours=2)),
            ("e4", "u", "c", "return", 0.0, t + dt.timedelta(hours=3)),
            ("e5", "u", "c", "purchase", 1.0, t + dt.timedelta(hours=4)),
        ],
        "event_id string, user_id string, item_id string, event_type string, weight double, event_ts timestamp",
    )
    types = event_types(events)
    assert types == ["cart", "purchase", "view"]  # positive events only
    assert event_types(events.where("event_type = 'purchase'")) == []  # one type: nothing to tell apart

    examples = to_training_examples(events, 3)
    last = examples.where("event_id = 'e5'").first()
    assert last["history"] == ["b", "zz", "a"] and last["history_types"] == ["purchase", "cart", "view"]
    # the user's features before e5: 3 positive events over 2 hours
    assert np.allclose(last["user_features"], [np.log1p(3), np.log1p(2 / 24)])
    vocab = spark.createDataFrame([("a", 1), ("b", 2), ("c", 3)], "item_id string, idx int")  # zz unknown
    encoded = {
        r["target"]: (r["history"], r["history_types"])
        for r in encode_examples(examples, vocab, UserEncoding(3, tuple(types), USER_FEATURES)).collect()
    }
    assert encoded[3] == ([2, 1, 0], [2, 3, 0])  # zz and its type dropped together, then padding

    histories = to_user_histories(events, 4)  # c, b, zz, a: zz is not in the catalogue
    index = spark.createDataFrame([("a", 0), ("b", 1), ("c", 2)], "item_id string, row int")
    row = to_matrix_rows(histories, index).first()
    assert row["history"] == [2, 1, 0] and row["history_types"] == ["purchase", "purchase", "view"]
    assert np.allclose(row["user_features"], [np.log1p(4), np.log1p(4 / 24)])  # all 4 positives, over 4 hours


def test_others_history_is_the_latest_items_but_the_target_as_served(spark) -> None:
    t = dt.datetime(2024, 1, 1)
    rows = [(f"e{i}", "u", item, "purchase", 1.0, t + dt.timedelta(days=i)) for i, item in enumerate("abcbd")]
    rows += [("e9", "u", "x", "return", 0.0, t + dt.timedelta(days=9)), ("f0", "v", "a", "purchase", 1.0, t)]
    events = spark.createDataFrame(
        rows, "event_id string, user_id string, item_id string, event_type string, weight double, event_ts timestamp"
    )
    examples = {r["event_id"]: r for r in to_training_examples(events, 3, "others").collect()}
    assert set(examples) == {"e0", "e1", "e2", "e3", "e4"}  # v has no other item; a return is no target
    assert examples["e0"]["history"] == ["d", "b", "c"]  # older than the history: the latest 3 others
    assert examples["e4"]["history"] == ["b", "c", "b"]
    assert examples["e1"]["history"] == ["d", "c"]  # every event of the target's item left out
    served = to_user_histories(events, 3).where("user_id = 'u'").first()
    assert served["history"] == ["d", "b", "c"]
    # the features of all the user's positive events, as served
    assert all(np.allclose(r["user_features"], served["user_features"]) for r in examples.values())
    assert np.allclose(served["user_features"], [np.log1p(5), np.log1p(4)])
    earlier = {r["event_id"]: r["history"] for r in to_training_examples(events, 3).collect()}
    assert earlier["e4"] == ["b", "c", "b"] and "e0" not in earlier  # what came before: e0 has none
    with pytest.raises(ValueError, match="example_history"):
        to_training_examples(events, 3, "future")


def test_early_stopping_holds_out_no_target_that_a_training_history_holds(spark) -> None:
    t = dt.datetime(2024, 1, 1)
    rows = [
        (f"{u}{i}", f"u{u}", f"i{(u * 7 + i) % 40}", "purchase", 1.0, t + dt.timedelta(days=u + i))
        for u in range(40)
        for i in range(6)
    ]
    events = spark.createDataFrame(
        rows, "event_id string, user_id string, item_id string, event_type string, weight double, event_ts timestamp"
    )
    for mode in ("earlier", "others"):
        examples = to_training_examples(events, 3, mode)
        train, held = (df.collect() for df in validation_split(examples, 0.25, mode, seed=42))
        assert held and train and len(train) + len(held) == examples.count()
        in_histories = {(r["user_id"], item) for r in train for item in r["history"]}
        assert not [r for r in held if (r["user_id"], r["item_id"]) in in_histories], mode
    # others: whole users are held out, a seeded share of them
    held_users = {r["user_id"] for r in validation_split(examples, 0.25, "others", seed=42)[1].collect()}
    assert 3 <= len(held_users) <= 18
    assert held_users == {r["user_id"] for r in validation_split(examples, 0.25, "others", seed=42)[1].collect()}
    assert held_users != {r["user_id"] for r in validation_split(examples, 0.25, "others", seed=7)[1].collect()}
    with pytest.raises(ValueError, match="validation_fraction"):
        validation_split(examples, 1.0, "others", seed=42)


def test_max_examples_per_user_keeps_each_user_s_latest_targets_with_their_whole_history(spark) -> None:
    day = dt.datetime(2024, 1, 1)
    events = [("u", f"i{n}", day + dt.timedelta(hours=n), f"e{n}", 1.0) for n in range(5)]
    events += [("v", "i0", day, "f0", 1.0)]
    frame = spark.createDataFrame(
        events, "user_id string, item_id string, event_ts timestamp, event_id string, weight double"
    )
    examples = to_training_examples(frame, 3)
    kept = latest_per_user(examples, 2).select("user_id", "item_id", "history").orderBy("user_id", "item_id").collect()
    assert [(r["user_id"], r["item_id"], list(r["history"])) for r in kept] == [
        ("u", "i3", ["i2", "i1", "i0"]),
        ("u", "i4", ["i3", "i2", "i1"]),
    ]  # v's one event has no history: no example at all
    assert latest_per_user(examples, 0).count() == examples.count() == 4
