"""The ranking step and the business rules, block by block, and the publish gate's verdicts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from sparkrec.config import PublishGateConfig
from sparkrec.models.scoring import PopularityScorer, UserBlock
from sparkrec.publish import check
from sparkrec.ranking import (
    FALLBACK_CATEGORY,
    FALLBACK_GLOBAL,
    ListRules,
    RetrievalRanker,
    category_codes,
    recommend_block,
)

ITEMS = np.array([f"i{j}" for j in range(8)], dtype=object)


@dataclasses.dataclass
class DotScorer:
    """A dot-product model: user vector = the mean of its history's item vectors."""

    item_vectors: np.ndarray
    name: str = "dot"

    def user_vectors(self, block: UserBlock) -> np.ndarray:
        return np.stack([self.item_vectors[h].mean(axis=0) for h in block.history]).astype(np.float32)

    def scores(self, block: UserBlock) -> np.ndarray:
        return self.user_vectors(block) @ self.item_vectors.T


def frame(*users: tuple[str, list[int], list[int]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": [u[0] for u in users],
            "history": [np.array(u[1]) for u in users],
            "seen": [np.array(u[2]) for u in users],
        }
    )


def rules(**kw: object) -> ListRules:
    base = {
        "k": 3,
        "candidates": 8,
        "allowed": np.ones(8, dtype=bool),
        "popularity": np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]),
    }
    return ListRules(**{**base, **kw})


def lists(out: pd.DataFrame) -> dict[str, list[str]]:
    return {u: list(g.sort_values("rank")["item_id"]) for u, g in out.groupby("user_id")}


DESCENDING = PopularityScorer(np.array([8, 7, 6, 5, 4, 3, 2, 1], dtype=float))


def test_seen_and_disallowed_items_are_never_recommended_and_lists_have_min_k_eligible() -> None:
    allowed = np.array([True, False, True, True, True, True, False, True])  # i1 inactive, i6 out of stock
    out = recommend_block(
        frame(("u1", [0], [0, 2]), ("u2", [3], [0, 2, 3, 4, 5])),
        DESCENDING,
        RetrievalRanker(),
        rules(allowed=allowed),
        ITEMS,
    )
    assert lists(out) == {"u1": ["i3", "i4", "i5"], "u2": ["i7"]}  # u2 has one eligible unseen item left
    assert list(out.sort_values(["user_id", "rank"])["rank"]) == [1, 2, 3, 1]
    assert set(out["reason"]) == {"popularity"}


def test_candidates_from_the_chunked_dot_product_path_are_ranked_by_score() -> None:
    vectors = np.eye(8, dtype=np.float32) + 0.1 * np.arange(8, dtype=np.float32)[:, None]
    out = recommend_block(frame(("u1", [5], [5])), DotScorer(vectors), RetrievalRanker(), rules(k=2), ITEMS)
    assert lists(out) == {"u1": ["i7", "i6"]}
    assert out["score"].is_monotonic_decreasing
    assert set(out["reason"]) == {"dot:history=i5"}  # the only history item explains both


def test_each_recommendation_is_explained_by_the_closest_history_item() -> None:
    from sparkrec.ranking import explain

    vectors = np.array([[1, 0], [0, 1], [1, 0.1], [0.1, 1], [1, 1]], dtype=np.float32)
    picked = np.array([[2, 3], [4, 2]])
    got = explain(vectors, picked, [np.array([0, 1]), np.array([], dtype=np.int64)])
    assert got.tolist() == [[0, 1], [-1, -1]]  # item 2 is like item 0, item 3 like item 1; no history: none


def test_the_ranking_step_reorders_the_candidates() -> None:
    @dataclasses.dataclass
    class Reverse:
        name: str = "reverse"

        def rescore(self, block: UserBlock, candidates: np.ndarray, scores: np.ndarray) -> np.ndarray:
            return -scores

    out = recommend_block(frame(("u1", [0], [0])), DESCENDING, Reverse(), rules(k=2, candidates=3), ITEMS)
    assert lists(out) == {"u1": ["i3", "i2"]}  # the 3 best candidates, re-ranked worst first
    assert set(out["reason"]) == {"popularity+reverse"}


