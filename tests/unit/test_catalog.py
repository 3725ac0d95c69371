"""Item vectors read as Arrow: one float matrix, never a Python float per value."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from sparkrec.catalog import arrow_matrix, unit_rows


def test_a_list_column_becomes_one_matrix_across_chunks_and_slices() -> None:
    first = pa.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], type=pa.list_(pa.float32()))
    second = pa.array([[7.0, 8.0]], type=pa.list_(pa.float32()))
    column = pa.chunked_array([first.slice(1), second])  # a slice keeps offsets into the first chunk's values
    matrix = arrow_matrix(column)
    assert matrix is not None and matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix, [[3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])


def test_lists_of_several_lengths_are_not_a_matrix() -> None:
    assert arrow_matrix(pa.array([[1.0, 2.0], [3.0]], type=pa.list_(pa.float64()))) is None
    assert arrow_matrix(pa.chunked_array([], type=pa.list_(pa.float32()))).shape == (0, 0)


def test_one_chunk_is_a_view_of_arrows_buffer_and_several_are_one_new_matrix() -> None:
    one = pa.array([[1.0, 2.0], [3.0, 4.0]], type=pa.list_(pa.float32()))
    view = arrow_matrix(pa.chunked_array([one]))
    assert view is not None and not view.flags.writeable  # no copy: the driver holds the vectors once
    several = arrow_matrix(pa.chunked_array([one, pa.array([], type=one.type), one.slice(1)]))
    assert several is not None and several.flags.writeable
    np.testing.assert_array_equal(several, [[1.0, 2.0], [3.0, 4.0], [3.0, 4.0]])
    assert arrow_matrix(pa.chunked_array([one, pa.array([[5.0]], type=one.type)])) is None


def test_unit_rows_scale_each_row_to_length_one_and_leave_a_zero_row_without_direction() -> None:
    matrix = np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]], dtype=np.float32)
    unit, directed = unit_rows(matrix, copy=True)
    assert unit.dtype == np.float32 and directed.tolist() == [True, False, True]
    np.testing.assert_allclose(unit, [[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]])
    assert matrix[0, 0] == 3.0  # copy=True leaves the input alone
    same, _ = unit_rows(matrix)
    assert same is matrix and matrix[0, 0] == np.float32(0.6)  # otherwise in place
    read_only = np.array([[1.0, 1.0]])
    read_only.flags.writeable = False
    scaled, _ = unit_rows(read_only)
    assert scaled is not read_only and scaled.dtype == np.float32 and read_only[0, 0] == 1.0
