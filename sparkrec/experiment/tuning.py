"""Each model of an experiment fitted on a train part, its settings first tuned on validation: the
baselines over their grids from the config, sparkrec over its collaborative score's lambda (EASE) or
damping (item-kNN)."""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlflow
from pyspark.sql import DataFrame, SparkSession

from sparkrec import embed, evaluation
from sparkrec.catalog import Catalog, text_matrix
from sparkrec.config import Config, with_values
from sparkrec.errors import UserError
from sparkrec.experiment.spec import ExperimentSpec
from sparkrec.models import baselines
from sparkrec.models.scoring import Scorer
from sparkrec.models.specs import RankerSpec
from sparkrec.registry import load_model
from sparkrec.serving import model_scorer
from sparkrec.trainer import fit_two_tower

log = logging.getLogger("sparkrec")


@dataclass(frozen=True)
class EvalSet:
    """One train/test pair, ready to score."""

    train_df: DataFrame
    truth_df: DataFrame
    users_df: DataFrame


def fit(
    spark: SparkSession,
    config: Config,
    model: str,
    train_df: DataFrame,
    catalog: Catalog,
    params: dict[str, Any],
    seed: int,
    label: str,
) -> Scorer:
    """``model`` fitted on ``train_df`` with the ``params`` ``tune`` chose."""
    if model == "popularity":
        return baselines.fit_popularity(train_df, catalog.index_df, catalog.size)
    if model == "als":
        return baselines.fit_als(train_df, catalog.index_df, catalog.size, baselines.AlsParams(**params), seed)
    if model == "ease":
        gram = baselines.item_gram(train_df, catalog.index_df, catalog.size, config.experiment.ease_max_items)
        return baselines.fit_ease(gram, float(params["lambda"]))
    if model == "knn":
        neighbours = config.train.ranker.neighbours
        return baselines.fit_knn(train_df, catalog.index_df, catalog.size, neighbours, float(params["damping"]))
    tuned = {k: params[f"ranker_{k}"] for k in ("ease_lambda", "damping") if f"ranker_{k}" in params}
    return _fit_two_tower(spark, config, train_df, catalog, seed, label, tuned)


def _fit_two_tower(
    spark: SparkSession,
    config: Config,
    train_df: DataFrame,
    catalog: Catalog,
    seed: int,
    label: str,
    ranker: dict[str, Any],
) -> Scorer:
    train: dict[str, Any] = {"seed": seed, "ranker": ranker}
    seeded = with_values(config, {"train": train})
    with mlflow.start_run(run_name=f"sparkrec seed {seed}", nested=True) as run:
        result = fit_two_tower(spark, seeded, train_df, run.info.run_id, f"{label} train part")
    loaded, _ = load_model(seeded, seeded.mlflow.candidate_alias)
    log.info("experiment: two-tower version %s of %s", result["model_version"], seeded.mlflow.registered_model)
    return model_scorer(spark, seeded, loaded, catalog, train_df)


def tunes_collaborative(config: Config, spec: ExperimentSpec) -> bool:
    """Whether sparkrec's collaborative score (its ranker's EASE) is tuned on validation: it has a
    ranker and the user did not set ``train.ranker.ease_lambda``."""
    return (
        "sparkrec" in spec.models
        and config.train.ranker.enabled
        and "train.ranker.ease_lambda" not in spec.fixed
        and bool(config.experiment.ease_lambdas)
    )


