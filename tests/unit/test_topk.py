"""Top-k over score blocks (ties to the lower index, masked items never served, the chunked dot
product equal to the dense one) and the user tower over a block of encoded users."""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse

from sparkrec.encoding import USER_FEATURES, UserEncoding
from sparkrec.models.scoring import TwoTowerScorer, UserBlock
from sparkrec.models.topk import (
    dot_top_indices,
    held_scores,
    held_scores_at,
    held_top,
    masked_scores,
    top_indices,
    weight_block,
)
from sparkrec.models.two_tower import UserTower


def test_top_indices_breaks_ties_by_index_so_top_k_is_a_prefix() -> None:
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


def test_a_sparse_score_tied_at_zero_fills_the_list_with_the_lowest_indexed_items() -> None:
    """Item-kNN over a large catalogue scores most items 0; the list is the few positive items, then
    the lowest-indexed allowed zeros, also when masked items push them past the first scan chunk."""
    rng = np.random.default_rng(2)
    n = 300_000
    block = np.zeros((3, n), dtype=np.float32)
    block[:, rng.choice(n, 4, replace=False)] = rng.random((3, 4)).astype(np.float32)  # fewer than k positive
    block[1, :150_000] = -np.inf  # masked: the first zeros are past 2^16 columns
    block[2, 7] = block[2, 9] = block[2].max()  # a tie above the cut as well
    top, usable = top_indices(block, 10)
    for i, row in enumerate(block):
        assert list(top[i]) == list(np.lexsort((np.arange(n), -row))[:10])
    assert list(usable) == [10, 10, 10]


def test_chunked_dot_product_top_k_equals_the_dense_one() -> None:
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


def test_the_user_tower_reads_event_types_by_the_trained_vocabulary() -> None:
    torch.manual_seed(0)
    tower = UserTower(4, 3, event_types=2)
    with torch.no_grad():
        tower.event_type.weight[1:] = torch.randn(2, 4)
    state = {k: v.numpy() for k, v in tower.state_dict().items()}
    items = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    scorer = TwoTowerScorer(items, state, 4, UserEncoding(3, ("purchase", "view")))
    history = [np.array([1, 2])] * 4
    types = [np.array(["purchase", "view"]), np.array(["view", "view"]), np.array(["refund", "refund"]), None]
    block = UserBlock(["a", "b", "c", "d"], history, history, None, [*types[:3], np.array([], dtype=object)])
    users = scorer.user_vectors(block)
    assert not np.allclose(users[0], users[1])  # the types move the user
    assert np.allclose(users[2], users[3], atol=1e-6)  # a type unknown at training time counts as none
    untyped = scorer.user_vectors(UserBlock(["d"], history[:1], history[:1]))
    assert np.allclose(untyped[0], users[3], atol=1e-6)


def test_the_user_tower_adds_the_user_features() -> None:
    tower = UserTower(4, 3, user_features=2)
    history = [np.array([1, 2])] * 2
    feats = np.array([[0.0, 0.0], [2.0, 1.0]], dtype=np.float32)
    items = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    state = {k: v.numpy().copy() for k, v in tower.state_dict().items()}
    encoding = UserEncoding(3, (), USER_FEATURES)
    fresh = TwoTowerScorer(items, state, 4, encoding).user_vectors(
        UserBlock(["a", "b"], history, history, None, None, feats)
    )
    assert np.allclose(fresh[0], fresh[1])  # starts at zero: the history alone
    state["features.weight"] = np.random.default_rng(1).standard_normal((4, 2)).astype(np.float32)
    scorer = TwoTowerScorer(items, state, 4, encoding)
    users = scorer.user_vectors(UserBlock(["a", "b"], history, history, None, None, feats))
    assert np.allclose(users[1] - users[0], state["features.weight"] @ feats[1], atol=1e-5)
    with torch.no_grad():
        assert tower.features is not None


def test_sparse_item_weights_score_and_explain_as_the_dense_ones() -> None:
    rng = np.random.default_rng(2)
    dense = rng.random((40, 40)).astype(np.float32)
    dense[rng.random((40, 40)) < 0.8] = 0.0  # mostly zeros, as item-kNN's neighbours are
    held = [rng.choice(40, size=int(rng.integers(0, 12)), replace=True) for _ in range(9)]  # repeats count once
    held.append(np.array([], dtype=np.int64))
    got = held_scores(sparse.csr_matrix(dense), held)
    np.testing.assert_allclose(got, held_scores(dense, held), rtol=1e-6)
    assert got.shape == (10, 40) and not got[-1].any()
    rows, columns = np.array([3, 0, 3]), np.array([5, 1])
    np.testing.assert_array_equal(weight_block(sparse.csr_matrix(dense), rows, columns), dense[np.ix_(rows, columns)])


def test_the_top_of_sparse_item_weights_is_the_top_of_the_dense_ones() -> None:
    """``held_top`` over item-kNN's sparse weights lists what the masked dense row would: the users'
    positive scores, then the lowest-indexed allowed zeros; scores at chosen columns agree too."""
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(2, 60))
        dense = rng.integers(0, 3, size=(n, n)).astype(np.float32)  # small integers: ties above zero too
        dense[rng.random((n, n)) < 0.9] = 0.0
        held = [rng.choice(n, size=int(rng.integers(0, n)), replace=True) for _ in range(6)]
        allowed = rng.random(n) > 0.3
        for k in (1, 5, 70):
            top, values, usable = held_top(sparse.csr_matrix(dense), held, allowed, k)
            want, want_values, want_usable = held_top(dense, held, allowed, k)
            assert list(usable) == list(want_usable)
            for r in range(len(held)):
                assert list(top[r][: usable[r]]) == list(want[r][: usable[r]])
                np.testing.assert_array_equal(values[r][: usable[r]], want_values[r][: usable[r]])
        columns = rng.integers(0, n, size=(len(held), 4))
        np.testing.assert_array_equal(
            held_scores_at(sparse.csr_matrix(dense), held, columns), held_scores_at(dense, held, columns)
        )
