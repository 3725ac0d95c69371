"""Batch top-K scoring inside ``mapInPandas``: never a users x items cross join.

A scorer turns a block of users (``UserBlock``: ids, recent history and seen items, as rows of the
item matrix) into a score matrix [block, items]; seen and ineligible items are masked and a partial
sort keeps the top K. Work grows with users x items / cores; memory with ``block_size`` x items.
Every model sparkrec compares (the two-tower model, popularity, ALS, EASE) scores through here, so
they all see the same users, the same masking and the same tie-breaking.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkrec.schemas import require_columns

TOP_K_SCHEMA = T.StructType(
    [
        T.StructField("user_id", T.StringType(), False),
        T.StructField("rank", T.IntegerType(), False),
        T.StructField("item_id", T.StringType(), False),
        T.StructField("score", T.DoubleType(), False),
        T.StructField("reason", T.StringType()),
    ]
)


@dataclass(frozen=True)
class UserBlock:
    """A block of users as rows of the item matrix."""

    user_ids: list[str]
    history: list[np.ndarray]  # recent positive items, most recent first
    seen: list[np.ndarray]  # every item the user interacted with
    vectors: np.ndarray | None = None  # [B, D] precomputed user vectors, when the frame has ``vector``
    history_types: list[np.ndarray] | None = None  # the event type of each history item (strings)
    user_features: np.ndarray | None = None  # [B, F] ``features.USER_FEATURES``


def event_type_codes(types: list[str] | tuple[str, ...] | None) -> dict[str, int]:
    """The user tower's code of each event type in its vocabulary ``types``: type i has code i + 1
    (0, left out here, is padding and any type the vocabulary lacks), as ``features.encode_examples``."""
    return {t: i + 1 for i, t in enumerate(types or ())}


class LazyModule:
    """For a scorer that builds its torch module from plain arrays on first use (``_module``): the
    module is never pickled, so Spark ships the arrays to each Python worker and the worker builds
    its own module once."""

    _module: Any = None

    def __getstate__(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k != "_module"}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._module = None


@dataclass
class TwoTowerScorer(LazyModule):
    """Dot product of attention-pooled history vectors with the item vectors."""

    item_vectors: np.ndarray  # [n_items, D]
    user_tower_state: dict[str, np.ndarray]
    dim: int
    history_length: int
    event_types: tuple[str, ...] = ()  # the type vocabulary the user tower was trained with
    name: str = "two_tower"

    def scores(self, block: UserBlock) -> np.ndarray:
        """Scores [B, n_items]."""
        return self.user_vectors(block) @ self.item_vectors.T

    def user_vectors(self, block: UserBlock) -> np.ndarray:
        """The user tower over each user's history: [B, D]."""
        import torch

        from sparkrec.models.two_tower import UserTower

        if self._module is None:
            # a tower trained without history attention (an ablation) has no query to load
            features = self.user_tower_state.get("features.weight")
            tower = UserTower(
                self.dim,
                self.history_length,
                attention="query" in self.user_tower_state,
                event_types=len(self.event_types),
                user_features=0 if features is None else features.shape[1],
            )
            tower.load_state_dict({k: torch.from_numpy(v) for k, v in self.user_tower_state.items()})
            self._module = tower.eval()
        length = self.history_length
        rows = np.zeros((len(block.history), length), dtype=np.int64)
        mask = np.zeros((len(block.history), length), dtype=bool)
        types = np.zeros((len(block.history), length), dtype=np.int64)
        code = event_type_codes(self.event_types)
        for i, h in enumerate(block.history):
            h = np.asarray(h, dtype=np.int64)[:length]
            rows[i, : len(h)] = h
            mask[i, : len(h)] = True
            if code and block.history_types is not None:
                named = block.history_types[i][: len(h)]
                types[i, : len(named)] = [code.get(t, 0) for t in named]
        vectors = torch.from_numpy(self.item_vectors)
        with torch.inference_mode():
            feats = None if block.user_features is None else torch.from_numpy(block.user_features)
            users = self._module(
                vectors[torch.from_numpy(rows)], torch.from_numpy(mask), torch.from_numpy(types), feats
            )
        return users.numpy()


