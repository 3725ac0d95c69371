"""From a model's scores to the list a user is shown: candidates, the ranking step, business rules.

Per block of users inside ``mapInPandas`` (the same blocks as ``scoring.top_k``, never a users x
items cross join):

1. the scorer scores the block against every item; items not allowed (inactive, out of stock, on
   the exclusion list) and items the user already interacted with are masked;
2. the best ``candidates`` per user are kept with a partial sort (``scoring.top_indices``);
3. the ranking step re-scores them (``Ranker``; ``retrieval`` keeps the model's score) — the
   replaceable step a learned ranker plugs into;
4. the list is picked from the candidates: maximal marginal relevance over the item embeddings
   (``mmr_lambda``; 1.0 is score order) under a per-category cap (``max_per_category``). When the
   cap leaves fewer than k candidates, capped ones fill the list in score order, so every list has
   exactly min(k, allowed unseen items) distinct items.

Every model row says why (``reason``): ``<model>:history=<item_id>``, the item of the user's history
closest to the recommended one in the model's item space ("because you interacted with …"); with
the learned ranker (``two_tower+dcn``), the history item that adds most to the item's collaborative
score, else the closest one.

Users without history (no positive event on a catalogue item) get the items most popular among
the day's active users in their segment — the category they interacted with most, else everybody —
with ``reason`` ``fallback:popular_in_category`` or ``fallback:popular``; the cap and the masks
apply to them too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from pyspark.sql import DataFrame

from sparkrec.config import FALLBACK_SEGMENTS
from sparkrec.models.ranker import DCNRanker, rank_scores, retrieval_scores
from sparkrec.models.scoring import (
    TOP_K_SCHEMA,
    LazyModule,
    Scorer,
    TwoTowerScorer,
    UserBlock,
    block_top,
    ranked_frame,
    user_block,
    user_columns,
)
from sparkrec.models.specs import RankerSpec
from sparkrec.models.topk import (
    ItemWeights,
    dot_top_indices,
    held_scores_at,
    held_top,
    masked_scores,
    top_indices,
    weight_block,
)
from sparkrec.schemas import require_columns

FALLBACK_CATEGORY = "fallback:popular_in_category"
FALLBACK_GLOBAL = "fallback:popular"


@dataclass(frozen=True)
class ListRules:
    """What the rules need, as arrays over the rows of the item matrix."""

    k: int
    candidates: int
    allowed: np.ndarray  # bool [n]: active, in stock (when known), not excluded
    popularity: np.ndarray  # float [n]: share of active users with a positive event on the item
    categories: np.ndarray | None = None  # int [n], -1 = none; None: the catalogue has no categories
    max_per_category: int = 0  # 0: no cap
    item_vectors: np.ndarray | None = None  # [n, d], L2-normalised; None: no MMR
    mmr_lambda: float = 1.0
    fallback_segment: str = "category"

    def __post_init__(self) -> None:
        if self.fallback_segment not in FALLBACK_SEGMENTS:
            choices = ", ".join(FALLBACK_SEGMENTS)
            raise ValueError(f"recommend.fallback_segment must be one of {choices}, got {self.fallback_segment!r}")

    @property
    def capped(self) -> bool:
        return self.max_per_category > 0 and self.categories is not None

    @property
    def diversified(self) -> bool:
        return self.mmr_lambda < 1.0 and self.item_vectors is not None


class Ranker(Protocol):
    """The ranking step: new scores [B, N] for each user's N candidates (item-matrix rows)."""

    name: str

    def rescore(self, block: UserBlock, candidates: np.ndarray, scores: np.ndarray) -> np.ndarray: ...


@dataclass
class RetrievalRanker:
    """Keeps the retrieval model's score: the ranking step until a learned ranker is configured."""

    name: str = "retrieval"

    def rescore(self, block: UserBlock, candidates: np.ndarray, scores: np.ndarray) -> np.ndarray:
        return scores


