"""Two-tower retrieval model: fused item tower, attention-pooled user tower.

Shapes, named once: B users or examples in a batch, L history length, V item vocabulary size
(index 0 is padding and "not in vocabulary"), T text vector size (BERT), D the shared vector size.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from sparkrec.encoding import EncodedUsers
from sparkrec.models.ranker import DCNRanker, rank_scores


class ItemTower(nn.Module):
    """ID embedding, projected BERT text vector, (when the catalogue has them) categorical
    attributes — category tokens, price bucket (``sparkrec.models.attributes``) — and any extra
    vector columns (``extra_dims``: their sizes, side by side in one [..., E] input, each projected
    on its own), fused by a learned attention gate.

    An item outside the vocabulary (id 0) has no ID signal, an item without attributes no attribute
    signal and an all-zero extra vector no signal of that column; the gate gives their weight to
    what is left: cold items still get a vector.

    ``sparse_ids``: the ID table's gradient is sparse (the rows a batch touched), so that a training
    step's backward, all-reduce and optimiser step cost what the batch holds, not the catalogue.
    """

    def __init__(
        self,
        num_items: int,
        text_dim: int,
        dim: int,
        dropout: float = 0.0,
        attr_codes: int = 0,
        text: bool = True,
        extra_dims: tuple[int, ...] = (),
        sparse_ids: bool = False,
    ) -> None:
        super().__init__()
        self.id_embedding = nn.Embedding(num_items + 1, dim, padding_idx=0, sparse=sparse_ids)
        nn.init.normal_(self.id_embedding.weight, std=0.05)
        # text=False (an ablation) leaves the BERT vector out of the fusion.
        self.text_projection = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(), nn.Linear(dim, dim)) if text else None
        self.attr_embedding = None
        if attr_codes > 1:
            self.attr_embedding = nn.Embedding(attr_codes, dim, padding_idx=0)
            nn.init.normal_(self.attr_embedding.weight, std=0.05)
        self.extra_dims = tuple(int(d) for d in extra_dims)
        self.extra_projections = nn.ModuleList(nn.Linear(d, dim) for d in self.extra_dims)
        sources = 1 + (self.text_projection is not None) + (self.attr_embedding is not None) + len(self.extra_dims)
        self.gate = nn.Linear(sources * dim, sources)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        ids: torch.Tensor,
        text: torch.Tensor,
        attrs: torch.Tensor | None = None,
        extra: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """ids [...]; text [..., T]; attrs [..., A] codes (0 = none); extra [..., E] -> item vectors [..., D]."""
        sources, absent = [self.id_embedding(ids)], [ids == 0]
        if self.text_projection is not None:
            sources.append(self.text_projection(text))
            absent.append(torch.zeros_like(ids, dtype=torch.bool))
        if self.attr_embedding is not None:
            if attrs is None:
                attrs = torch.zeros((*ids.shape, 1), dtype=torch.long, device=ids.device)
            present = (attrs > 0).unsqueeze(-1)
            attr_vec = (self.attr_embedding(attrs) * present).sum(-2) / present.sum(-2).clamp(min=1)
            sources.append(attr_vec)
            absent.append(~present.any(-2).squeeze(-1))
        if self.extra_dims:
            if extra is None:
                extra = torch.zeros((*ids.shape, sum(self.extra_dims)), device=ids.device)
            for projection, column in zip(
                self.extra_projections, extra.float().split(self.extra_dims, dim=-1), strict=True
            ):
                sources.append(projection(column))
                absent.append((column == 0).all(-1))
        logits = self.gate(torch.cat(sources, dim=-1)).masked_fill(torch.stack(absent, -1), -1e4)
        weights = torch.softmax(logits, dim=-1)
        fused = sum(weights[..., i : i + 1] * v for i, v in enumerate(sources))
        return self.dropout(fused)


class UserTower(nn.Module):
    """The user's recent history of item vectors pooled by attention (or, as an ablation, averaged),
    then projected. With ``event_types`` (how many types the training events had, when more than one)
    each history item's vector is shifted by a learned vector of its event type (a purchase can
    weigh more than a view); code 0 (padding, a type unknown at training time) shifts nothing. With
    ``user_features`` (their count; ``encoding.USER_FEATURES``) a linear map of the user's features is
    added to the user vector (starting at zero: the history alone)."""

    def __init__(
        self, dim: int, history_length: int, attention: bool = True, event_types: int = 0, user_features: int = 0
    ) -> None:
        super().__init__()
        self.features = None
        if user_features > 0:
            self.features = nn.Linear(user_features, dim)
            nn.init.zeros_(self.features.weight)
            nn.init.zeros_(self.features.bias)
        self.event_type = None
        if event_types > 0:
            self.event_type = nn.Embedding(event_types + 1, dim, padding_idx=0)
            nn.init.zeros_(self.event_type.weight)
        # Without attention there is nothing to learn for the pooling (and DDP refuses unused parameters).
        self.query = nn.Parameter(torch.zeros(dim)) if attention else None
        self.recency = nn.Embedding(history_length, 1) if attention else None
        if self.recency is not None:
            nn.init.zeros_(self.recency.weight)
        self.output = nn.Linear(dim, dim)

    def forward(
        self,
        history: torch.Tensor,
        mask: torch.Tensor,
        types: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """history [B, L, D] (most recent first); mask [B, L] true where an item is; types [B, L] event
        type codes; features [B, F] -> users [B, D]."""
        if self.event_type is not None and types is not None:
            history = history + self.event_type(types)
        if self.query is not None and self.recency is not None:
            positions = torch.arange(history.shape[1], device=history.device)
            scores = (history @ self.query + self.recency(positions).squeeze(-1)).masked_fill(~mask, -1e4)
            weights = torch.softmax(scores, dim=-1) * mask
        else:
            weights = mask.to(history.dtype)
        pooled = (weights.unsqueeze(-1) * history).sum(1) / weights.sum(1, keepdim=True).clamp(min=1e-6)
        users = pooled + self.output(pooled)
        if self.features is not None and features is not None:
            users = users + self.features(features.to(users.dtype))
        return users

    def read(self, history: torch.Tensor, encoded: EncodedUsers) -> torch.Tensor:
        """The vectors [B, D] of users encoded by ``encoding.encode_users``; ``history`` [B, L, D] are
        their items' vectors. A user who came without features is read from the history alone."""
        mask, types = torch.from_numpy(encoded.mask), torch.from_numpy(encoded.types)
        given = encoded.has_features
        if encoded.features is None or not given.any():
            return self(history, mask, types)
        features = torch.from_numpy(encoded.features)
        if given.all():
            return self(history, mask, types, features)
        users = self(history, mask, types)
        mine = torch.from_numpy(given)
        users[mine] = self(history[mine], mask[mine], types[mine], features[mine])
        return users


