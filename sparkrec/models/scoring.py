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
from typing import Protocol

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


@dataclass
class TwoTowerScorer:
    """Dot product of attention-pooled history vectors with the item vectors."""

    item_vectors: np.ndarray  # [n_items, D]
    user_tower_state: dict[str, np.ndarray]
    dim: int
    history_length: int
    name: str = "two_tower"

    def __post_init__(self) -> None:
        self._tower = None

    def __getstate__(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k != "_tower"}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._tower = None

    def scores(self, block: UserBlock) -> np.ndarray:
        """Scores [B, n_items]."""
        import torch

        from sparkrec.models.two_tower import UserTower

        if self._tower is None:
            tower = UserTower(self.dim, self.history_length)
            tower.load_state_dict({k: torch.from_numpy(v) for k, v in self.user_tower_state.items()})
            self._tower = tower.eval()
        length = self.history_length
        rows = np.zeros((len(block.history), length), dtype=np.int64)
        mask = np.zeros((len(block.history), length), dtype=bool)
        for i, h in enumerate(block.history):
            h = np.asarray(h, dtype=np.int64)[:length]
            rows[i, : len(h)] = h
            mask[i, : len(h)] = True
        vectors = torch.from_numpy(self.item_vectors)
        with torch.inference_mode():
            hist_vectors = vectors[torch.from_numpy(rows)]
            users = self._tower(hist_vectors, torch.from_numpy(mask))
            scores = users @ vectors.T
        return scores.numpy().astype(np.float64)


@dataclass
class PopularityScorer:
    """The same popular items for everybody (the baseline every model must beat)."""

    popularity: np.ndarray  # [n_items]
    name: str = "popularity"

    def scores(self, block: UserBlock) -> np.ndarray:
        return np.broadcast_to(self.popularity, (len(block.user_ids), len(self.popularity))).astype(np.float64)


class Scorer(Protocol):
    """What ``top_k`` needs of a model: a name (the ``reason`` column) and block scores."""

    name: str

    def scores(self, block: UserBlock) -> np.ndarray: ...


def top_k(users_df: DataFrame, scorer: Scorer, item_ids: list[str],
          eligible: np.ndarray, k: int, block_size: int = 512) -> DataFrame:
    """Top ``k`` eligible, unseen items per user.

    Args:
        users_df: ``user_id``, ``history`` (array<int>: rows of the item matrix, most recent first),
            ``seen`` (array<int>: rows never to recommend to this user).
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

    return users_df.select("user_id", "history", "seen").mapInPandas(score_partition, TOP_K_SCHEMA)


def _top_k_block(block: pd.DataFrame, scorer: Scorer, items: np.ndarray, eligible: np.ndarray,
                 k: int) -> pd.DataFrame:
    as_rows = lambda col: [np.asarray(h if h is not None else [], dtype=np.int64) for h in block[col]]  # noqa: E731
    users = UserBlock(list(block["user_id"]), as_rows("history"), as_rows("seen"))
    scores = np.array(scorer.scores(users), dtype=np.float64, copy=True)
    scores[:, ~eligible] = -np.inf
    for i, seen in enumerate(block["seen"]):
        if seen is not None and len(seen):
            scores[i, np.asarray(seen, dtype=np.int64)] = -np.inf
    n_valid = np.isfinite(scores).sum(axis=1)
    kk = min(k, scores.shape[1])
    out_users, out_rank, out_items, out_scores, out_reason = [], [], [], [], []
    for i, user in enumerate(block["user_id"]):
        cand = _top_indices(scores[i], kk)[: min(kk, n_valid[i])]
        for rank, j in enumerate(cand, start=1):
            out_users.append(user)
            out_rank.append(rank)
            out_items.append(items[j])
            out_scores.append(float(scores[i, j]))
            out_reason.append(scorer.name)
    return pd.DataFrame(
        {"user_id": out_users, "rank": np.asarray(out_rank, dtype=np.int32), "item_id": out_items,
         "score": out_scores, "reason": out_reason}
    )


def _top_indices(row: np.ndarray, kk: int) -> np.ndarray:
    """Indices of the ``kk`` highest scores, best first; ties go to the lower index.

    A partial sort finds the kk-th score; ties at that score are then taken by index, so the top k
    is always a prefix of the top k + 1 (the metric@k curves rely on it).
    """
    if kk >= len(row):
        cand = np.arange(len(row))
    else:
        kth = np.partition(row, len(row) - kk)[len(row) - kk]
        above = np.flatnonzero(row > kth)
        ties = np.flatnonzero(row == kth)
        cand = np.concatenate([above, ties[: kk - len(above)]])
    return cand[np.lexsort((cand, -row[cand]))]


def to_matrix_rows(histories_df: DataFrame, item_index_df: DataFrame) -> DataFrame:
    """Map the ``history`` and ``seen`` item ids of each user to item-matrix rows.

    ``item_index_df``: ``item_id``, ``row`` (int). Items not in the matrix are dropped from both.
    """
    from sparkrec.features import positions_to_ids

    require_columns(histories_df, ["user_id", "history", "seen"], "to_matrix_rows")
    index = item_index_df.select("item_id", F.col("row").alias("id"))
    history = positions_to_ids(histories_df, "user_id", "history", index)
    seen = positions_to_ids(histories_df, "user_id", "seen", index)
    return history.join(seen, "user_id").select("user_id", "history", "seen")