def tune(
    spark: SparkSession, config: Config, model: str, valid: EvalSet | None, catalog: Catalog, spec: ExperimentSpec
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The grid point with the best validation ndcg@k (first wins a tie), and every point's score.

    sparkrec trains once per seed, so only its collaborative score is tuned: the EASE lambda of its
    ranker, with its text neighbours, scored alone on validation as the ``ease`` baseline's lambda is."""
    if model == "popularity":
        return {}, []
    if model == "sparkrec":
        fixed = _sparkrec_params(config)
        if not tunes_collaborative(config, spec):
            rc = config.train.ranker
            return {**fixed, "ranker_ease_lambda": rc.ease_lambda, "ranker_damping": rc.damping}, []
        assert valid is not None
        best, scored = _tune_collaborative(spark, config, valid, catalog, spec)
        return {**fixed, **best}, scored
    assert valid is not None
    fitter: Callable[[dict[str, Any]], Scorer]
    if model == "als":
        grid = als_grid(config.experiment.als_grid)

        def fitter(p: dict[str, Any]) -> Scorer:
            params = baselines.AlsParams(**p)
            return baselines.fit_als(valid.train_df, catalog.index_df, catalog.size, params, spec.seed)

    elif model == "knn":
        grid = [{"damping": float(d)} for d in config.experiment.knn_dampings]

        def fitter(p: dict[str, Any]) -> Scorer:
            neighbours = config.train.ranker.neighbours
            return baselines.fit_knn(valid.train_df, catalog.index_df, catalog.size, neighbours, p["damping"])

    else:
        gram = baselines.item_gram(valid.train_df, catalog.index_df, catalog.size, config.experiment.ease_max_items)
        grid = [{"lambda": float(lam)} for lam in config.experiment.ease_lambdas]

        def fitter(p: dict[str, Any]) -> Scorer:
            return baselines.fit_ease(gram, p["lambda"])

    return _grid_search(config, model, grid, fitter, valid, catalog, spec)


def _sparkrec_params(config: Config) -> dict[str, Any]:
    """The settings sparkrec trains with, as the experiment reports them."""
    t = config.train
    return {
        "dim": t.model.dim,
        "history_length": t.model.history_length,
        "temperature": t.model.temperature,
        "epochs": t.epochs,
        "batch_size": t.batch_size,
        "learning_rate": t.learning_rate,
        "example_history": t.example_history,
        "ranker": t.ranker.enabled,
        "ranker_labels": t.ranker.labels,
        "ranker_text_weight": t.ranker.text_weight if t.model.text else 0.0,
        "ranker_recent_days": t.ranker.recent_days,
        "weight_average": t.weight_average,
    }


def _tune_collaborative(
    spark: SparkSession, config: Config, valid: EvalSet, catalog: Catalog, spec: ExperimentSpec
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """sparkrec's collaborative score alone on validation: EASE with the text neighbours its ranker is
    trained with, over ``experiment.ease_lambdas``, or item-kNN (above ``experiment.ease_max_items``
    items) over ``experiment.knn_dampings``."""
    ranker = baselines.resolved(RankerSpec.from_config(config.train), catalog.size, config.experiment.ease_max_items)
    if ranker.collaborative == "knn":
        grid = [{"ranker_damping": float(d)} for d in config.experiment.knn_dampings]

        def fitter(p: dict[str, Any]) -> Scorer:
            damping = p["ranker_damping"]
            return baselines.fit_knn(valid.train_df, catalog.index_df, catalog.size, ranker.neighbours, damping)

        return _grid_search(config, "sparkrec", grid, fitter, valid, catalog, spec)
    gram = baselines.item_gram(valid.train_df, catalog.index_df, catalog.size, config.experiment.ease_max_items)
    text = text_matrix(spark, config, embed.model_name(config.embed), catalog.item_ids)
    lambdas = [{"ranker_ease_lambda": float(lam)} for lam in config.experiment.ease_lambdas]

    def fit_ease(p: dict[str, Any]) -> Scorer:
        spec_ = dataclasses.replace(ranker, ease_lambda=p["ranker_ease_lambda"])
        return baselines.CollaborativeScorer(baselines.collaborative_weights(gram, text, spec_), "ease")

    return _grid_search(config, "sparkrec", lambdas, fit_ease, valid, catalog, spec)


def _grid_search(
    config: Config,
    model: str,
    grid: list[dict[str, Any]],
    fitter: Callable[[dict[str, Any]], Scorer],
    valid: EvalSet,
    catalog: Catalog,
    spec: ExperimentSpec,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    if not grid:
        raise UserError(f"experiment grid of {model} is empty in the config")
    key = f"ndcg@{spec.k}"
    scored = []
    for point in grid:
        metrics, _ = evaluation.score_models(
            valid.users_df, valid.truth_df, {model: fitter(point)}, catalog, spec.k, spec.k, config.recommend.block_size
        )
        scored.append({**point, f"validation_{key}": metrics[model][key]})
        log.info("experiment tune %s %s: validation %s=%.4f", model, point, key, metrics[model][key])
    best = max(range(len(scored)), key=lambda i: (scored[i][f"validation_{key}"], -i))
    return grid[best], scored


def als_grid(grid: dict[str, list[float]]) -> list[dict[str, Any]]:
    """Every combination of the ALS grid (``experiment.als_grid``, keys checked when the config loads)."""
    whole = {"rank", "max_iter"}
    keys = sorted(grid)
    values = [[int(v) if k in whole else float(v) for v in grid[k]] for k in keys]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]
