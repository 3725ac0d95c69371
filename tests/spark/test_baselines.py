"""Popularity, ALS and EASE against hand-computed or independently solved values."""

from __future__ import annotations

import numpy as np
import pytest

from sparkrec.models.baselines import (
    AlsParams,
    EaseTooLargeError,
    ease_weights,
    fit_als,
    fit_popularity,
    item_gram,
    item_neighbours,
)
from sparkrec.models.scoring import UserBlock

# users x items, binary; the duplicate (u1, c) row must count once in the Gram matrix.
EVENTS = [("u1", "a"), ("u1", "b"), ("u1", "c"), ("u1", "c"), ("u2", "b"), ("u2", "c"), ("u3", "a"), ("u3", "d")]
X = np.array([[1, 1, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1]], dtype=np.float64)


def _frames(spark, events=EVENTS, weight=1.0):
    train = spark.createDataFrame([(u, i, weight) for u, i in events], "user_id string, item_id string, weight double")
    index = spark.createDataFrame([("a", 0), ("b", 1), ("c", 2), ("d", 3), ("e", 4)], "item_id string, row int")
    return train, index


def test_item_gram_is_x_transpose_x_of_the_binary_matrix(spark) -> None:
    train, index = _frames(spark)
    gram = item_gram(train, index, 5, max_items=10)
    expected = np.zeros((5, 5))
    expected[:4, :4] = X.T @ X
    np.testing.assert_array_equal(gram, expected)


def test_ease_refuses_a_catalogue_above_the_limit_with_the_setting_to_change(spark) -> None:
    train, index = _frames(spark)
    with pytest.raises(EaseTooLargeError, match=r"5 x 5 matrix .* experiment.ease_max_items=4"):
        item_gram(train, index, 5, max_items=4)
    with pytest.raises(ValueError, match="lambda must be positive"):
        ease_weights(np.eye(2), 0.0)


def test_item_neighbours_are_each_item_s_nearest_by_the_cosine_of_co_occurrence(spark) -> None:
    train, index = _frames(spark)
    gram = X.T @ X
    cosine = gram / np.sqrt(np.outer(np.diag(gram), np.diag(gram)))
    np.fill_diagonal(cosine, 0.0)
    full = item_neighbours(train, index, 5, neighbours=10).toarray()
    expected = np.zeros((5, 5))
    expected[:4, :4] = cosine
    np.testing.assert_allclose(full, expected, rtol=1e-6)
    # One neighbour each: a's is d (1/sqrt(2 x 1) above 1/sqrt(2 x 2) for b and c), b's c, c's b, d's a.
    one = item_neighbours(train, index, 5, neighbours=1)
    assert one.nnz == 4
    assert [int(one[i].indices[0]) for i in range(4)] == [3, 2, 1, 0]
    assert one[4].nnz == 0  # an item no user holds has no neighbour


def test_popularity_counts_distinct_users_with_a_positive_event(spark) -> None:
    train, index = _frames(spark)
    returns = spark.createDataFrame([("u9", "d", 0.0)], "user_id string, item_id string, weight double")
    scorer = fit_popularity(train.unionByName(returns), index, 5)
    np.testing.assert_array_equal(scorer.popularity, [2, 2, 2, 1, 0])


def test_implicit_als_ranks_the_user_s_own_community_first(spark) -> None:
    # Odd users interact with odd items, even users with even items; each user misses one item of
    # their side, which ALS must rank above every item of the other side.
    events = []
    for u in range(8):
        side = [i for i in range(8) if i % 2 == u % 2]
        events += [(f"u{u}", f"i{i}") for i in side if i != side[u // 2 % 4]]
    train = spark.createDataFrame([(u, i, 1.0) for u, i in events], "user_id string, item_id string, weight double")
    index = spark.createDataFrame([(f"i{i}", i) for i in range(8)], "item_id string, row int")
    scorer = fit_als(train, index, 8, AlsParams(rank=4, reg_param=0.1, alpha=10.0, max_iter=10), seed=7)
    users = [f"u{u}" for u in range(8)]
    scores = scorer.scores(UserBlock(users, [np.array([], dtype=np.int64)] * 8, [np.array([], dtype=np.int64)] * 8))
    for u in range(8):
        side = [i for i in range(8) if i % 2 == u % 2]
        missing = side[u // 2 % 4]
        other = [i for i in range(8) if i % 2 != u % 2]
        assert scores[u, missing] > scores[u, other].max(), u
    again = fit_als(train, index, 8, AlsParams(rank=4, reg_param=0.1, alpha=10.0, max_iter=10), seed=7)
    np.testing.assert_allclose(again.item_vectors, scorer.item_vectors)  # seeded: same factors
