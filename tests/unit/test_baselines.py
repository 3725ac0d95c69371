"""Popularity, ALS and EASE against hand-computed or independently solved values."""

from __future__ import annotations

import numpy as np
import pytest

from sparkrec.experiment import aggregate, als_grid
from sparkrec.models.baselines import (
    ease_weights,
    with_text_neighbours,
)

# users x items, binary; the duplicate (u1, c) row must count once in the Gram matrix.
EVENTS = [("u1", "a"), ("u1", "b"), ("u1", "c"), ("u1", "c"), ("u2", "b"), ("u2", "c"), ("u3", "a"), ("u3", "d")]
X = np.array([[1, 1, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1]], dtype=np.float64)


def test_ease_weights_solve_each_column_s_ridge_regression_with_a_zero_diagonal() -> None:
    lam = 0.5
    b = ease_weights(X.T @ X, lam)
    assert np.all(np.diag(b) == 0)
    # Column j of B is the ridge regression of item j on the other items (Steck 2019, eq. 4).
    for j in range(4):
        others = [i for i in range(4) if i != j]
        xo = X[:, others]
        expected = np.linalg.solve(xo.T @ xo + lam * np.eye(3), xo.T @ X[:, j])
        np.testing.assert_allclose(b[others, j], expected, rtol=1e-5, atol=1e-6)


def test_ease_weights_from_the_cholesky_factor_equal_the_plain_inverse_in_any_block_size() -> None:
    rng = np.random.default_rng(0)
    x = (rng.random((200, 50)) < 0.1).astype(np.float64)
    gram = x.T @ x
    p = np.linalg.inv(gram + 3.0 * np.eye(50))
    want = -p / np.diag(p)[None, :]
    np.fill_diagonal(want, 0.0)
    for block in (1, 7, 50, 1024):
        np.testing.assert_allclose(ease_weights(gram, 3.0, block=block), want, rtol=1e-5, atol=1e-7)
    kept = gram.copy()
    ease_weights(gram, 3.0)
    np.testing.assert_array_equal(gram, kept)  # the gram is left as it was unless overwrite is asked
    np.testing.assert_allclose(ease_weights(gram.copy(), 3.0, overwrite=True), want, rtol=1e-5, atol=1e-7)


def test_ease_weights_by_hand_for_two_items() -> None:
    # G = [[2, 1], [1, 1]], lambda = 1: P = inv([[3, 1], [1, 2]]) = [[2, -1], [-1, 3]] / 5,
    # B = -P / diag(P): B[0, 1] = (1/5) / (3/5) = 1/3, B[1, 0] = (1/5) / (2/5) = 1/2.
    b = ease_weights(np.array([[2.0, 1.0], [1.0, 1.0]]), 1.0)
    np.testing.assert_allclose(b, [[0.0, 1 / 3], [1 / 2, 0.0]], rtol=1e-6)


def test_text_neighbours_add_one_pseudo_user_per_item_with_interactions() -> None:
    gram = np.zeros((5, 5))
    gram[:4, :4] = X.T @ X  # item e (row 4) has no interactions
    # a and b read the same, c is nearest d (cosine 0.8) and d nearest c; e reads like a but takes no part.
    text = np.array([[1, 0], [2, 0], [0, 1], [0.6, 0.8], [1, 0]], dtype=np.float32)
    pseudo = np.array(
        [
            [1, 1, 0, 0, 0],  # a: itself, b (cosine 1)
            [1, 1, 0, 0, 0],  # b: itself, a
            [0, 0, 1, 0.8, 0],  # c: itself, d
            [0, 0, 0.8, 1, 0],
        ]
    )  # d: itself, c
    out = with_text_neighbours(gram, text, neighbours=1, weight=0.5)
    np.testing.assert_allclose(out, gram + 0.5 * pseudo.T @ pseudo, rtol=1e-6)
    assert not out[4].any() and not out[:, 4].any()
    assert with_text_neighbours(gram, text, neighbours=1, weight=0.0) is gram
    with pytest.raises(ValueError, match="weight >= 0"):
        with_text_neighbours(gram, text, neighbours=1, weight=-1.0)
    with pytest.raises(ValueError, match="4 text vectors for a 5-item gram"):
        with_text_neighbours(gram, text[:4], neighbours=1, weight=1.0)


def test_text_neighbours_let_ease_score_an_item_no_user_holds_with_it() -> None:
    # Item 2 is held only by users who hold nothing else, so plain EASE gives a holder of item 3 no
    # score for it; item 2 reads like item 3, and with text it does.
    x = np.array([[1, 1, 0, 1], [1, 1, 0, 1], [1, 0, 0, 1], [0, 0, 1, 0], [0, 0, 1, 0]], dtype=np.float64)
    text = np.array([[1, 0, 0], [0, 1, 0], [0, 0.1, 1], [0, 0, 1]], dtype=np.float32)
    plain = ease_weights(x.T @ x, 1.0)
    fused = ease_weights(with_text_neighbours(x.T @ x, text, neighbours=1, weight=1.0), 1.0)
    assert plain[3, 2] == 0
    assert fused[3, 2] > 0.25


def test_als_grid_is_every_combination() -> None:
    grid = als_grid({"rank": [8.0, 16.0], "alpha": [1.0], "reg_param": [0.1, 1.0]})
    assert grid == [
        {"alpha": 1.0, "rank": 8, "reg_param": 0.1},
        {"alpha": 1.0, "rank": 8, "reg_param": 1.0},
        {"alpha": 1.0, "rank": 16, "reg_param": 0.1},
        {"alpha": 1.0, "rank": 16, "reg_param": 1.0},
    ]


def test_repeats_average_with_a_sample_standard_deviation() -> None:
    out = aggregate([{"ndcg@10": 0.1, "users": 5.0}, {"ndcg@10": 0.3, "users": 5.0}])
    assert out == pytest.approx({"ndcg@10": 0.2, "ndcg@10_std": 0.1414213562, "users": 5.0})
    assert aggregate([{"ndcg@10": 0.1}]) == {"ndcg@10": 0.1}
