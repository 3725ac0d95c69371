"""The baselines every sparkrec model is measured against, scored through ``scoring.top_k``.

- ``popularity``: the items most training users interacted with, for everybody.
- ``als``: Spark MLlib ALS with implicit preferences (Hu, Koren & Volinsky 2008). The confidence of
  a (user, item) pair is 1 + alpha * r, r = the summed event weight of the pair.
- ``ease``: EASE (Steck 2019), the closed-form item-item model. With X the binary user x item matrix
  and G = X^T X (built in Spark), P = (G + lambda I)^-1 and B = -P / diag(P) with a zero diagonal;
  a user's scores are x_u B. The inverse is dense on the driver: catalogues above
  ``experiment.ease_max_items`` are refused with ``EaseTooLargeError`` instead of running out of memory.
  ``with_text_neighbours`` adds text to G (the model's collaborative score uses it; the baseline does not).
- ``knn``: item-kNN, the collaborative score for catalogues EASE cannot invert, weighted as RP3beta
  (Paudel et al. 2017): W[i, j] is the probability of a walk from item i to a user holding it to
  item j, sum_u 1 / (c_i |u|), divided by c_j ** damping (c: an item's users, |u|: a user's items),
  kept for each item's ``neighbours`` largest j. The pairs and each item's top are computed in Spark
  and W is a sparse matrix on the driver: memory grows with items x neighbours. A user's scores are
  x_u W. On ml-latest-small (random quarter held out, top 10) it scores 0.336 nDCG where the cosine
  of co-occurrence scores 0.298 and EASE 0.401.

``fit_collaborative`` is the ranker's collaborative score, EASE or item-kNN as its ``RankerSpec``
says (``collaborative_model`` resolves ``auto`` by the catalogue size).

Items are the rows of the catalogue matrix (``item_index_df``: ``item_id``, ``row``), as in scoring.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from scipy import sparse
from scipy.linalg import lapack

from sparkrec.catalog import COLLECT_BYTES
from sparkrec.models.scoring import PopularityScorer, UserBlock
from sparkrec.models.specs import RankerSpec
from sparkrec.models.topk import ItemWeights, held_scores, held_top
from sparkrec.schemas import require_columns


class EaseTooLargeError(ValueError):
    """The catalogue is larger than EASE may invert on the driver."""


def fit_popularity(train_df: DataFrame, item_index_df: DataFrame, n_items: int) -> PopularityScorer:
    """Distinct training users with a positive event on each item; ties go to the lower row."""
    require_columns(train_df, ["user_id", "item_id", "weight"], "fit_popularity")
    counts = np.zeros(n_items, dtype=np.float64)
    table = (  # Arrow, not a Row an item
        train_df.where(F.col("weight") > 0)
        .groupBy("item_id")
        .agg(F.countDistinct("user_id").alias("n"))
        .join(item_index_df, "item_id")
        .select(F.col("row").cast("long"), F.col("n").cast("double"))
        .toArrow()
    )
    counts[table.column("row").to_numpy()] = table.column("n").to_numpy()
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


# --------------------------------------------------------------------------- collaborative scores
@dataclass
class CollaborativeScorer:
    """x_u W for the binary row x_u of every item the user interacted with in training; W is EASE's
    dense B ("ease") or item-kNN's sparse neighbours ("knn"). ``top_k`` takes its lists from ``top``
    (``held_top``), so a sparse W never makes a dense row over the catalogue."""

    weights: ItemWeights  # [n_items, n_items], float32
    name: str

    def scores(self, block: UserBlock) -> np.ndarray:
        return held_scores(self.weights, block.seen)

    def top(self, block: UserBlock, allowed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return held_top(self.weights, block.seen, allowed, k)


# -------------------------------------------------------------------------------------------- EASE


def check_ease_size(n_items: int, max_items: int) -> None:
    """Raise ``EaseTooLargeError`` when a dense n x n solve would not fit the configured limit."""
    if n_items > max_items:
        gib = 14 * n_items * n_items / 2**30  # item_gram at its peak: the float64 gram, the pairs (12 B, up to n²/2)
        raise EaseTooLargeError(
            f"EASE would invert a dense {n_items} x {n_items} matrix on the driver (about {gib:.1f} GiB); "
            f"the limit is experiment.ease_max_items={max_items}. Raise it (with spark.driver_memory) or leave "
            "ease out of --models"
        )


def item_gram(train_df: DataFrame, item_index_df: DataFrame, n_items: int, max_items: int) -> np.ndarray:
    """G = X^T X of the binary user x item matrix: co-occurrence counts, built in Spark.

    Only pairs with row_a <= row_b travel to the driver, as Arrow with 12 bytes a pair (int32 rows
    and count), copied a batch at a time into the matrix, which mirrors them: no pandas frame of the
    pairs (48 bytes a pair with its Arrow copy, more than the matrix itself near ``max_items``).
    """
    check_ease_size(n_items, max_items)
    require_columns(train_df, ["user_id", "item_id"], "item_gram")
    x = train_df.select("user_id", "item_id").distinct().join(item_index_df, "item_id").select("user_id", "row")
    a, b = x.alias("a"), x.alias("b")
    pairs = (
        a.join(b, (F.col("a.user_id") == F.col("b.user_id")) & (F.col("a.row") <= F.col("b.row")))
        .groupBy(F.col("a.row").cast("int").alias("i"), F.col("b.row").cast("int").alias("j"))
        .agg(F.count(F.lit(1)).cast("int").alias("n"))
        .toArrow()
    )
    gram = np.zeros((n_items, n_items), dtype=np.float64)
    for batch in pairs.to_batches():
        i, j, n = (batch.column(c).to_numpy() for c in range(3))
        gram[i, j] = n
        gram[j, i] = n
    return gram


def with_text_neighbours(
    gram: np.ndarray, vectors: np.ndarray, neighbours: int, weight: float, block: int = 2048, overwrite: bool = False
) -> np.ndarray:
    """G + weight * R^T R: EASE's gram with one pseudo-user per item that holds the item (1) and its
    ``neighbours`` nearest items by the cosine of their text vectors (the similarity, at least 0).

    EASE then learns item-item weights from what users hold together and from what reads alike, so
    an item few users hold borrows from the items its text is near. Only items with interactions
    (diag(G) > 0) and a text vector (``vectors`` [n, d] in G's row order, zeros: none) take part: an
    item without interactions keeps no collaborative score, as in plain EASE. ``weight`` 0 or
    ``neighbours`` 0 returns G unchanged. ``overwrite``: add to ``gram`` itself instead of a copy.
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
    out = gram if overwrite else gram.copy()
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


def ease_weights(gram: np.ndarray, lam: float, overwrite: bool = False, block: int = 1024) -> np.ndarray:
    """B = -P / diag(P) with P = (G + lambda I)^-1 and diag(B) = 0, as float32.

    G + lambda I is symmetric positive definite, so P comes from its Cholesky factor in place (LAPACK
    potrf then potri): the driver holds one float64 n x n working matrix besides ``gram`` (none with
    ``overwrite``, where ``gram`` itself is the working matrix) and the float32 result, not the
    identity, the sum, the inverse and the quotient of a plain ``inv`` each n x n.
    """
    if lam <= 0:
        raise ValueError(f"EASE lambda must be positive, got {lam}")
    n = gram.shape[0]
    mine = overwrite and gram.dtype == np.float64 and gram.flags.c_contiguous
    work = gram if mine else np.array(gram, dtype=np.float64, order="C")
    work.flat[:: n + 1] += lam
    # LAPACK reads the C-ordered matrix as its transpose (the same symmetric matrix), so its upper
    # triangle is ``work``'s lower one: potri leaves P there.
    factor, info = lapack.dpotrf(work.T, lower=False, overwrite_a=True, clean=False)
    if info == 0:
        factor, info = lapack.dpotri(factor, lower=False, overwrite_c=True)
    if info != 0:
        raise ValueError(f"EASE: G + lambda I is not positive definite (LAPACK info {info})")
    p = factor.T  # C order again; valid on and below the diagonal
    diagonal = p.diagonal().copy()
    out = np.empty((n, n), dtype=np.float32)
    for start in range(0, n, block):  # row block of B from P's lower triangle, mirrored
        stop = min(start + block, n)
        rows = np.tril(p[start:stop, :stop], k=start)  # P[i, j] for j <= i
        rows[:, start:stop] += np.tril(p[start:stop, start:stop], k=-1).T  # the block's upper part
        out[start:stop, :stop] = rows / -diagonal[None, :stop]
        out[start:stop, stop:] = p[stop:, start:stop].T / -diagonal[None, stop:]  # P[i, j] = P[j, i], j > i
    np.fill_diagonal(out, 0.0)
    return out


def fit_ease(gram: np.ndarray, lam: float) -> CollaborativeScorer:
    return CollaborativeScorer(ease_weights(gram, lam), "ease")


def collaborative_model(setting: str, n_items: int, max_items: int) -> str:
    """The collaborative score a catalogue of ``n_items`` gets: "ease" or "knn" as set, "auto": EASE up
    to ``max_items`` (``experiment.ease_max_items``), item-kNN above."""
    if setting == "auto":
        return "ease" if n_items <= max_items else "knn"
    return setting


def fit_collaborative(
    train_df: DataFrame,
    item_index_df: DataFrame,
    n_items: int,
    text: np.ndarray | None,
    spec: RankerSpec,
    max_items: int,
) -> ItemWeights:
    """The ranker's collaborative score fitted on ``train_df``'s events: item-kNN (sparse) when
    ``spec.collaborative`` is "knn", else EASE (``collaborative_weights`` over the gram, dense);
    ``text`` [n, d] in the index's row order (EASE only; item-kNN reads none).

    Raises:
        EaseTooLargeError: EASE was asked for a catalogue above ``max_items``.
    """
    if spec.collaborative == "knn":
        return item_neighbours(train_df, item_index_df, n_items, spec.neighbours, spec.damping)
    if text is None:
        raise ValueError("fit_collaborative: EASE needs the catalogue's text vectors")
    gram = item_gram(train_df, item_index_df, n_items, max_items)
    return collaborative_weights(gram, text, spec, overwrite=True)  # nobody else reads this gram


def collaborative_weights(gram: np.ndarray, text: np.ndarray, spec: RankerSpec, overwrite: bool = False) -> np.ndarray:
    """EASE B over ``gram`` with the text neighbours ``spec`` asks for (a model saved without them:
    plain EASE); ``text`` [n, d] in the gram's row order. ``overwrite``: ``gram`` is the working
    matrix (the driver then holds it and the float32 result, 12 bytes x items², and nothing more)."""
    fused = with_text_neighbours(gram, text, spec.text_neighbours, spec.text_weight, overwrite=overwrite)
    return ease_weights(fused, spec.ease_lambda, overwrite=overwrite or fused is not gram)  # a copy of its own


def resolved(spec: RankerSpec, n_items: int, max_items: int) -> RankerSpec:
    """``spec`` with its collaborative score decided for a catalogue of ``n_items``."""
    return dataclasses.replace(spec, collaborative=collaborative_model(spec.collaborative, n_items, max_items))


# ---------------------------------------------------------------------------------------- item-kNN
_NEIGHBOUR_BYTES = 12  # a neighbour in Arrow: row, column (int32) and weight (float32)


def item_neighbours(
    train_df: DataFrame,
    item_index_df: DataFrame,
    n_items: int,
    neighbours: int,
    damping: float,
    collect_bytes: int | None = None,
) -> sparse.csr_matrix:
    """Item-kNN weights W [n_items, n_items] (sparse, float32), RP3beta's random walk item -> user ->
    item: W[i, j] = sum over the users u holding both of 1 / |u|, divided by c_i and by c_j ** damping
    (c: the users holding an item; damping lowers popular neighbours), kept for the ``neighbours``
    largest j of each i (ties: the lower row). Spark weighs the pairs and keeps each item's top; the
    driver receives at most n_items x neighbours entries, in parts of about ``collect_bytes`` of Arrow
    (None: ``catalog.COLLECT_BYTES``)."""
    if neighbours < 1 or damping < 0:
        raise ValueError(f"item-kNN needs neighbours >= 1 and damping >= 0, got {neighbours}, {damping}")
    require_columns(train_df, ["user_id", "item_id"], "item_neighbours")
    held = train_df.select("user_id", "item_id").distinct().join(item_index_df, "item_id").select("user_id", "row")
    x = held.withColumn("share", 1.0 / F.count(F.lit(1)).over(Window.partitionBy("user_id")))
    holders = held.groupBy("row").agg(F.count(F.lit(1)).cast("double").alias("c"))
    a, b = x.alias("a"), x.alias("b")
    half = (
        a.join(b, (F.col("a.user_id") == F.col("b.user_id")) & (F.col("a.row") < F.col("b.row")))
        .groupBy(F.col("a.row").alias("i"), F.col("b.row").alias("j"))
        .agg(F.sum("a.share").alias("walk"))
    )
    pairs = half.unionByName(half.select(F.col("j").alias("i"), F.col("i").alias("j"), "walk"))
    ci = holders.select(F.col("row").alias("i"), F.col("c").alias("ci"))
    cj = holders.select(F.col("row").alias("j"), F.col("c").alias("cj"))
    weight = F.col("walk") / F.col("ci") / F.pow(F.col("cj"), F.lit(float(damping)))
    walks = pairs.join(ci, "i").join(cj, "j").select("i", "j", weight.alias("w"))
    nearest = F.row_number().over(Window.partitionBy("i").orderBy(F.desc("w"), "j"))
    kept = walks.withColumn("r", nearest).where(F.col("r") <= neighbours)
    # The CSR arrays' own types (int32, float32) from Spark, held in Spark's cache and collected a
    # range of rows at a time, each sorted (row-major order): the driver holds the matrix's arrays
    # and one part's Arrow (COLLECT_BYTES), never the whole list of neighbours as Arrow.
    top = kept.select(F.col("i").cast("int"), F.col("j").cast("int"), F.col("w").cast("float")).persist()
    try:
        total = top.count()
        counts = np.zeros(n_items, dtype=np.int64)
        indices = np.empty(total, dtype=np.int32)
        data = np.empty(total, dtype=np.float32)
        parts = max(1, min(n_items, -(-total * _NEIGHBOUR_BYTES // (collect_bytes or COLLECT_BYTES))))
        bounds = np.linspace(0, n_items, parts + 1).astype(np.int64)
        at = 0
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            part = top.where((F.col("i") >= lo) & (F.col("i") < hi)).orderBy("i", "j").toArrow()
            for batch in part.to_batches():
                stop = at + batch.num_rows
                counts += np.bincount(batch.column(0).to_numpy(), minlength=n_items)
                indices[at:stop] = batch.column(1).to_numpy()
                data[at:stop] = batch.column(2).to_numpy()
                at = stop
            del part
    finally:
        top.unpersist()
    indptr = np.zeros(n_items + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return sparse.csr_matrix((data, indices, indptr), shape=(n_items, n_items))


def fit_knn(
    train_df: DataFrame, item_index_df: DataFrame, n_items: int, neighbours: int, damping: float
) -> CollaborativeScorer:
    return CollaborativeScorer(item_neighbours(train_df, item_index_df, n_items, neighbours, damping), "knn")
