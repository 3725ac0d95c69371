import numpy as np
import pytest

from sparkrec.loader import make_converter
from sparkrec.models.scoring import PopularityScorer, to_matrix_rows, top_k


def test_top_k_is_k_distinct_unseen_eligible_items(spark) -> None:
    item_ids = [f"i{j}" for j in range(8)]
    popularity = np.array([8, 7, 6, 5, 4, 3, 2, 1], dtype=float)
    eligible = np.array([True, False, True, True, True, True, True, True])  # i1 inactive
    histories = spark.createDataFrame(
        [("u1", ["i0"], ["i0", "i2"]), ("u2", [], []), ("u3", ["i9"], ["i0", "i2", "i3", "i4", "i5", "i6"])],
        "user_id string, history array<string>, seen array<string>",
    )
    index = spark.createDataFrame(list(zip(item_ids, range(8), strict=True)), "item_id string, row int")
    recs = top_k(to_matrix_rows(histories, index), PopularityScorer(popularity), item_ids, eligible, k=3, block_size=2)
    got = {}
    for r in recs.orderBy("user_id", "rank").collect():
        got.setdefault(r["user_id"], []).append((r["rank"], r["item_id"]))
    assert got["u1"] == [(1, "i3"), (2, "i4"), (3, "i5")]
    assert got["u2"] == [(1, "i0"), (2, "i2"), (3, "i3")]
    assert got["u3"] == [(1, "i7")]  # only one eligible unseen item is left


def test_converter_gives_every_rank_the_same_batches(spark, tmp_path) -> None:
    df = spark.range(103).selectExpr("id AS target", "array(id, id + 1) AS history").repartition(3)
    converter = make_converter(df, str(tmp_path))
    assert converter.num_rows == 103
    assert make_converter(df, str(tmp_path)) == converter  # the same plan is materialised once
    seen = []
    for rank in range(2):
        loader = converter.make_torch_dataloader(batch_size=10, cur_shard=rank, shard_count=2, shuffle_seed=1)
        batches = list(loader)
        assert len(batches) == len(loader) == 5
        assert all(b["target"].shape == (10,) and b["history"].shape == (10, 2) for b in batches)
        seen += [int(t) for b in batches for t in b["target"]]
    assert len(seen) == len(set(seen)) == 100


def test_top_indices_breaks_ties_by_index_so_top_k_is_a_prefix() -> None:
    from sparkrec.models.scoring import top_indices

    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 30))
        block = rng.integers(0, 4, size=(5, n)).astype(float)  # many ties
        block[rng.random((5, n)) < 0.2] = -np.inf
        block[0] = rng.random(n)  # and a row without ties
        for kk in range(1, n + 2):
            top, usable = top_indices(block, kk)
            assert top.shape == (5, min(kk, n))
            for i, row in enumerate(block):
                full = np.lexsort((np.arange(n), -row))
                assert usable[i] == min(kk, np.isfinite(row).sum())  # masked (-inf) columns are never served
                assert list(top[i][: usable[i]]) == list(full[: usable[i]])


def test_matrix_rows_keep_history_order_and_drop_unknown_items(spark) -> None:
    histories = spark.createDataFrame(
        [("u1", ["c", "a", "zz", "b"], ["a", "b", "c", "zz"]), ("u2", [], None)],
        "user_id string, history array<string>, seen array<string>",
    )
    index = spark.createDataFrame([("a", 0), ("b", 1), ("c", 2)], "item_id string, row int")
    got = {r["user_id"]: (r["history"], r["seen"]) for r in to_matrix_rows(histories, index).collect()}
    assert got == {"u1": ([2, 0, 1], [0, 1, 2]), "u2": ([], [])}


def test_training_examples_encode_to_padded_vocabulary_indices(spark) -> None:
    from sparkrec.features import encode_examples

    examples = spark.createDataFrame(
        [("e2", "b", ["a", "c", "b"]), ("e1", "c", ["a"])], "event_id string, item_id string, history array<string>"
    )
    vocab = spark.createDataFrame([("a", 1), ("b", 2), ("c", 3)], "item_id string, idx int")
    rows = [(r["target"], r["history"]) for r in encode_examples(examples, vocab, 2).collect()]
    assert rows == [(3, [1, 0]), (2, [1, 3])]  # event_id order; truncated or zero-padded to 2


def test_event_types_keep_step_with_the_history_from_interactions_to_codes(spark) -> None:
    import datetime as dt

    from sparkrec.features import encode_examples, event_types, to_training_examples, to_user_histories

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
        r["target"]: (r["history"], r["history_types"]) for r in encode_examples(examples, vocab, 3, types).collect()
    }
    assert encoded[3] == ([2, 1, 0], [2, 3, 0])  # zz and its type dropped together, then padding

    histories = to_user_histories(events, 4)  # c, b, zz, a: zz is not in the catalogue
    index = spark.createDataFrame([("a", 0), ("b", 1), ("c", 2)], "item_id string, row int")
    row = to_matrix_rows(histories, index).first()
    assert row["history"] == [2, 1, 0] and row["history_types"] == ["purchase", "purchase", "view"]
    assert np.allclose(row["user_features"], [np.log1p(4), np.log1p(4 / 24)])  # all 4 positives, over 4 hours


def test_others_history_is_the_latest_items_but_the_target_as_served(spark) -> None:
    import datetime as dt

    from sparkrec.features import to_training_examples, to_user_histories

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
    import datetime as dt

    from sparkrec.features import to_training_examples, validation_split

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


