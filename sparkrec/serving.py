"""A registered model turned into what scores users: the towers over the whole catalogue and, for a
model trained with one, its ranker with the collaborative score and popularity fitted on the
interactions at hand. The recommend stage, the evaluate stage and ``sparkrec experiment`` all serve
a model through here, so they score it the same way.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkrec.catalog import Catalog, extra_vectors, text_matrix, text_parts
from sparkrec.config import Config, RankerConfig
from sparkrec.models.baselines import EaseTooLargeError, fit_collaborative, fit_popularity
from sparkrec.models.packaging import LoadedTwoTower
from sparkrec.models.scoring import Scorer, TwoTowerScorer
from sparkrec.models.specs import RankerSpec
from sparkrec.models.topk import ItemWeights
from sparkrec.ranking import LearnedRanker, RankedScorer

log = logging.getLogger("sparkrec")

# Item-kNN's settings when a model trained with EASE is served with item-kNN.
DEFAULT_KNN = RankerConfig()


def catalogue_text(spark: SparkSession, config: Config, loaded: LoadedTwoTower, catalog: Catalog) -> np.ndarray:
    """The stored text vector of every catalogue item for the model's text encoder (zeros: none)."""
    return text_matrix(spark, config, loaded.spec.text_model, catalog.item_ids, int(loaded.model.item_text.shape[1]))


def two_tower_scorer(
    spark: SparkSession, config: Config, loaded: LoadedTwoTower, catalog: Catalog, text: np.ndarray | None = None
) -> TwoTowerScorer:
    """A ``TwoTowerScorer`` of a loaded model over the catalogue: every item's fused vector, from its
    id, its stored text vector, its attributes and the extra vector columns the model was trained
    with (read again from ``train.model.item_vectors``, else from where they were at training time).
    ``text``: the catalogue's text vectors when the caller holds them already; None reads them a part
    at a time (``catalog.text_parts``), so the driver never holds them whole."""
    attrs = None
    if catalog.categories is not None and catalog.prices is not None:
        attrs = loaded.attribute_codes(catalog.categories, catalog.prices)
    extra = None
    columns = loaded.spec.extra_columns
    if columns:
        sources = {c: config.train.model.item_vectors.get(c) or loaded.spec.item_vectors[c] for c in columns}
        extra, _ = extra_vectors(spark, sources, catalog.item_ids, columns)
    if text is None:
        vectors = _item_vectors_by_part(spark, config, loaded, catalog, attrs, extra)
    else:
        vectors = loaded.item_vectors(catalog.item_ids, text, attrs, extra)
    state = {k: v.detach().numpy() for k, v in loaded.model.users.state_dict().items()}
    return TwoTowerScorer(vectors, state, loaded.spec.dim, loaded.spec.encoding)


def _item_vectors_by_part(
    spark: SparkSession,
    config: Config,
    loaded: LoadedTwoTower,
    catalog: Catalog,
    attrs: np.ndarray | None,
    extra: np.ndarray | None,
) -> np.ndarray:
    """The catalogue's item vectors [n, D], the text vectors read a part at a time; an item without a
    stored one gets a zero text vector, as ``catalogue_text`` gives it."""
    ids = catalog.item_ids
    out = np.empty((len(ids), loaded.spec.dim), dtype=np.float32)
    done = np.zeros(len(ids), dtype=bool)

    def fill(rows: np.ndarray, text: np.ndarray) -> None:
        out[rows] = loaded.item_vectors(
            [ids[r] for r in rows], text, None if attrs is None else attrs[rows], None if extra is None else extra[rows]
        )
        done[rows] = True

    dim = int(loaded.model.item_text.shape[1])
    for rows, vectors, _ in text_parts(spark, config, loaded.spec.text_model, ids, dim):
        if len(rows):
            fill(rows, vectors)
    rest = np.flatnonzero(~done)
    if len(rest):
        fill(rest, np.zeros((len(rest), dim), dtype=np.float32))
    return out