def test_category_cap_limits_each_category_and_fills_from_capped_items_when_needed() -> None:
    cats = category_codes(["a", "a", "a", "b", "b", None, "a", "b"])
    out = recommend_block(
        frame(("u1", [7], [7])), DESCENDING, RetrievalRanker(), rules(k=4, categories=cats, max_per_category=1), ITEMS
    )
    assert lists(out) == {"u1": ["i0", "i3", "i5", "i1"]}  # a, b, uncategorised, then the cap relaxes
    few = recommend_block(
        frame(("u1", [7], [7])), DESCENDING, RetrievalRanker(), rules(k=3, categories=cats, max_per_category=2), ITEMS
    )
    assert lists(few) == {"u1": ["i0", "i1", "i3"]}


def test_mmr_trades_score_for_dissimilarity() -> None:
    vectors = np.zeros((8, 3), dtype=np.float32)
    vectors[[0, 1, 2], 0] = 1.0  # i0, i1, i2 are near duplicates
    vectors[3:, 1] = 1.0
    vectors[[3], 2] = 5.0
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    plain = recommend_block(frame(("u1", [7], [7])), DESCENDING, RetrievalRanker(), rules(k=3), ITEMS)
    diverse = recommend_block(
        frame(("u1", [7], [7])), DESCENDING, RetrievalRanker(), rules(k=3, item_vectors=vectors, mmr_lambda=0.3), ITEMS
    )
    assert lists(plain) == {"u1": ["i0", "i1", "i2"]}
    assert lists(diverse)["u1"][0] == "i0" and "i1" not in lists(diverse)["u1"]
    assert lists(diverse) == {"u1": ["i0", "i3", "i4"]}
    same = recommend_block(
        frame(("u1", [7], [7])), DESCENDING, RetrievalRanker(), rules(k=3, item_vectors=vectors, mmr_lambda=1.0), ITEMS
    )
    assert lists(same) == lists(plain)


def test_users_without_history_get_popular_in_segment_flagged() -> None:
    cats = category_codes(["a", "a", "b", "b", "b", None, "a", "b"])
    out = recommend_block(
        frame(("cold_b", [], [4, 7]), ("cold", [], []), ("warm", [0], [0])),
        DESCENDING,
        RetrievalRanker(),
        rules(categories=cats),
        ITEMS,
    )
    got = lists(out)
    assert got["cold_b"] == ["i2", "i3", "i0"]  # category b first (i4, i7 seen), then popular overall
    assert got["cold"] == ["i0", "i1", "i2"]
    reasons = out.groupby("user_id")["reason"].first().to_dict()
    assert reasons == {"cold_b": FALLBACK_CATEGORY, "cold": FALLBACK_GLOBAL, "warm": "popularity"}
    assert out.loc[out["user_id"] == "cold", "score"].tolist() == pytest.approx([0.9, 0.8, 0.7])
    globally = recommend_block(
        frame(("cold_b", [], [4, 7])),
        DESCENDING,
        RetrievalRanker(),
        rules(categories=cats, fallback_segment="global"),
        ITEMS,
    )
    assert lists(globally)["cold_b"] == ["i0", "i1", "i2"] and set(globally["reason"]) == {FALLBACK_GLOBAL}


def test_a_fallback_segment_the_rules_do_not_know_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="recommend.fallback_segment must be one of category, global"):
        rules(fallback_segment="country")


def test_publish_gate_verdicts() -> None:
    gate = PublishGateConfig(max_row_change=0.5, min_user_coverage=0.9)
    good = {"rows": 1000.0, "users": 100.0, "bad_scores": 0.0, "broken_lists": 0.0}
    assert check(good, 100, 900.0, gate).passed
    assert check(good, 100, None, gate).checks.keys() == {"user_coverage", "scores", "lists"}  # first day
    shrunk = check(good, 100, 2500.0, gate)
    assert not shrunk.passed and shrunk.checks["row_change"] is False and "60%" in shrunk.failures[0]
    uncovered = check(good, 200, 1000.0, gate)
    assert uncovered.checks == {"row_change": True, "user_coverage": False, "scores": True, "lists": True}
    nan = check({**good, "bad_scores": 3.0}, 100, 1000.0, gate)
    assert nan.failures == ["3 scores are NaN or infinite"]
    empty = check({"rows": 0.0, "users": 0.0, "bad_scores": 0.0, "broken_lists": 0.0}, 100, 1000.0, gate)
    assert {"row_change", "user_coverage", "lists"} == {k for k, ok in empty.checks.items() if not ok}