def test_the_user_tower_reads_event_types_by_the_trained_vocabulary() -> None:
    import torch

    from sparkrec.models.scoring import TwoTowerScorer, UserBlock
    from sparkrec.models.two_tower import UserTower

    torch.manual_seed(0)
    tower = UserTower(4, 3, event_types=2)
    with torch.no_grad():
        tower.event_type.weight[1:] = torch.randn(2, 4)
    state = {k: v.numpy() for k, v in tower.state_dict().items()}
    items = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    scorer = TwoTowerScorer(items, state, 4, 3, ("purchase", "view"))
    history = [np.array([1, 2])] * 4
    types = [np.array(["purchase", "view"]), np.array(["view", "view"]), np.array(["refund", "refund"]), None]
    block = UserBlock(["a", "b", "c", "d"], history, history, None, [*types[:3], np.array([], dtype=object)])
    users = scorer.user_vectors(block)
    assert not np.allclose(users[0], users[1])  # the types move the user
    assert np.allclose(users[2], users[3], atol=1e-6)  # a type unknown at training time counts as none
    untyped = scorer.user_vectors(UserBlock(["d"], history[:1], history[:1]))
    assert np.allclose(untyped[0], users[3], atol=1e-6)


def test_the_user_tower_adds_the_user_features() -> None:
    import torch

    from sparkrec.models.scoring import TwoTowerScorer, UserBlock
    from sparkrec.models.two_tower import UserTower

    tower = UserTower(4, 3, user_features=2)
    history = [np.array([1, 2])] * 2
    feats = np.array([[0.0, 0.0], [2.0, 1.0]], dtype=np.float32)
    items = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    state = {k: v.numpy().copy() for k, v in tower.state_dict().items()}
    fresh = TwoTowerScorer(items, state, 4, 3).user_vectors(UserBlock(["a", "b"], history, history, None, None, feats))
    assert np.allclose(fresh[0], fresh[1])  # starts at zero: the history alone
    state["features.weight"] = np.random.default_rng(1).standard_normal((4, 2)).astype(np.float32)
    scorer = TwoTowerScorer(items, state, 4, 3)
    users = scorer.user_vectors(UserBlock(["a", "b"], history, history, None, None, feats))
    assert np.allclose(users[1] - users[0], state["features.weight"] @ feats[1], atol=1e-5)
    with torch.no_grad():
        assert tower.features is not None


def test_chunked_dot_product_top_k_equals_the_dense_one() -> None:
    from sparkrec.models.scoring import dot_top_indices, masked_scores, top_indices

    rng = np.random.default_rng(1)
    for _ in range(100):
        n, b = int(rng.integers(5, 300)), 7
        items = rng.integers(-2, 3, size=(n, 3)).astype(np.float32)  # small integers: many ties
        users = rng.integers(-2, 3, size=(b, 3)).astype(np.float32)
        allowed = rng.random(n) > 0.2
        seen = [rng.choice(n, size=int(rng.integers(0, n // 2)), replace=False) for _ in range(b)]
        for k in (1, 5, 17):
            top, values, usable = dot_top_indices(users, items, allowed, seen, k, chunk=int(rng.integers(2, 64)))
            dense = masked_scores(users @ items.T, allowed, seen)
            want, want_usable = top_indices(dense, k)
            assert list(usable) == list(want_usable)
            for r in range(b):
                assert list(top[r][: usable[r]]) == list(want[r][: usable[r]])
                assert np.array_equal(values[r][: usable[r]], dense[r, top[r][: usable[r]]])


def test_top_k_and_recommend_serve_the_user_tower_its_user_features_and_event_types(spark) -> None:
    """Two users with the same history and seen items that differ only in their user features and
    event types: both Spark paths must score them as the tower does on their whole rows."""
    from sparkrec.models.scoring import TwoTowerScorer, user_block
    from sparkrec.models.two_tower import UserTower
    from sparkrec.ranking import ListRules, RetrievalRanker, recommend

    rng = np.random.default_rng(3)
    items = rng.standard_normal((12, 4)).astype(np.float32)
    tower = UserTower(4, 3, event_types=2, user_features=2)
    state = {k: v.numpy().copy() for k, v in tower.state_dict().items()}
    state["features.weight"] = 5.0 * rng.standard_normal((4, 2)).astype(np.float32)
    state["event_type.weight"][1:] = 3.0 * rng.standard_normal((2, 4)).astype(np.float32)
    scorer = TwoTowerScorer(items, state, 4, 3, event_types=("view", "purchase"))
    item_ids = [f"i{j}" for j in range(12)]
    histories = spark.createDataFrame(
        [
            ("a", ["i0", "i1"], ["view", "view"], ["i0", "i1"], [0.0, 0.0]),
            ("b", ["i0", "i1"], ["purchase", "purchase"], ["i0", "i1"], [2.0, -1.0]),
        ],
        "user_id string, history array<string>, history_types array<string>, seen array<string>, "
        "user_features array<float>",
    )
    index = spark.createDataFrame(list(zip(item_ids, range(12), strict=True)), "item_id string, row int")
    users_df = to_matrix_rows(histories, index)
    whole = users_df.toPandas().sort_values("user_id")
    expected_scores = scorer.scores(user_block(whole))
    expected_scores[:, [0, 1]] = -np.inf
    expected = {
        u: [item_ids[j] for j in np.argsort(-s, kind="stable")[:3]]
        for u, s in zip(whole["user_id"], expected_scores, strict=True)
    }
    assert expected["a"] != expected["b"]  # the features and types change the lists
    served = top_k(users_df, scorer, item_ids, np.ones(12, dtype=bool), k=3)
    rules = ListRules(k=3, candidates=12, allowed=np.ones(12, dtype=bool), popularity=np.ones(12))
    recommended = recommend(users_df, scorer, RetrievalRanker(), rules, item_ids)
    for out in (served, recommended):
        got = {u: list(g.sort_values("rank")["item_id"]) for u, g in out.toPandas().groupby("user_id")}
        assert got == expected
