"""Top-k over score matrices, in numpy, scipy and torch (no Spark): what every scorer, the ranker's
candidates and the list rules share.

Shapes: B users, n items. Ties always go to the lower item index, so the top k is a prefix of the
top k + 1 (the metric@k curves rely on it), and masked items (-inf) are never counted as usable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

import numpy as np
import torch
from scipy import sparse

# Item-item weights: dense (EASE's B) or sparse (item-kNN's neighbours, scipy CSR, no negative weight).
ItemWeights: TypeAlias = np.ndarray | sparse.csr_matrix


def binary_rows(rows: list[np.ndarray], n: int) -> np.ndarray:
    """The binary user x item matrix [len(rows), n] of each user's item rows."""
    x = np.zeros((len(rows), n), dtype=np.float32)
    for i, r in enumerate(rows):
        x[i, r] = 1.0
    return x


def held_scores(weights: ItemWeights, rows: list[np.ndarray]) -> np.ndarray:
    """x_u W for the binary row x_u of each user's item ``rows``: [len(rows), n], dense. A sparse W is
    multiplied sparse, so the cost grows with the users' items x neighbours, not with n x n."""
    if not sparse.issparse(weights):
        return binary_rows(rows, weights.shape[0]) @ weights
    return np.asarray(_sparse_product(weights, rows).toarray(), dtype=np.float32)


def held_scores_at(weights: ItemWeights, rows: list[np.ndarray], columns: np.ndarray) -> np.ndarray:
    """``held_scores`` at ``columns`` [B, m] only (item rows of each user): [B, m]. A sparse W never
    makes the dense [B, n] row."""
    if not sparse.issparse(weights):
        return np.take_along_axis(held_scores(weights, rows), columns, axis=1)
    product = _sparse_product(weights, rows)
    picked = product[np.repeat(np.arange(len(rows)), columns.shape[1]), columns.ravel()]
    return np.asarray(picked, dtype=np.float32).reshape(columns.shape)


