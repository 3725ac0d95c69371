"""The one encoding of a user (``encoding``): padding, event type codes, user features, and item ids
mapped to rows as Spark maps them."""

from __future__ import annotations

import numpy as np
import pytest

from sparkrec.encoding import USER_FEATURES, UserEncoding, encode_users, index_histories


def test_histories_are_cut_or_padded_and_types_coded_by_the_trained_vocabulary() -> None:
    encoding = UserEncoding(3, ("purchase", "view"), USER_FEATURES)
    got = encode_users(
        [[5, 4, 3, 2], [7], []],
        [["view", "purchase", "refund", "view"], ["cart"], None],
        [[1.0, 2.0], None, np.array([0.5, 0.25])],
        encoding,
    )
    assert got.items.tolist() == [[5, 4, 3], [7, 0, 0], [0, 0, 0]]
    assert got.mask.tolist() == [[True, True, True], [True, False, False], [False, False, False]]
    assert got.types.tolist() == [[2, 1, 0], [0, 0, 0], [0, 0, 0]]  # refund, cart: types it never saw
    assert got.features is not None and got.features.tolist() == [[1.0, 2.0], [0.0, 0.0], [0.5, 0.25]]
    assert got.has_features.tolist() == [True, False, True]


def test_an_encoding_without_types_or_features_reads_neither() -> None:
    got = encode_users([[1, 2]], [["view", "view"]], [[1.0, 2.0]], UserEncoding(2))
    assert got.types.tolist() == [[0, 0]] and got.features is None and not got.has_features.any()
    with pytest.raises(ValueError, match="user_features of row 0 has 3 values; the model reads 2"):
        encode_users([[1]], None, [[1.0, 2.0, 3.0]], UserEncoding(2, (), USER_FEATURES))


def test_ids_map_to_rows_as_spark_maps_them_unknown_ids_dropped_with_their_types() -> None:
    index = {"a": 1, "b": 2, "c": 3}
    rows, types = index_histories([["c", "zz", "a"], None, ["b"]], [["view", "cart", "purchase"], None, None], index)
    assert rows == [[3, 1], [], [2]]
    assert types == [["view", "purchase"], [], []]
    rows, types = index_histories([["a", "q"]], None, index)
    assert rows == [[1]] and types is None
