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
import torch
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkrec.encoding import UserEncoding, encode_users
from sparkrec.features import positions_to_ids
from sparkrec.models.topk import dot_top_indices, masked_scores, top_indices
from sparkrec.models.two_tower import UserTower
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
    user_features: np.ndarray | None = None  # [B, F] ``encoding.USER_FEATURES``


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
    """Dot product of the user tower's vectors (history, event types and features, as ``encoding``
    reads them) with the item vectors."""

    item_vectors: np.ndarray  # [n_items, D]
    user_tower_state: dict[str, np.ndarray]
    dim: int
    encoding: UserEncoding  # what the user tower was trained to read
    name: str = "two_tower"

    def scores(self, block: UserBlock) -> np.ndarray:
        """Scores [B, n_items]."""
        return self.user_vectors(block) @ self.item_vectors.T

    def user_vectors(self, block: UserBlock) -> np.ndarray:
        """The user tower over each user of the block: [B, D]."""
        if self._module is None:
            # a tower trained without history attention (an ablation) has no query to load
            tower = UserTower(
                self.dim,
                self.encoding.length,
                attention="query" in self.user_tower_state,
                event_types=len(self.encoding.event_types),
                user_features=len(self.encoding.user_features),
            )
            tower.load_state_dict({k: torch.from_numpy(v) for k, v in self.user_tower_state.items()})
            self._module = tower.eval()
        encoded = encode_users(block.history, block.history_types, block.user_features, self.encoding)
        with torch.inference_mode():
            history = torch.from_numpy(self.item_vectors)[torch.from_numpy(encoded.items)]
            return self._module.read(history, encoded).numpy()


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
    ``top_k`` then scores chunk by chunk (``dot_top_indices``) instead of calling ``scores``. A model
    with a faster top of its own (the collaborative scores over sparse weights) has ``top(block,
    allowed, k)``, which returns what ``block_top`` does.
    """

    name: str

    def scores(self, block: UserBlock) -> np.ndarray: ...


def block_top(
    scorer: Scorer, block: UserBlock, allowed: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(top item rows [B, k], their scores, usable count) of one block: seen and not-allowed items masked."""
    if hasattr(scorer, "user_vectors") and hasattr(scorer, "item_vectors"):
        return dot_top_indices(scorer.user_vectors(block), scorer.item_vectors, allowed, block.seen, k)
    if hasattr(scorer, "top"):
        return scorer.top(block, allowed, k)
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


def to_matrix_rows(histories_df: DataFrame, item_index_df: DataFrame) -> DataFrame:
    """Map the ``history`` and ``seen`` item ids of each user to item-matrix rows (``history_types``,
    when there, keeps step with ``history``; ``user_features`` passes through).

    ``item_index_df``: ``item_id``, ``row`` (int). Items not in the matrix are dropped from both.
    """
    require_columns(histories_df, ["user_id", "history", "seen"], "to_matrix_rows")
    index = item_index_df.select("item_id", F.col("row").alias("id"))
    types = "history_types" if "history_types" in histories_df.columns else None
    history = positions_to_ids(histories_df, "user_id", "history", index, parallel=types)
    seen = positions_to_ids(histories_df, "user_id", "seen", index)
    out = history.join(seen, "user_id").select("user_id", "history", "seen", *([types] if types else []))
    if "user_features" in histories_df.columns:
        out = out.join(histories_df.select("user_id", "user_features"), "user_id")
    return out
