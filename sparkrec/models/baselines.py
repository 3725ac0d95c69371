"""The baselines every sparkrec model is measured against, scored through ``scoring.top_k``.

- ``popularity``: the items most training users interacted with, for everybody.
- ``als``: Spark MLlib ALS with implicit preferences (Hu, Koren & Volinsky 2008). The confidence of
  a (user, item) pair is 1 + alpha * r, r = the summed event weight of the pair.
- ``ease``: EASE (Steck 2019), the closed-form item-item model. With X the binary user x item matrix
  and G = X^T X (built in Spark), P = (G + lambda I)^-1 and B = -P / diag(P) with a zero diagonal;
  a user's scores are x_u B. The inverse is dense on the driver: catalogues above
  ``experiment.ease_max_items`` are refused with ``EaseTooLargeError`` instead of running out of memory.
  ``with_text_neighbours`` adds text to G (the model's collaborative score uses it; the baseline does not).

Items are the rows of the catalogue matrix (``item_index_df``: ``item_id``, ``row``), as in scoring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkrec.models.scoring import PopularityScorer, UserBlock
from sparkrec.models.specs import RankerSpec
from sparkrec.models.topk import binary_rows
from sparkrec.schemas import require_columns


class EaseTooLargeError(ValueError):
    """The catalogue is larger than EASE may invert on the driver."""


def fit_popularity(train_df: DataFrame, item_index_df: DataFrame, n_items: int) -> PopularityScorer:
    """Distinct training users with a positive event on each item; ties go to the lower row."""
    require_columns(train_df, ["user_id", "item_id", "weight"], "fit_popularity")
    counts = np.zeros(n_items, dtype=np.float64)
    rows = (
        train_df.where(F.col("weight") > 0)
        .groupBy("item_id")
        .agg(F.countDistinct("user_id").alias("n"))
        .join(item_index_df, "item_id")
        .select("row", "n")
        .collect()
    )
    for r in rows:
        counts[r["row"]] = r["n"]
    return PopularityScorer(counts)


# --------------------------------------------------------------------------------------------- ALS
@dataclass(frozen=True)
class AlsParams:
    rank: int = 64
    reg_param: float = 0.01
    alpha: float = 20.0
    max_iter: int = 15


@dataclass
class AlsScorer:
    """Dot product of the user's ALS factors with every item's; zeros for users ALS did not see."""

    user_factors: dict[str, np.ndarray]
    item_vectors: np.ndarray  # [n_items, rank]
    name: str = "als"

    def scores(self, block: UserBlock) -> np.ndarray:
        return self.user_vectors(block) @ self.item_vectors.T

    def user_vectors(self, block: UserBlock) -> np.ndarray:
        zero = np.zeros(self.item_vectors.shape[1], dtype=np.float32)
        return np.stack([self.user_factors.get(u, zero) for u in block.user_ids])


def fit_als(train_df: DataFrame, item_index_df: DataFrame, n_items: int, params: AlsParams, seed: int) -> AlsScorer:
    """Fit implicit ALS on the positive training events; factors are collected to the driver."""
    from pyspark.ml.feature import StringIndexer
    from pyspark.ml.recommendation import ALS

    require_columns(train_df, ["user_id", "item_id", "weight"], "fit_als")
    pairs = (
        train_df.where(F.col("weight") > 0)
        .groupBy("user_id", "item_id")
        .agg(F.sum("weight").alias("strength"))
        .join(item_index_df, "item_id")
    )
    indexer = StringIndexer(inputCol="user_id", outputCol="user", stringOrderType="alphabetAsc").fit(pairs)
    data = indexer.transform(pairs).select(F.col("user").cast("int"), "row", "strength")
    als = ALS(
        rank=int(params.rank),
        regParam=float(params.reg_param),
        alpha=float(params.alpha),
        maxIter=int(params.max_iter),
        implicitPrefs=True,
        userCol="user",
        itemCol="row",
        ratingCol="strength",
        seed=int(seed),
        coldStartStrategy="drop",
    )
    model = als.fit(data)
    items = np.zeros((n_items, int(params.rank)), dtype=np.float32)
    for r in model.itemFactors.collect():
        items[r["id"]] = r["features"]
    labels = indexer.labelsArray[0]
    users = {labels[r["id"]]: np.asarray(r["features"], dtype=np.float32) for r in model.userFactors.collect()}
    return AlsScorer(users, items)


# -------------------------------------------------------------------------------------------- EASE
@dataclass
class EaseScorer:
    """x_u B for the binary row x_u of every item the user interacted with in training."""

    weights: np.ndarray  # B [n_items, n_items], float32
    name: str = "ease"

    def scores(self, block: UserBlock) -> np.ndarray:
        return binary_rows(block.seen, self.weights.shape[0]) @ self.weights


def check_ease_size(n_items: int, max_items: int) -> None:
    """Raise ``EaseTooLargeError`` when a dense n x n solve would not fit the configured limit."""
    if n_items > max_items:
        gib = 3 * n_items * n_items * 8 / 2**30
        raise EaseTooLargeError(
            f"EASE would invert a dense {n_items} x {n_items} matrix on the driver (about {gib:.1f} GiB); "
            f"the limit is experiment.ease_max_items={max_items}. Raise it (with spark.driver_memory) or leave "
            "ease out of --models"
        )


def item_gram(train_df: DataFrame, item_index_df: DataFrame, n_items: int, max_items: int) -> np.ndarray:
    """G = X^T X of the binary user x item matrix: co-occurrence counts, built in Spark.

    Only pairs with row_a <= row_b travel to the driver; the matrix is mirrored there.
    """
    check_ease_size(n_items, max_items)
    require_columns(train_df, ["user_id", "item_id"], "item_gram")
    x = train_df.select("user_id", "item_id").distinct().join(item_index_df, "item_id").select("user_id", "row")
    a, b = x.alias("a"), x.alias("b")
    pairs: pd.DataFrame = (
        a.join(b, (F.col("a.user_id") == F.col("b.user_id")) & (F.col("a.row") <= F.col("b.row")))
        .groupBy(F.col("a.row").alias("i"), F.col("b.row").alias("j"))
        .agg(F.count(F.lit(1)).cast("double").alias("n"))
        .toPandas()
    )
    gram = np.zeros((n_items, n_items), dtype=np.float64)
    i, j, n = pairs["i"].to_numpy(), pairs["j"].to_numpy(), pairs["n"].to_numpy()
    gram[i, j] = n
    gram[j, i] = n
    return gram


def with_text_neighbours(
    gram: np.ndarray, vectors: np.ndarray, neighbours: int, weight: float, block: int = 2048
) -> np.ndarray:
    """G + weight * R^T R: EASE's gram with one pseudo-user per item that holds the item (1) and its
    ``neighbours`` nearest items by the cosine of their text vectors (the similarity, at least 0).

    EASE then learns item-item weights from what users hold together and from what reads alike, so
    an item few users hold borrows from the items its text is near. Only items with interactions
    (diag(G) > 0) and a text vector (``vectors`` [n, d] in G's row order, zeros: none) take part: an
    item without interactions keeps no collaborative score, as in plain EASE. ``weight`` 0 or
    ``neighbours`` 0 returns G unchanged.
    """
    if weight < 0 or neighbours < 0:
        raise ValueError(f"text neighbours need weight >= 0 and neighbours >= 0, got {weight}, {neighbours}")
    if vectors.shape[0] != gram.shape[0]:
        raise ValueError(f"{vectors.shape[0]} text vectors for a {gram.shape[0]}-item gram")
    norms = np.linalg.norm(vectors, axis=1)
    rows = np.flatnonzero((np.diag(gram) > 0) & (norms > 0))
    k = min(neighbours, len(rows) - 1)
    if weight == 0 or k <= 0:
        return gram
    unit = (vectors[rows] / norms[rows, None]).astype(np.float32)
    out = gram.copy()
    for start in range(0, len(rows), block):
        sims = unit[start : start + block] @ unit.T  # [b, m]
        own = np.arange(sims.shape[0])
        sims[own, start + own] = -np.inf  # an item is its own neighbour with weight 1, below
        near = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        members = np.concatenate([(start + own)[:, None], near], axis=1)  # [b, k + 1]
        values = np.concatenate(
            [np.ones((len(own), 1), np.float32), np.maximum(np.take_along_axis(sims, near, 1), 0.0)], axis=1
        )
        held = rows[members]  # each pseudo-user's items as gram rows; it adds the outer product of its values
        np.add.at(out, (held[:, :, None], held[:, None, :]), weight * values[:, :, None] * values[:, None, :])
    return out


def ease_weights(gram: np.ndarray, lam: float) -> np.ndarray:
    """B = -P / diag(P) with P = (G + lambda I)^-1 and diag(B) = 0, as float32."""
    if lam <= 0:
        raise ValueError(f"EASE lambda must be positive, got {lam}")
    p = np.linalg.inv(gram + lam * np.eye(gram.shape[0]))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)


def fit_ease(gram: np.ndarray, lam: float) -> EaseScorer:
    return EaseScorer(ease_weights(gram, lam))


def collaborative_weights(gram: np.ndarray, text: np.ndarray, spec: RankerSpec) -> np.ndarray:
    """The ranker's collaborative score: EASE B over ``gram`` with the text neighbours ``spec`` asks for
    (a model saved without them: plain EASE); ``text`` [n, d] in the gram's row order."""
    gram = with_text_neighbours(gram, text, spec.text_neighbours, spec.text_weight)
    return ease_weights(gram, spec.ease_lambda)
