"""Batch top-k in Spark (``mapInPandas`` blocks) and the Parquet converter the training reads."""

from __future__ import annotations

import numpy as np
import pytest

from sparkrec.encoding import USER_FEATURES, UserEncoding
from sparkrec.loader import make_converter
from sparkrec.models.scoring import PopularityScorer, TwoTowerScorer, to_matrix_rows, top_k, user_block
from sparkrec.models.two_tower import UserTower
from sparkrec.ranking import ListRules, RetrievalRanker, recommend


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
        for b in batches:  # each row's list stays with its row (the shard is three files, decoded once)
            assert b["history"].tolist() == [[t, t + 1] for t in b["target"].tolist()]
        assert [b["target"].tolist() for b in loader] == [b["target"].tolist() for b in batches]  # a second pass
        loader.set_epoch(1)
        assert [b["target"].tolist() for b in loader] != [b["target"].tolist() for b in batches]  # reshuffled
        seen += [int(t) for b in batches for t in b["target"]]
    assert len(seen) == len(set(seen)) == 100


def test_top_k_and_recommend_serve_the_user_tower_its_user_features_and_event_types(spark) -> None:
    """Two users with the same history and seen items that differ only in their user features and
    event types: both Spark paths must score them as the tower does on their whole rows."""
    rng = np.random.default_rng(3)
    items = rng.standard_normal((12, 4)).astype(np.float32)
    tower = UserTower(4, 3, event_types=2, user_features=2)
    state = {k: v.numpy().copy() for k, v in tower.state_dict().items()}
    state["features.weight"] = 5.0 * rng.standard_normal((4, 2)).astype(np.float32)
    state["event_type.weight"][1:] = 3.0 * rng.standard_normal((2, 4)).astype(np.float32)
    scorer = TwoTowerScorer(items, state, 4, UserEncoding(3, ("view", "purchase"), USER_FEATURES))
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


def test_a_list_column_of_unequal_lists_is_refused_with_what_training_needs() -> None:
    import pyarrow as pa

    from sparkrec.loader import _to_numpy

    with pytest.raises(ValueError, match="padded lists"):
        _to_numpy(pa.chunked_array([pa.array([[1, 2]]), pa.array([[3]])]))
    assert _to_numpy(pa.chunked_array([pa.array([[1, 2]]), pa.array([[3, 4]])])).tolist() == [[1, 2], [3, 4]]