def held_top(
    weights: ItemWeights, rows: list[np.ndarray], allowed: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(top item rows [B, min(k, n)], their scores, usable count [B]) of x_u W over the allowed items
    outside each user's ``rows``: ``top_indices`` of the masked ``held_scores``.

    A sparse W (no negative weight) gives the same lists without a dense row: each user's top comes
    from its non-zero scores, and a user with fewer than k of them gets the lowest-indexed allowed
    zeros after them, as the tie rule orders a dense row. The cost grows with the users' items x
    neighbours, not with the catalogue.
    """
    if not sparse.issparse(weights):
        scores = masked_scores(held_scores(weights, rows), allowed, rows)
        top, usable = top_indices(scores, k)
        return top, np.take_along_axis(scores, top, axis=1), usable
    n, b = weights.shape[1], len(rows)
    kk = min(k, n)
    product = _sparse_product(weights, rows)
    top = np.zeros((b, kk), dtype=np.int64)
    values = np.full((b, kk), -np.inf, dtype=np.float32)
    usable = np.zeros(b, dtype=np.int64)
    for i in range(b):
        span = slice(product.indptr[i], product.indptr[i + 1])
        cols, vals = product.indices[span].astype(np.int64), product.data[span]
        held = np.asarray(rows[i], dtype=np.int64)
        scored = cols[vals > 0]
        keep = (vals > 0) & allowed[cols] & ~np.isin(cols, held)
        cols, vals = cols[keep], vals[keep]
        order = np.lexsort((cols, -vals))[:kk]
        picked, got = cols[order], vals[order]
        zeros = _first_where(n, kk - len(picked), lambda a, b: allowed[a:b], np.concatenate([held, scored]))
        picked = np.concatenate([picked, zeros])
        top[i, : len(picked)] = picked
        values[i, : len(picked)] = np.concatenate([got, np.zeros(len(zeros), dtype=np.float32)])
        usable[i] = len(picked)
    return top, values, usable


def _sparse_product(weights: sparse.csr_matrix, rows: list[np.ndarray]) -> sparse.csr_matrix:
    """x W, sparse [len(rows), n], for the binary rows x of each user's items (an item counts once)."""
    held = [np.unique(np.asarray(r, dtype=np.int64)) for r in rows]
    columns = np.concatenate(held) if held else np.zeros(0, dtype=np.int64)
    starts = np.cumsum([0, *(len(r) for r in held)])
    x = sparse.csr_matrix(
        (np.ones(len(columns), dtype=np.float32), columns, starts), shape=(len(rows), weights.shape[0])
    )
    return (x @ weights).tocsr()


def _first_where(
    n: int, count: int, test: Callable[[int, int], np.ndarray], excluded: np.ndarray | None = None, chunk: int = 1 << 16
) -> np.ndarray:
    """The ``count`` lowest indices below ``n`` where ``test(start, stop)`` (a bool mask of that span)
    holds, outside ``excluded`` (fewer when there are not as many): the span is scanned a chunk at a
    time and the scan stops once there are enough, so a row of a million scores costs a chunk."""
    found: list[np.ndarray] = []
    for start in range(0, n, chunk) if count > 0 else ():
        here = np.flatnonzero(test(start, min(start + chunk, n))) + start
        if excluded is not None:
            here = here[~np.isin(here, excluded)]
        found.append(here[:count])
        count -= len(found[-1])
        if count == 0:
            break
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


def weight_block(weights: ItemWeights, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """W[rows][:, columns], dense [len(rows), len(columns)], for dense or sparse W."""
    if sparse.issparse(weights):
        return np.asarray(weights[rows][:, columns].toarray())
    return np.asarray(weights[np.ix_(rows, columns)])


def masked_scores(scores: np.ndarray, allowed: np.ndarray, seen: list[np.ndarray]) -> np.ndarray:
    """``scores`` [B, n] with -inf where an item is not allowed or already seen.

    A scorer returns a new array (the ``Scorer`` contract), so it is masked in place; a read-only or
    non-float one (a broadcast view) is copied first.
    """
    out = scores
    if not (isinstance(out, np.ndarray) and out.flags.writeable and out.dtype in (np.float32, np.float64)):
        out = np.array(scores, dtype=np.float64 if np.asarray(scores).dtype != np.float32 else np.float32)
    if not allowed.all():
        out[:, ~allowed] = -np.inf
    lengths = np.fromiter((len(s) for s in seen), dtype=np.int64, count=len(seen))
    if lengths.sum():
        out[np.repeat(np.arange(len(seen)), lengths), np.concatenate(seen)] = -np.inf
    return out


def top_indices(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices [B, min(k, n)] of each row's highest scores, best first, and how many of them are
    usable (finite: a masked item is never served). Ties go to the lower index, so the top k is always
    a prefix of the top k + 1 (the metric@k curves rely on it).

    One ``torch.topk`` over the whole block does the selection (a partial sort, several times faster
    than ``numpy.argpartition``); only rows where the k-th score is tied across the cut are redone
    exactly (rare with real-valued scores).
    """
    n = scores.shape[1]
    kk = min(k, n)
    if kk == 0 or len(scores) == 0:
        return np.zeros((len(scores), kk), dtype=np.int64), np.zeros(len(scores), dtype=np.int64)
    values_t, part_t = torch.topk(torch.from_numpy(scores), kk, dim=1, sorted=True)
    values, part = values_t.numpy(), part_t.numpy()
    order = np.lexsort((part, -values), axis=1)
    top = np.take_along_axis(part, order, axis=1)
    values = np.take_along_axis(values, order, axis=1)
    if kk < n:
        kth = values[:, -1:]
        tied = np.flatnonzero(np.isfinite(kth[:, 0]) & ((scores >= kth).sum(axis=1) > kk))
        for i in tied:
            top[i] = _tied_top(scores[i], top[i], values[i])
            values[i] = scores[i, top[i]]
    return top, np.isfinite(values).sum(axis=1)


def dot_top_indices(
    users: np.ndarray, items: np.ndarray, allowed: np.ndarray, seen: list[np.ndarray], k: int, chunk: int = 4096
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``top_indices`` of ``users @ items.T`` (plus the top scores) without the [B, n] score matrix.

    The items are scored ``chunk`` at a time into one reused buffer (a few MB, cache-resident: most
    of the cost of a dense block is writing and re-reading it), masked, and cut to each chunk's top
    k + 1; the chunks' tops are merged. A row whose k-th and (k + 1)-th scores tie inside a chunk is
    redone exactly, so ties still go to the lower index.

    Returns:
        (top [B, min(k, n)], their scores, usable count per row).
    """
    n = items.shape[0]
    kk = min(k, n)
    b = len(users)
    if kk == 0 or b == 0:
        return np.zeros((b, kk), dtype=np.int64), np.zeros((b, kk), dtype=np.float32), np.zeros(b, dtype=np.int64)
    users_t = torch.from_numpy(np.ascontiguousarray(users, dtype=np.float32))
    items_t = torch.from_numpy(np.ascontiguousarray(items, dtype=np.float32))
    lengths = np.fromiter((len(x) for x in seen), dtype=np.int64, count=b)
    seen_rows = np.repeat(np.arange(b), lengths)
    seen_cols = np.concatenate(seen).astype(np.int64) if lengths.sum() else np.zeros(0, dtype=np.int64)
    buffer = torch.empty((b, min(chunk, n)), dtype=torch.float32)
    values, indices, tied = [], [], np.zeros(b, dtype=bool)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        out = buffer[:, : stop - start]
        torch.mm(users_t, items_t[start:stop].T, out=out)
        scores = out.numpy()
        blocked = ~allowed[start:stop]
        if blocked.any():
            scores[:, blocked] = -np.inf
        inside = (seen_cols >= start) & (seen_cols < stop)
        if inside.any():
            scores[seen_rows[inside], seen_cols[inside] - start] = -np.inf
        take = min(kk + 1, stop - start)
        top_v, top_i = torch.topk(out, take, dim=1, sorted=True)
        v, i = top_v.numpy(), top_i.numpy()
        if take == kk + 1:
            tied |= np.isfinite(v[:, kk - 1]) & (v[:, kk - 1] == v[:, kk])
            v, i = v[:, :kk], i[:, :kk]
        values.append(v)
        indices.append(i + start)
    value = np.concatenate(values, axis=1)
    index = np.concatenate(indices, axis=1)
    order = np.lexsort((index, -value), axis=1)[:, :kk]
    top = np.take_along_axis(index, order, axis=1)
    top_values = np.take_along_axis(value, order, axis=1)
    for r in np.flatnonzero(tied):
        row = (users_t[r : r + 1] @ items_t.T).numpy()[0]
        row[~allowed] = -np.inf
        row[seen_cols[seen_rows == r]] = -np.inf
        top[r] = _tied_top(row, top[r], top_values[r])
        top_values[r] = row[top[r]]
    return top, top_values, np.isfinite(top_values).sum(axis=1)


def _tied_top(row: np.ndarray, top: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The top ``len(top)`` of ``row`` with ties at the k-th score going to the lower index, from a
    top (``top``, ``values``, best first) that is right except for which tied items it holds.

    Every score above the k-th is already in ``top``; the rest are the lowest-indexed items equal
    to the k-th, found by ``_first_where``'s scan, which stops once there are enough. A
    sparse score (item-kNN over a large catalogue) ties most items at 0, so the scan ends in the
    first chunk instead of sorting the whole row.
    """
    kth = values[-1]
    above = top[values > kth]
    above = above[np.lexsort((above, -row[above]))]
    ties = _first_where(len(row), len(top) - len(above), lambda a, b: row[a:b] == kth)
    return np.concatenate([above, ties])
