"""The ranking model: DCN-v2 over each candidate's features, trained with the towers (multi-task).

The retrieval towers propose; the ranker re-scores a user's candidate list with what retrieval
alone cannot weigh together: the towers' own score, a collaborative score (EASE, Steck 2019, fitted
on the interactions the towers see, with the items' text neighbours: ``baselines.with_text_neighbours``)
the item's popularity and, with ``train.ranker.recent_days``, its popularity over the last days
(what sells now: on the Online Retail sample the last days' popularity alone ranks the next week
better than all the history's). Scores are also standardised within the list (``_z`` features), so a
collaborative model fitted on more data at serving time than at training time still reads the same.

Training lists come from the training interactions themselves (``models.lists``): each user's
interactions are split into a context (what the user tower and EASE see) and labels (what the user
did next, or a random share of it), and the candidates are the context's top ``candidates`` by EASE.
The loss is listwise: softmax cross-entropy over the list, averaged over the list's positives; the
training step minimises ``L = L_retrieval + weight * L_ranking``; the ranking loss reaches the towers
through the retrieval score only with ``train.ranker.train_towers``.

Shapes: B lists, C candidates per list, D the towers' vector size, F = len(FEATURES) (+ 1: RECENT).
"""

from __future__ import annotations

import torch
from torch import nn

FEATURES = ("retrieval_z", "collaborative_z", "popularity_z")
RECENT = "recent_popularity_z"  # the fourth feature of a ranker trained with train.ranker.recent_days


def list_features(
    retrieval: torch.Tensor,
    collaborative: torch.Tensor,
    popularity: torch.Tensor,
    mask: torch.Tensor,
    recent: torch.Tensor | None = None,
) -> torch.Tensor:
    """[B, C, F] from the per-candidate scores [B, C] (``popularity``, ``recent``: log counts, over all
    the history and over its last days), each standardised within its list; ``mask`` [B, C] is true
    on real candidates (padding is left out of the list statistics and its features are 0).

    Only list-relative values: the collaborative model and the popularity counts are fitted on more
    interactions at serving time than in the training lists (their scale grows with the data), and a
    ranker that read raw scores would re-order lists by a shift it never saw.
    """
    scores = (retrieval, collaborative, popularity) + (() if recent is None else (recent,))
    columns = [_standardise(score, mask) for score in scores]
    return torch.stack(columns, dim=-1) * mask.unsqueeze(-1)


def _standardise(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(x.dtype)
    n = m.sum(-1, keepdim=True).clamp(min=1.0)
    mean = (x * m).sum(-1, keepdim=True) / n
    var = (((x - mean) * m) ** 2).sum(-1, keepdim=True) / n
    return (x - mean) / (var.sqrt() + 1e-6)


class CrossLayer(nn.Module):
    """DCN-v2 cross layer: x_{l+1} = x_0 * (W x_l + b) + x_l."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.linear(x) + x


class DCNRanker(nn.Module):
    """DCN-v2 (Wang et al., 2021), the parallel form: ``cross_layers`` cross layers and a two-layer MLP
    over the candidate's features, their outputs concatenated into one score per candidate
    (``hidden`` 0: no MLP, the cross network alone; with no cross layers too, a linear ranker).

    The features are scores, not identities: no item or user embedding enters the ranker itself, so
    it cannot memorise which items a training user did not pick (its lists' negatives include what
    that user does later) — it learns how to weigh the signals, which carries over to any user.
    """

    def __init__(self, hidden: int = 0, cross_layers: int = 2, recent: bool = False) -> None:
        super().__init__()
        if hidden < 0 or cross_layers < 0:
            raise ValueError(f"the ranker's hidden and cross_layers must be >= 0, got {hidden} and {cross_layers}")
        self.recent = recent  # whether it reads the RECENT feature after FEATURES
        width = len(FEATURES) + int(recent)
        self.cross = nn.ModuleList(CrossLayer(width) for _ in range(cross_layers))
        self.deep = (
            nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()) if hidden else None
        )
        self.out = nn.Linear(width + hidden, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features [B, C, F] -> scores [B, C]."""
        x0 = features
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        return self.out(x if self.deep is None else torch.cat([x, self.deep(x0)], dim=-1)).squeeze(-1)


def retrieval_scores(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """The towers' score [B, C] of each user's candidates: users [B, D], items [B, C, D]."""
    return (users.unsqueeze(1) * items).sum(-1)


def rank_scores(
    ranker: DCNRanker,
    users: torch.Tensor,
    items: torch.Tensor,
    collaborative: torch.Tensor,
    popularity: torch.Tensor,
    mask: torch.Tensor,
    recent: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scores [B, C] of each user's candidates: users [B, D], items [B, C, D], the other signals [B, C]
    (``recent``: needed by, and only read by, a ranker built with ``recent``)."""
    if ranker.recent and recent is None:
        raise ValueError("this ranker reads each candidate's recent popularity: pass recent")
    return ranker(
        list_features(
            retrieval_scores(users, items), collaborative, popularity, mask, recent if ranker.recent else None
        )
    )


def listwise_loss(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy over each list, averaged over its positives (``labels`` 1.0), then lists."""
    log_p = torch.log_softmax(scores.masked_fill(~mask, -1e4), dim=-1)
    positives = (labels * mask).sum(-1)
    per_list = -(log_p * labels * mask).sum(-1) / positives.clamp(min=1.0)
    return per_list[positives > 0].mean() if (positives > 0).any() else scores.sum() * 0.0
