"""How a user reaches the user tower: one encoding for training examples, batch scoring, the ranker's
training lists and the MLflow model.

A user is read from the user's positive events (weight > 0) up to the moment scored:

- ``history``: the latest items, most recent first; events at the same time go by ``event_id``, the
  latest first (``features.history_order``). Items the model cannot map (not in its vocabulary or
  catalogue) are dropped, and the rest close up;
- ``history_types``: each history item's event type, coded in the model's type vocabulary (type i of
  ``event_types`` has code i + 1; 0 is padding and any type the model never saw);
- ``user_features``: ``USER_FEATURES`` over those events.

Spark computes the lists and the features (``features.to_user_histories`` and
``features.to_training_examples``, with one ordering and one ``features.user_features`` expression)
and maps item ids to integer rows (``features.positions_to_ids``); ``index_histories`` does the same
mapping for the MLflow model's pandas input. ``encode_users`` turns the rows into the padded arrays
the tower reads, for every path. Nothing here imports Spark: the MLflow model runs without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# What the user tower knows of a user beside the history, from the user's positive events so far:
# log(1 + how many), log(1 + days from the first to the latest). The same at training time (the events
# before the target) as at serving time (all of them), so the model meets no shift between the two.
USER_FEATURES = ("activity", "tenure_days")


@dataclass(frozen=True)
class UserEncoding:
    """What a trained user tower reads: ``length`` history items, the event type vocabulary it was
    trained with (empty: types are not read) and the names of its user features (empty: none)."""

    length: int
    event_types: tuple[str, ...] = ()
    user_features: tuple[str, ...] = ()

    def type_codes(self) -> dict[str, int]:
        """Event type -> code: type i has code i + 1 (0, left out, is padding and any unknown type)."""
        return {t: i + 1 for i, t in enumerate(self.event_types)}


@dataclass(frozen=True)
class EncodedUsers:
    """A block of B users as the tower reads them."""

    items: np.ndarray  # [B, L] int64 item rows, 0 on padding
    mask: np.ndarray  # [B, L] bool, true where an item is
    types: np.ndarray  # [B, L] int64 event type codes
    features: np.ndarray | None  # [B, F] float32, None when the encoding has no user features
    has_features: np.ndarray  # [B] bool: the user came with features (else they are zeros)


def encode_users(
    histories: Sequence[Any],
    history_types: Sequence[Any] | None,
    user_features: Sequence[Any] | np.ndarray | None,
    encoding: UserEncoding,
) -> EncodedUsers:
    """The padded arrays of B users: the first ``encoding.length`` items of each history (already most
    recent first and mapped to rows), their type codes and the users' features. Each user's entries
    are sequences (lists or arrays); a missing one (None) is empty.

    Raises:
        ValueError: a user's features are not as many as the encoding's.
    """
    b, length = len(histories), encoding.length
    items = np.zeros((b, length), dtype=np.int64)
    mask = np.zeros((b, length), dtype=bool)
    types = np.zeros((b, length), dtype=np.int64)
    code = encoding.type_codes()
    for i, history in enumerate(histories):
        rows = np.asarray(history if history is not None else [], dtype=np.int64)[:length]
        items[i, : len(rows)] = rows
        mask[i, : len(rows)] = True
        if code and history_types is not None and history_types[i] is not None:
            named = list(history_types[i])[: len(rows)]
            types[i, : len(named)] = [code.get(str(t), 0) for t in named]
    width = len(encoding.user_features)
    features = np.zeros((b, width), dtype=np.float32) if width else None
    has_features = np.zeros(b, dtype=bool)
    if features is not None and user_features is not None:
        for i, values in enumerate(user_features):
            listed = _listed(values)
            if not listed:
                continue
            if len(listed) != width:
                raise ValueError(
                    f"user_features of row {i} has {len(listed)} values; the model reads {width} "
                    f"({', '.join(encoding.user_features)})"
                )
            features[i], has_features[i] = np.asarray(listed, dtype=np.float32), True
    return EncodedUsers(items, mask, types, features, has_features)


def index_histories(
    histories: Sequence[Any], history_types: Sequence[Any] | None, index: Mapping[str, int]
) -> tuple[list[list[int]], list[list[str]] | None]:
    """Item ids to rows through ``index`` as ``features.positions_to_ids`` maps them in Spark: order
    kept, unknown ids dropped, and each history's types kept in step (those of dropped ids dropped)."""
    rows: list[list[int]] = []
    kept_types: list[list[str]] | None = [] if history_types is not None else None
    for i, history in enumerate(histories):
        ids = [str(item) for item in _listed(history)]
        named = _listed(history_types[i]) if history_types is not None else []
        known = [j for j, item in enumerate(ids) if item in index]
        rows.append([index[ids[j]] for j in known])
        if kept_types is not None:
            kept_types.append([str(named[j]) for j in known if j < len(named)])
    return rows, kept_types


def _listed(value: Any) -> list[Any]:
    """A cell of an optional list column as a list ([]: missing)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return list(value)