@dataclass
class PopularityScorer:
    """The same popular items for everybody (the baseline every model must beat)."""

    popularity: np.ndarray  # [n_items]
    name: str = "popularity"

    def scores(self, block: UserBlock) -> np.ndarray:
        return np.broadcast_to(self.popularity, (len(block.user_ids), len(self.popularity))).astype(np.float64)


@dataclass
class VectorScorer:
    """Dot product of precomputed user vectors (the ``vector`` column) with the item matrix."""

    item_vectors: np.ndarray  # [n_items, D]
    name: str = "vectors"

    def scores(self, block: UserBlock) -> np.ndarray:
        return self.user_vectors(block) @ np.asarray(self.item_vectors, dtype=np.float32).T

    def user_vectors(self, block: UserBlock) -> np.ndarray:
        if block.vectors is None:
            raise ValueError("VectorScorer needs a 'vector' column (array<float>) in the users frame")
        return block.vectors


class Scorer(Protocol):
    """What ``top_k`` needs of a model: a name (the ``reason`` column) and block scores: a new
    [B, n_items] float array each call, which ``top_k`` may change in place.

    A dot-product model also has ``item_vectors`` [n_items, D] and ``user_vectors(block)`` [B, D];
    ``top_k`` then scores chunk by chunk (``dot_top_indices``) instead of calling ``scores``.
    """

    name: str

    def scores(self, block: UserBlock) -> np.ndarray: ...


