"""Categorical item attributes for the item tower: category tokens and a price bucket.

An item's attributes are a row of integer codes (0 = none): up to ``MAX_CATEGORIES`` category tokens
(a category like "Action, Comedy" is the tokens "Action" and "Comedy"; MovieLens genres arrive this
way) and one price bucket (quantiles of log price over the training vocabulary). The vocabulary of
codes is fixed at training time and travels with the model (``AttributeSpec``), so a model trained
days ago codes new items the same way; an unknown category or a missing price is code 0.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

MAX_CATEGORIES = 4
MAX_TOKENS = 500
PRICE_BUCKETS = 8


@dataclass(frozen=True)
class AttributeSpec:
    categories: tuple[str, ...]  # token i has code i + 1
    price_edges: tuple[float, ...]  # log-price bucket boundaries

    @property
    def size(self) -> int:
        """Codes in use, 0 included: the attribute embedding's rows."""
        return 1 + len(self.categories) + (len(self.price_edges) + 1 if self.price_edges else 0)

    @property
    def empty(self) -> bool:
        return self.size == 1

    def to_dict(self) -> dict[str, list]:
        return {k: list(v) for k, v in asdict(self).items()}

    @staticmethod
    def from_dict(raw: dict[str, list] | None) -> AttributeSpec:
        raw = raw or {}
        return AttributeSpec(tuple(raw.get("categories", ())), tuple(float(x) for x in raw.get("price_edges", ())))


def tokens(category: str | None) -> list[str]:
    return [t.strip() for t in (category or "").split(",") if t.strip()][:MAX_CATEGORIES]


def fit_spec(categories: list[str | None], prices: list[float | None]) -> AttributeSpec:
    """The code vocabulary of a training catalogue: its most frequent category tokens and price quantiles."""
    counts = Counter(t for c in categories for t in tokens(c))
    names = tuple(sorted(t for t, _ in counts.most_common(MAX_TOKENS)))
    logs = np.log([p for p in prices if p is not None and p > 0 and math.isfinite(p)])
    edges: tuple[float, ...] = ()
    if len(logs) >= PRICE_BUCKETS:
        edges = tuple(float(x) for x in np.unique(np.quantile(logs, np.linspace(0, 1, PRICE_BUCKETS + 1)[1:-1])))
    return AttributeSpec(names, edges)


def encode(spec: AttributeSpec, categories: list[str | None], prices: list[float | None]) -> np.ndarray:
    """Codes [n, MAX_CATEGORIES + 1] of each item (0 = none)."""
    code = {name: i + 1 for i, name in enumerate(spec.categories)}
    out = np.zeros((len(categories), MAX_CATEGORIES + 1), dtype=np.int64)
    price_base = 1 + len(spec.categories)
    for i, (category, price) in enumerate(zip(categories, prices, strict=True)):
        known = [code[t] for t in tokens(category) if t in code]
        out[i, : len(known)] = known
        if spec.price_edges and price is not None and price > 0 and math.isfinite(price):
            out[i, MAX_CATEGORIES] = price_base + int(np.searchsorted(spec.price_edges, math.log(price), side="right"))
    return out