def learned_ranker(
    spark: SparkSession,
    config: Config,
    loaded: LoadedTwoTower,
    catalog: Catalog,
    interactions_df: DataFrame,
    towers: TwoTowerScorer,
    text: np.ndarray | None = None,
    fitted: dict[tuple[Any, ...], ItemWeights] | None = None,
) -> LearnedRanker | None:
    """The model's ranker over the catalogue (``ranking.LearnedRanker``), its collaborative score and
    popularity fitted on ``interactions_df``'s positive events; None when the model was trained without
    one or ``recommend.ranker`` is ``retrieval``. ``text``: the catalogue's text vectors, for EASE's text
    neighbours (read here when None and EASE is served; item-kNN reads none). ``fitted`` keeps
    collaborative scores already fitted on the same interactions (two models served with the same one
    fit it once)."""
    spec = loaded.spec.ranker
    if config.recommend.ranker != "learned" or spec is None or loaded.model.ranker is None:
        return None
    positives = interactions_df.where(F.col("weight") > 0)
    spec = served_collaborative(spec, catalog.size, config.experiment.ease_max_items)
    fitted = {} if fitted is None else fitted
    key = (spec.collaborative, spec.neighbours, spec.damping, spec.ease_lambda, spec.text_neighbours,
           spec.text_weight, loaded.spec.text_model)  # fmt: skip
    if key not in fitted:
        if text is None and spec.collaborative == "ease":  # item-kNN reads no text
            text = catalogue_text(spark, config, loaded, catalog)
        try:
            fitted[key] = fit_collaborative(
                positives, catalog.index_df, catalog.size, text, spec, config.experiment.ease_max_items
            )
        except EaseTooLargeError as err:
            raise EaseTooLargeError(
                f"the ranker's collaborative score: {err}; or set recommend.ranker: retrieval"
            ) from err
    weights = fitted[key]
    popularity = fit_popularity(positives, catalog.index_df, catalog.size).popularity
    recent = None
    if spec.recent:
        last = positives.agg(F.max("event_ts")).collect()[0][0]
        since = F.lit(last - dt.timedelta(days=spec.recent_days)) if last else None
        lately = positives.where(F.col("event_ts") > since) if since is not None else positives
        recent = np.log1p(fit_popularity(lately, catalog.index_df, catalog.size).popularity).astype(np.float32)
    state = {k: v.detach().numpy() for k, v in loaded.model.ranker.state_dict().items()}
    return LearnedRanker(
        towers,
        weights,
        np.log1p(popularity).astype(np.float32),
        state,
        spec,
        retrieval_candidates=config.recommend.retrieval_candidates,
        recent=recent,
    )


def served_collaborative(spec: RankerSpec, n_items: int, max_items: int) -> RankerSpec:
    """The collaborative score a model is served with: the one it was trained with, except that a model
    trained with EASE on a catalogue that has since grown above ``max_items`` is served item-kNN (with
    a warning: its ranker learned EASE's scores), never refused."""
    if spec.collaborative == "ease" and n_items > max_items:
        log.warning(
            "recommend: the catalogue has %d items, above experiment.ease_max_items=%d; the model's ranker "
            "was trained with EASE and is served with item-kNN until it is retrained",
            n_items,
            max_items,
        )
        return dataclasses.replace(
            spec, collaborative="knn", neighbours=DEFAULT_KNN.neighbours, damping=DEFAULT_KNN.damping
        )
    return spec


def model_scorer(
    spark: SparkSession,
    config: Config,
    loaded: LoadedTwoTower,
    catalog: Catalog,
    interactions_df: DataFrame,
    text: np.ndarray | None = None,
    fitted: dict[tuple[Any, ...], ItemWeights] | None = None,
) -> Scorer:
    """What the model serves, as one ``Scorer`` for evaluation: the ranker's step over its candidates
    (``ranking.RankedScorer``) when it has one, else the towers' dot product."""
    towers = two_tower_scorer(spark, config, loaded, catalog, text)
    ranker = learned_ranker(spark, config, loaded, catalog, interactions_df, towers, text, fitted)
    return towers if ranker is None else RankedScorer(ranker, catalog.eligible)