def block_top(
    scorer: Scorer, block: UserBlock, allowed: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(top item rows [B, k], their scores, usable count) of one block: seen and not-allowed items masked."""
    if hasattr(scorer, "user_vectors") and hasattr(scorer, "item_vectors"):
        return dot_top_indices(scorer.user_vectors(block), scorer.item_vectors, allowed, block.seen, k)
    scores = masked_scores(scorer.scores(block), allowed, block.seen)
    top, usable = top_indices(scores, k)
    return top, np.take_along_axis(scores, top, axis=1), usable


def top_k(
    users_df: DataFrame, scorer: Scorer, item_ids: list[str], eligible: np.ndarray, k: int, block_size: int = 512
) -> DataFrame:
    """Top ``k`` eligible, unseen items per user.

    Args:
        users_df: ``user_id``, ``history`` (array<int>: rows of the item matrix, most recent first),
            ``seen`` (array<int>: rows never to recommend to this user), optionally ``vector``
            (array<float>: a precomputed user vector, for ``VectorScorer``).
        scorer: turns a block of histories into scores over all items.
        item_ids: id of each item matrix row.
        eligible: bool [n_items]; false rows (inactive, out of stock) are never recommended.
        k: items per user; fewer only when fewer items are eligible and unseen.

    Returns:
        ``user_id, rank (1..k), item_id, score, reason``.
    """
    require_columns(users_df, ["user_id", "history", "seen"], "top_k")
    items = np.asarray(item_ids, dtype=object)
    eligible = np.asarray(eligible, dtype=bool)
    sc = users_df.sparkSession.sparkContext
    shared = sc.broadcast((scorer, items, eligible))

    def score_partition(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        scorer_, items_, eligible_ = shared.value
        for frame in frames:
            for start in range(0, len(frame), block_size):
                block = frame.iloc[start : start + block_size]
                yield _top_k_block(block, scorer_, items_, eligible_, k)

    return users_df.select(*user_columns(users_df)).mapInPandas(score_partition, TOP_K_SCHEMA)


def user_columns(users_df: DataFrame) -> list[str]:
    """The columns of ``users_df`` a scorer reads (``user_block``): ``user_id``, ``history``, ``seen`` and
    those of ``USER_INPUTS`` it has. A user tower trained with event types or user features scores a
    user without them as one it never saw: what it is served must be what it was trained on."""
    return ["user_id", "history", "seen"] + [c for c in USER_INPUTS if c in users_df.columns]


def _top_k_block(block: pd.DataFrame, scorer: Scorer, items: np.ndarray, eligible: np.ndarray, k: int) -> pd.DataFrame:
    users = user_block(block)
    top, scores, usable = block_top(scorer, users, eligible, k)
    return ranked_frame(users.user_ids, top, scores, usable, items, scorer.name)


USER_INPUTS = ("vector", "history_types", "user_features")  # optional per-user columns of ``user_block``


def user_block(frame: pd.DataFrame) -> UserBlock:
    """The rows of a ``mapInPandas`` batch (``user_id``, ``history``, ``seen``, optional ``vector``,
    ``history_types`` and ``user_features``)."""
    as_rows = lambda col: [np.asarray(h if h is not None else [], dtype=np.int64) for h in frame[col]]  # noqa: E731
    vectors = None
    if "vector" in frame.columns:
        vectors = np.stack([np.asarray(v, dtype=np.float32) for v in frame["vector"]]) if len(frame) else None
    types = None
    if "history_types" in frame.columns:
        types = [np.asarray(t if t is not None else [], dtype=object) for t in frame["history_types"]]
    feats = None
    if "user_features" in frame.columns and len(frame):
        feats = np.stack([np.asarray(f, dtype=np.float32) for f in frame["user_features"]])
    return UserBlock(list(frame["user_id"]), as_rows("history"), as_rows("seen"), vectors, types, feats)


def binary_rows(rows: list[np.ndarray], n: int) -> np.ndarray:
    """The binary user x item matrix [len(rows), n] of each user's item rows."""
    x = np.zeros((len(rows), n), dtype=np.float32)
    for i, r in enumerate(rows):
        x[i, r] = 1.0
    return x


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
    import torch

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
            top[i] = _top_indices_exact(scores[i], kk)
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
    import torch

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
        v, i = torch.topk(out, take, dim=1, sorted=True)
        v, i = v.numpy(), i.numpy()
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
        top[r] = _top_indices_exact(row, kk)
        top_values[r] = row[top[r]]
    return top, top_values, np.isfinite(top_values).sum(axis=1)


def ranked_frame(
    user_ids: list[str],
    top: np.ndarray,
    scores: np.ndarray,
    usable: np.ndarray,
    items: np.ndarray,
    reason: str | np.ndarray,
) -> pd.DataFrame:
    """``user_id, rank, item_id, score, reason`` rows of the first ``usable`` columns of each row;
    ``reason`` is one string, one per user [B] or one per row and rank [B, k]."""
    keep = np.arange(top.shape[1])[None, :] < np.minimum(usable, top.shape[1])[:, None]
    rows, cols = np.nonzero(keep)
    reasons = np.asarray(reason, dtype=object)
    return pd.DataFrame(
        {
            "user_id": np.asarray(user_ids, dtype=object)[rows],
            "rank": (cols + 1).astype(np.int32),
            "item_id": items[top[rows, cols]],
            "score": scores[rows, cols].astype(np.float64),
            "reason": (
                reasons[rows, cols]
                if reasons.ndim == 2
                else reasons[rows]
                if reasons.ndim
                else np.full(len(rows), reason, dtype=object)
            ),
        }
    )


def _top_indices_exact(row: np.ndarray, kk: int) -> np.ndarray:
    """Indices of the ``kk`` highest scores of one row, best first; ties go to the lower index."""
    if kk >= len(row):
        cand = np.arange(len(row))
    else:
        kth = np.partition(row, len(row) - kk)[len(row) - kk]
        above = np.flatnonzero(row > kth)
        ties = np.flatnonzero(row == kth)
        cand = np.concatenate([above, ties[: kk - len(above)]])
    return cand[np.lexsort((cand, -row[cand]))]


def to_matrix_rows(histories_df: DataFrame, item_index_df: DataFrame) -> DataFrame:
    """Map the ``history`` and ``seen`` item ids of each user to item-matrix rows (``history_types``,
    when there, keeps step with ``history``; ``user_features`` passes through).

    ``item_index_df``: ``item_id``, ``row`` (int). Items not in the matrix are dropped from both.
    """
    from sparkrec.features import positions_to_ids

    require_columns(histories_df, ["user_id", "history", "seen"], "to_matrix_rows")
    index = item_index_df.select("item_id", F.col("row").alias("id"))
    types = "history_types" if "history_types" in histories_df.columns else None
    history = positions_to_ids(histories_df, "user_id", "history", index, parallel=types)
    seen = positions_to_ids(histories_df, "user_id", "seen", index)
    out = history.join(seen, "user_id").select("user_id", "history", "seen", *([types] if types else []))
    if "user_features" in histories_df.columns:
        out = out.join(histories_df.select("user_id", "user_features"), "user_id")
    return out
