"""The ranker's training lists, block by block (pandas and numpy; ``training_data`` runs it inside
``mapInPandas``).

A list is a user whose positive events are split into a context and labels
(``features.ranking_split``): the context is encoded as the user tower reads a user when serving
(``encoding``), and the candidates are the context's top ``candidates`` items by the collaborative
score (``baselines.fit_collaborative``: EASE or item-kNN, fitted on every context), each with
its collaborative score, its popularity and recent popularity over the contexts, and a label: 1.0
when the user's label part holds it. The ranker learns to put the labels first (``ranker.listwise_loss``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from sparkrec.encoding import UserEncoding, encode_users
from sparkrec.models.topk import ItemWeights, held_top

# Users per block of the collaborative product: [block, V] float32 scores at a time, at most
# BLOCK_SCORES of them (a million-item vocabulary scores 64 users at a time).
BLOCK = 1024
BLOCK_SCORES = 2**26


def collaborative_candidates(
    weights: ItemWeights, context: Sequence[np.ndarray], allowed: np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each user's top ``count`` allowed items outside its context by the collaborative score x_u W:
    (rows [U, c], scores [U, c], usable count [U]); c = min(count, n)."""
    return held_top(weights, list(context), allowed, count)


def list_columns(encoding: UserEncoding) -> list[str]:
    """The columns of a training list (``user_features`` only for a tower that reads them)."""
    features = ["user_features"] if encoding.user_features else []
    return ["history", "history_types", *features, "candidates", "collaborative", "popularity",
            "recent_popularity", "labels"]  # fmt: skip


def training_lists(
    contexts: pd.DataFrame,
    weights: ItemWeights,
    popularity: np.ndarray,
    recent_popularity: np.ndarray,
    encoding: UserEncoding,
    candidates: int,
) -> pd.DataFrame:
    """The lists of a block of users.

    Args:
        contexts: one row per user: ``history`` (the context's latest items as vocabulary indices,
            most recent first), ``history_types``, ``user_features``, ``context`` (every item index the
            context holds) and ``labels`` (the item indices of the user's label part).
        weights: the collaborative score W [V + 1, V + 1] fitted on the contexts (EASE's dense B or
            item-kNN's sparse neighbours; index 0: padding).
        popularity, recent_popularity: [V + 1] log of 1 + the context users holding each index, over
            all the contexts and over their last days (zeros: not a feature).
        encoding: how the user tower reads the context.
        candidates: list length (0-padded where fewer items qualify).

    Returns:
        ``list_columns(encoding)``; users whose candidates hold no label teach nothing and are left out.
    """
    n = weights.shape[0]
    allowed = np.ones(n, dtype=bool)
    allowed[0] = False
    parts = []
    step = max(1, min(BLOCK, BLOCK_SCORES // n))
    for start in range(0, len(contexts), step):
        block = contexts.iloc[start : start + step]
        held = [np.unique(np.asarray(c, dtype=np.int64)) for c in block["context"]]
        top, scores, usable = collaborative_candidates(weights, held, allowed, candidates)
        cand = np.zeros((len(block), candidates), dtype=np.int64)
        collab = np.zeros((len(block), candidates), dtype=np.float32)
        for i in range(len(block)):
            u = int(usable[i])
            cand[i, :u], collab[i, :u] = top[i, :u], scores[i, :u]
        labels = np.stack([np.isin(cand[i], np.asarray(list(block["labels"].iloc[i]), dtype=np.int64))
                           for i in range(len(block))]).astype(np.float32) * (cand > 0)  # fmt: skip
        keep = labels.sum(axis=1) > 0
        users = encode_users(
            list(block["history"]), list(block["history_types"]), list(block["user_features"]), encoding
        )
        out = {
            "history": list(users.items[keep]),
            "history_types": list(users.types[keep]),
            "candidates": list(cand[keep]),
            "collaborative": list(collab[keep]),
            "popularity": list(popularity[cand[keep]].astype(np.float32)),
            "recent_popularity": list(recent_popularity[cand[keep]].astype(np.float32)),
            "labels": list(labels[keep]),
        }
        if users.features is not None:
            out["user_features"] = list(users.features[keep])
        parts.append(pd.DataFrame(out, columns=list_columns(encoding)))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=list_columns(encoding))