@dataclass
class LearnedRanker(LazyModule):
    """The model's DCN-v2 ranker (``sparkrec.models.ranker``) over candidates from two sources: each
    user's top ``candidates`` by the collaborative score (EASE or item-kNN over the catalogue,
    ``weights``: what the ranker's training lists were built from) and the towers' top
    ``retrieval_candidates`` not already among them — so items without interactions (only the towers
    score them) can still reach the list.

    ``popularity`` is the log of 1 + the users holding each item, ``recent`` the same over the last
    days (for a ranker that reads it: ``spec.recent``); ``towers`` the two-tower scorer whose user
    and item vectors the ranker reads.
    """

    towers: TwoTowerScorer  # over the catalogue
    weights: ItemWeights  # the collaborative score W [n, n], float32: EASE's B (dense) or item-kNN's (sparse)
    popularity: np.ndarray  # [n]
    ranker_state: dict[str, np.ndarray]
    spec: RankerSpec  # the network's shape and the collaborative candidates per list
    retrieval_candidates: int = 0
    recent: np.ndarray | None = None  # [n]
    name: str = "dcn"

    def propose(self, block: UserBlock, allowed: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Candidates [B, N] (item rows; ``usable`` [B] of them are real, the rest padding) and their
        collaborative scores; N = ``candidates`` + ``retrieval_candidates`` at least ``count``.

        The collaborative score proposes only items with interactions (it has no score for the others); where those are
        fewer than ``candidates`` (a catalogue of mostly new items), the towers fill the rest.
        """
        wanted = max(self.spec.candidates, count)
        first, first_scores, usable = held_top(self.weights, block.seen, allowed & (self.popularity > 0), wanted)
        short = first.shape[1] - usable  # slots the collaborative score cannot fill
        if self.retrieval_candidates == 0 and not short.any():
            return first, first_scores, usable
        width = first.shape[1] + self.retrieval_candidates
        extra, _, extra_usable = dot_top_indices(
            self.towers.user_vectors(block), self.towers.item_vectors, allowed, block.seen, width
        )
        rows = np.zeros((len(first), width), dtype=np.int64)
        count_ = np.zeros(len(first), dtype=np.int64)
        for i in range(len(first)):
            mine = first[i, : usable[i]]
            more = extra[i, : extra_usable[i]]
            more = more[~np.isin(more, mine)][: self.retrieval_candidates + short[i]]
            row = np.concatenate([mine, more])
            rows[i, : len(row)] = row
            count_[i] = len(row)
        scores = held_scores_at(self.weights, block.seen, rows)
        scores[np.arange(width)[None, :] >= count_[:, None]] = -np.inf  # padding
        return rows, scores, count_

    def rescore(self, block: UserBlock, candidates: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """The ranker's scores [B, N]; ``scores`` are the collaborative scores ``propose`` gave."""
        if self._module is None:
            module = DCNRanker(**self.spec.network())
            module.load_state_dict({k: torch.from_numpy(v) for k, v in self.ranker_state.items()})
            self._module = module.eval()
        mask = np.isfinite(scores)
        users = torch.from_numpy(np.ascontiguousarray(self.towers.user_vectors(block), dtype=np.float32))
        items = torch.from_numpy(np.asarray(self.towers.item_vectors, dtype=np.float32)[candidates])
        collaborative = torch.from_numpy(np.where(mask, scores, 0.0).astype(np.float32))
        popularity = torch.from_numpy(np.where(mask, self.popularity[candidates], 0.0).astype(np.float32))
        recent = (
            None
            if self.recent is None
            else torch.from_numpy(np.where(mask, self.recent[candidates], 0.0).astype(np.float32))
        )
        with torch.inference_mode():
            out = rank_scores(
                self._module, users, items, collaborative, popularity, torch.from_numpy(mask), recent
            ).numpy()
            # A list that no signal but the towers' tells apart (items without interactions: no
            # collaborative score, no popularity) keeps the towers' order: the ranker has nothing to
            # weigh there, and its cross layers need not keep the order of one signal.
            blind = ~((collaborative != 0) | (popularity != 0)).any(1).numpy()
            if blind.any():
                out[blind] = retrieval_scores(users[blind], items[blind]).numpy()
        return np.where(mask, out, -np.inf)

    def explain(self, block: UserBlock, picked: np.ndarray) -> np.ndarray:
        """For each picked item [B, k], the item of the user's recent history that contributes most to its
        collaborative score (the largest weight W[i, j] over the history items i); where the
        collaborative score is no reason (no positive weight: a candidate from the towers), the history
        item closest in the towers' item space. -1 where the user has no history."""
        nearest = explain(np.asarray(self.towers.item_vectors), picked, block.history)
        out = nearest.copy()
        for i, history in enumerate(block.history):
            if len(history) == 0:
                continue
            weights = weight_block(self.weights, history, picked[i])  # [history, k]
            best = weights.argmax(axis=0)
            strong = weights[best, np.arange(picked.shape[1])] > 0
            out[i] = np.where(strong, history[best], nearest[i])
        return out


@dataclass
class RankedScorer:
    """A ranker's whole step (candidates, then its scores) as a ``Scorer``: what the evaluation
    compares. Items outside the candidates score -inf (never listed)."""

    ranker: LearnedRanker
    allowed: np.ndarray  # bool [n]
    name: str = "two_tower"

    def scores(self, block: UserBlock) -> np.ndarray:
        candidates, collaborative, _ = self.ranker.propose(block, self.allowed, 0)
        ranked = self.ranker.rescore(block, candidates, collaborative)
        out = np.full((len(candidates), len(self.allowed)), -np.inf)
        rows, cols = np.nonzero(np.isfinite(ranked))  # padding left out: it would overwrite item row 0
        out[rows, candidates[rows, cols]] = ranked[rows, cols]
        return out


def recommend(
    users_df: DataFrame, scorer: Scorer, ranker: Ranker, rules: ListRules, item_ids: list[str], block_size: int = 512
) -> DataFrame:
    """Every user's list: ``user_id, rank (1..k), item_id, score, reason``.

    Args:
        users_df: ``user_id``, ``history`` and ``seen`` (array<int>: item-matrix rows, see
            ``scoring.to_matrix_rows``); ``seen`` is what the seen-items rule removes; the user tower
            also reads ``history_types`` and ``user_features`` where they are (``scoring.USER_INPUTS``).
    """
    require_columns(users_df, ["user_id", "history", "seen"], "recommend")
    shared = users_df.sparkSession.sparkContext.broadcast((scorer, ranker, rules, np.asarray(item_ids, dtype=object)))

    def lists(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        scorer_, ranker_, rules_, items_ = shared.value
        for frame in frames:
            for start in range(0, len(frame), block_size):
                yield recommend_block(frame.iloc[start : start + block_size], scorer_, ranker_, rules_, items_)

    return users_df.select(*user_columns(users_df)).mapInPandas(lists, TOP_K_SCHEMA)


def recommend_block(
    frame: pd.DataFrame, scorer: Scorer, ranker: Ranker, rules: ListRules, items: np.ndarray
) -> pd.DataFrame:
    users = user_block(frame)
    has_history = np.array([len(h) > 0 for h in users.history], dtype=bool)
    parts = []
    if has_history.any():
        block = _subset(users, has_history)
        count = max(rules.candidates, rules.k)
        if isinstance(ranker, LearnedRanker):  # the ranker brings its own candidates
            candidates, scores, usable = ranker.propose(block, rules.allowed, count)
        else:
            candidates, scores, usable = block_top(scorer, block, rules.allowed, count)
        rescored = np.asarray(ranker.rescore(block, candidates, scores), dtype=np.float64)
        picked, picked_scores, n = pick_lists(candidates, rescored, usable, rules)
        name = scorer.name if isinstance(ranker, RetrievalRanker) else f"{scorer.name}+{ranker.name}"
        reason: str | np.ndarray = name
        vectors = getattr(scorer, "item_vectors", None)
        if vectors is not None:
            nearest = (
                ranker.explain(block, picked)
                if isinstance(ranker, LearnedRanker)
                else explain(np.asarray(vectors), picked, block.history)
            )
            reason = np.where(
                nearest >= 0, name + ":history=" + items[np.maximum(nearest, 0)].astype(str), name
            ).astype(object)
        parts.append(ranked_frame(block.user_ids, picked, picked_scores, n, items, reason))
    if not has_history.all():
        parts.append(_fallback(_subset(users, ~has_history), rules, items))
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


def pick_lists(
    candidates: np.ndarray, scores: np.ndarray, usable: np.ndarray, rules: ListRules
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k items of each user from its candidates: (item rows [B, k], their scores, list lengths)."""
    scores = np.where(np.arange(scores.shape[1])[None, :] < usable[:, None], scores, -np.inf)
    order = np.argsort(-scores, axis=1, kind="stable")  # ties keep the candidates' order
    candidates = np.take_along_axis(candidates, order, axis=1)
    scores = np.take_along_axis(scores, order, axis=1)
    k = min(rules.k, candidates.shape[1])
    lengths = np.minimum(usable, k)
    if not (rules.capped or rules.diversified):
        return candidates[:, :k], scores[:, :k], lengths
    picked = np.zeros((len(candidates), k), dtype=np.int64)
    picked_scores = np.zeros((len(candidates), k), dtype=np.float64)
    for i in range(len(candidates)):
        u = int(usable[i])
        chosen = _pick_one(candidates[i, :u], scores[i, :u], rules, k)
        picked[i, : len(chosen)] = candidates[i, chosen]
        picked_scores[i, : len(chosen)] = scores[i, chosen]
    return picked, picked_scores, lengths


def explain(item_vectors: np.ndarray, picked: np.ndarray, history: list[np.ndarray]) -> np.ndarray:
    """For each recommended item [B, k], the item of the user's history (item-matrix row) closest to it
    in the model's item space (cosine): "because you interacted with …". -1 where there is no history."""
    b, k = picked.shape
    longest = max((len(h) for h in history), default=0)
    if longest == 0 or k == 0:
        return np.full((b, k), -1, dtype=np.int64)
    norms = np.linalg.norm(item_vectors, axis=1, keepdims=True)
    unit = item_vectors / np.where(norms > 0, norms, 1.0)
    rows = np.zeros((b, longest), dtype=np.int64)
    present = np.zeros((b, longest), dtype=bool)
    for i, h in enumerate(history):
        rows[i, : len(h)] = h
        present[i, : len(h)] = True
    similarity = np.einsum("bkd,bld->bkl", unit[picked], unit[rows])
    similarity = np.where(present[:, None, :], similarity, -np.inf)
    best = np.take_along_axis(rows[:, None, :].repeat(k, axis=1), similarity.argmax(axis=2)[..., None], axis=2)[..., 0]
    has_history = np.asarray(present.any(axis=1))
    return np.where(has_history[:, None], best, -1)


def _pick_one(rows: np.ndarray, scores: np.ndarray, rules: ListRules, k: int) -> list[int]:
    """Positions of the chosen candidates (sorted by score), MMR under the category cap."""
    n = len(rows)
    kk = min(k, n)
    taken = np.zeros(n, dtype=bool)
    blocked = np.zeros(n, dtype=bool)
    cats = rules.categories[rows] if rules.capped and rules.categories is not None else None
    counts: dict[int, int] = {}
    vectors = rules.item_vectors[rows] if rules.diversified and rules.item_vectors is not None else None
    spread = scores.max() - scores.min() if n else 0.0
    relevance = (scores - scores.min()) / spread if spread > 0 else np.ones(n)
    max_sim = np.zeros(n)
    chosen: list[int] = []
    while len(chosen) < kk:
        open_ = ~taken & ~blocked
        if not open_.any():
            break
        value = relevance
        if vectors is not None and chosen:
            value = rules.mmr_lambda * relevance - (1.0 - rules.mmr_lambda) * max_sim
        j = int(np.argmax(np.where(open_, value, -np.inf)))  # ties: the better-scored candidate
        chosen.append(j)
        taken[j] = True
        if cats is not None and cats[j] >= 0:
            counts[cats[j]] = counts.get(cats[j], 0) + 1
            if counts[cats[j]] >= rules.max_per_category:
                blocked |= cats == cats[j]
        if vectors is not None:
            max_sim = np.maximum(max_sim, vectors @ vectors[j])
    # The cap left too few: the capped candidates fill the list in score order.
    chosen += [int(j) for j in np.flatnonzero(~taken)[: kk - len(chosen)]]
    return chosen


def _fallback(users: UserBlock, rules: ListRules, items: np.ndarray) -> pd.DataFrame:
    """Popular in the user's segment first, then popular overall."""
    segments = np.full(len(users.user_ids), -1, dtype=np.int64)
    if rules.fallback_segment == "category" and rules.categories is not None:
        for i, seen in enumerate(users.seen):
            cats = rules.categories[seen] if len(seen) else np.zeros(0, dtype=np.int64)
            cats = cats[cats >= 0]
            if len(cats):
                values, counts = np.unique(cats, return_counts=True)
                segments[i] = values[np.argmax(counts)]
    popularity = np.asarray(rules.popularity, dtype=np.float64)
    boost = np.zeros((len(segments), len(popularity)))
    if (segments >= 0).any() and rules.categories is not None:
        boost = ((rules.categories[None, :] == segments[:, None]) & (segments[:, None] >= 0)) * (popularity.max() + 1.0)
    scores = masked_scores(popularity[None, :] + boost, rules.allowed, users.seen)
    candidates, usable = top_indices(scores, max(rules.candidates, rules.k))
    picked, _, n = pick_lists(candidates, np.take_along_axis(scores, candidates, axis=1), usable, rules)
    reasons = np.where(segments >= 0, FALLBACK_CATEGORY, FALLBACK_GLOBAL).astype(object)
    return ranked_frame(users.user_ids, picked, popularity[picked], n, items, reasons)


def _subset(users: UserBlock, mask: np.ndarray) -> UserBlock:
    idx = np.flatnonzero(mask)
    return UserBlock(
        [users.user_ids[i] for i in idx],
        [users.history[i] for i in idx],
        [users.seen[i] for i in idx],
        None if users.vectors is None else users.vectors[idx],
        None if users.history_types is None else [users.history_types[i] for i in idx],
        None if users.user_features is None else users.user_features[idx],
    )


def category_codes(categories: list[str | None]) -> np.ndarray | None:
    """Integer codes of item categories (-1: none); None when no item has one."""
    names = sorted({c for c in categories if c})
    if not names:
        return None
    code = {c: i for i, c in enumerate(names)}
    return np.array([code.get(c, -1) if c else -1 for c in categories], dtype=np.int64)