class TwoTower(nn.Module):
    """Retrieval by dot product between the user tower and the item tower.

    ``item_text`` [V + 1, T] is a fixed buffer of the vocabulary's BERT vectors (row 0 zeros);
    ``item_attrs`` [V + 1, A] its attribute codes, ``attr_codes`` how many codes exist;
    ``item_extra`` [V + 1, E] its extra vector columns, ``extra_dims`` their sizes; ``sparse_ids``
    (for training) gives the item ID table sparse gradients (``ItemTower``).
    """

    item_text: torch.Tensor
    item_attrs: torch.Tensor | None
    item_extra: torch.Tensor | None

    def __init__(
        self,
        item_text: torch.Tensor,
        dim: int,
        history_length: int,
        dropout: float = 0.0,
        item_attrs: torch.Tensor | None = None,
        attr_codes: int = 0,
        text: bool = True,
        history_attention: bool = True,
        ranker: dict[str, Any] | None = None,
        ranker_trains_towers: bool = False,
        item_extra: torch.Tensor | None = None,
        extra_dims: tuple[int, ...] = (),
        event_types: int = 0,
        user_features: int = 0,
        sparse_ids: bool = False,
    ) -> None:
        super().__init__()
        num_items, text_dim = item_text.shape[0] - 1, item_text.shape[1]
        self.register_buffer("item_text", item_text.float())
        with_attrs = item_attrs is not None and attr_codes > 1
        self.register_buffer("item_attrs", item_attrs.long() if item_attrs is not None and with_attrs else None)
        with_extra = item_extra is not None and len(extra_dims) > 0
        self.register_buffer("item_extra", item_extra.float() if item_extra is not None and with_extra else None)
        self.items = ItemTower(
            num_items,
            text_dim,
            dim,
            dropout,
            attr_codes if self.item_attrs is not None else 0,
            text=text,
            extra_dims=tuple(extra_dims) if with_extra else (),
            sparse_ids=sparse_ids,
        )
        self.users = UserTower(
            dim, history_length, attention=history_attention, event_types=event_types, user_features=user_features
        )
        # The ranking model (``sparkrec.models.ranker``), trained with the towers; None: retrieval only.
        self.ranker = DCNRanker(**ranker) if ranker is not None else None
        # Whether the ranking loss also reaches the towers (through the retrieval score it reads).
        self.ranker_trains_towers = ranker_trains_towers

    def item_vectors(self, ids: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """ids [...] of vocabulary items -> [..., D]. ``text``: their text vectors [..., T], where the
        caller holds them (default: ``item_text[ids]``)."""
        return self.items(
            ids,
            self.item_text[ids] if text is None else text,
            None if self.item_attrs is None else self.item_attrs[ids],
            None if self.item_extra is None else self.item_extra[ids],
        )

    def forward(
        self,
        history: torch.Tensor,
        target: torch.Tensor,
        lists: dict[str, torch.Tensor] | None = None,
        negatives: torch.Tensor | None = None,
        history_types: torch.Tensor | None = None,
        user_features: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """history [B, L] ids, target [B] ids -> (users [B, D], items [B, D], ranking scores); with
        sampled ``negatives`` [S] ids, items is [B + S, D]: the targets' vectors, then theirs.
        ``history_types`` [B, L]: the history items' event type codes, ``user_features`` [B, F] (``UserTower``).

        ``lists`` (a batch of ranking lists: ``history`` [B', L], its ``history_types``, ``user_features``,
        ``candidates`` [B', C] ids, 0 = padding, ``collaborative``, ``popularity`` and ``recent_popularity``
        [B', C]) is scored by the ranker in the same
        forward pass — one pass, so DDP synchronises the ranker's gradients with the towers'.
        """
        users = self.users(self.item_vectors(history), history > 0, history_types, user_features)
        scores = None
        if lists is not None and self.ranker is not None:
            context = lists["history"]
            list_users = self.users(
                self.item_vectors(context), context > 0, lists.get("history_types"), lists.get("user_features")
            )
            candidates = lists["candidates"]
            list_items = self.item_vectors(candidates)
            if not self.ranker_trains_towers:
                list_users, list_items = list_users.detach(), list_items.detach()
            recent = lists.get("recent_popularity")
            scores = rank_scores(
                self.ranker,
                list_users,
                list_items,
                lists["collaborative"].float(),
                lists["popularity"].float(),
                candidates > 0,
                None if recent is None else recent.float(),
            )
        items = self.item_vectors(target if negatives is None else torch.cat([target, negatives]))
        return users, items, scores


def in_batch_softmax_loss(
    users: torch.Tensor,
    items: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    log_q: torch.Tensor | None = None,
    negatives: torch.Tensor | None = None,
    negatives_log_q: float = 0.0,
) -> torch.Tensor:
    """Sampled softmax with the batch's other targets, and optionally sampled items, as negatives.

    ``items`` [B (+ S), D] are the batch's targets, then the vectors of ``negatives`` [S] (ids drawn
    uniformly from the vocabulary: the rare items the batch never brings). Popular items turn up as
    in-batch negatives more often than rare ones; subtracting each candidate's log expected count
    (the logQ correction of Yi et al., 2019) keeps the model from learning to bury them: log(B q) for
    an in-batch candidate with target share q (``log_q`` [B]), ``negatives_log_q`` = log(S / V) for a
    sampled one (mixed negative sampling, Yang et al., 2020). A candidate equal to the row's own
    target is not a negative (masked out).
    """
    b = len(targets)
    logits = users @ items.T / temperature
    ids = targets if negatives is None else torch.cat([targets, negatives])
    if log_q is not None:
        correction = log_q + math.log(b)
        if negatives is not None:
            correction = torch.cat([correction, torch.full((len(negatives),), negatives_log_q, device=users.device)])
        logits = logits - correction.unsqueeze(0)
    own = torch.zeros((b, len(ids)), dtype=torch.bool, device=users.device)
    own[:, :b] = torch.eye(b, dtype=torch.bool, device=users.device)
    logits = logits.masked_fill((targets.unsqueeze(1) == ids.unsqueeze(0)) & ~own, -1e4)
    return nn.functional.cross_entropy(logits, torch.arange(b, device=users.device))
