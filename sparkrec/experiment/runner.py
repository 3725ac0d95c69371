"""One experiment, end to end: clean and embed the landing zone into the experiment's own lakehouse,
split, tune and fit every model, score them all the same way, and log it all to MLflow."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkrec import embed, evaluation, features, landing, plots, splits, tables
from sparkrec.catalog import Catalog, item_catalog
from sparkrec.config import Config
from sparkrec.errors import UserError
from sparkrec.experiment.report import aggregate, one_line
from sparkrec.experiment.spec import SEEDED, ExperimentSpec, experiment_config
from sparkrec.experiment.tuning import EvalSet, fit, tune, tunes_collaborative
from sparkrec.models import baselines
from sparkrec.schemas import INTERACTIONS, ITEM_EMBEDDINGS
from sparkrec.stages import run_clean, run_embed
from sparkrec.tracking import configure_mlflow, git_commit, log_metrics, log_params, mlflow_metric_name

log = logging.getLogger("sparkrec")


@dataclass(frozen=True)
class Split:
    """The experiment's data: the test pair, the validation pair carved from its train part (None when
    nothing is tuned), the catalogue and the protocol as reported."""

    test: EvalSet
    valid: EvalSet | None
    catalog: Catalog
    protocol: dict[str, Any]


def run_experiment(
    spark: SparkSession, config: Config, spec: ExperimentSpec, output: str | None = None
) -> dict[str, Any]:
    """Clean, embed, split, tune, train and score every model of ``spec``; returns (and writes) the JSON."""
    spec.check()
    xconfig, name = experiment_config(config, spec)
    days = landing.landing_days(xconfig)
    if not days:
        raise landing.LandingMissingError(f"no landing days under {spec.landing}/events/ds=YYYY-MM-DD/")
    configure_mlflow(xconfig)
    with mlflow.start_run(run_name=f"experiment {name} {spec.split}"):
        mlflow.set_tags(
            {"sparkrec.stage": "experiment", "sparkrec.dataset": name, "mlflow.source.git.commit": git_commit()}
        )
        run_clean(spark, xconfig, days)
        if "sparkrec" in spec.models:
            run_embed(spark, xconfig, days[-1])
        interactions = features.without_bots(tables.read_table(spark, xconfig, INTERACTIONS)).cache()
        split = _split_data(xconfig, spec, name, interactions)
        log_params({f"protocol.{mlflow_metric_name(k)}": v for k, v in split.protocol.items() if k != "landing"})
        log.info("experiment %s: %s", name, json.dumps(split.protocol))
        vectors = None
        if "sparkrec" in spec.models:
            model_name = embed.model_name(xconfig.embed)
            vectors = tables.read_table(spark, xconfig, ITEM_EMBEDDINGS).where(F.col("model") == model_name)
        results: dict[str, dict[str, Any]] = {}
        curves: dict[str, evaluation.Curves] = {}
        for model in spec.models:
            if model == "ease" and split.catalog.size > xconfig.experiment.ease_max_items:
                log.warning(
                    "experiment: ease left out: %d items is above experiment.ease_max_items=%d (knn scales)",
                    split.catalog.size,
                    xconfig.experiment.ease_max_items,
                )
                continue
            results[model], curves[model] = _run_model(spark, xconfig, spec, name, model, split, vectors)
        test, catalog = split.test, split.catalog
        popularity = baselines.fit_popularity(test.train_df, catalog.index_df, catalog.size)
        by_item = dict(zip(catalog.item_ids, popularity.popularity, strict=True))
        plots.log_metrics_at_k(curves, spec.k, by_item)
        plots.log_metric_bars(results, spec.k)
        out = {"protocol": split.protocol, "models": results}
        mlflow.log_dict(out, "experiment.json")
        interactions.unpersist()
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(out, indent=2, default=str) + "\n")
    return out


def _split_data(config: Config, spec: ExperimentSpec, name: str, interactions: DataFrame) -> Split:
    """The test split of ``interactions`` by the protocol, a validation split of its train part by the
    same protocol (the holdout days before the test days, or seed + 1), and the protocol's numbers."""
    spark = interactions.sparkSession
    last_day = str(interactions.agg(F.max("event_date")).collect()[0][0])
    holdout = spec.holdout_days or config.evaluate.holdout_days
    train_df, test_df = _split(interactions, spec, last_day, holdout, spec.seed)
    fit_df, valid_df = _split(train_df, spec, features.day_offset(last_day, -holdout), holdout, spec.seed + 1)
    catalog = item_catalog(spark, config)
    history = config.train.model.history_length
    cold = _cold_items(catalog, train_df, test_df) if spec.split == "cold-items" else None
    if cold is not None:  # candidates: the held-out items only; histories still map every item
        catalog = dataclasses.replace(catalog, eligible=catalog.eligible & cold)
    test = _eval_set(train_df, test_df, catalog, history, spec.min_rating)
    tuned = {"als", "ease", "knn"} & set(spec.models) or tunes_collaborative(config, spec)
    valid = _eval_set(fit_df, valid_df, catalog, history, spec.min_rating) if tuned else None
    chrono = spec.split == "chrono"
    protocol = {
        "dataset": name,
        "landing": spec.landing,
        "split": spec.split,
        "k": spec.k,
        "seed": spec.seed,
        "repeat": spec.repeat,
        "min_rating": spec.min_rating,
        "last_day": last_day,
        **({"holdout_days": holdout} if chrono else {"ratio": spec.ratio}),
        "validation": "the train part's last holdout_days"
        if chrono
        else "the same split of the train part with seed + 1",
        "interactions": interactions.count(),
        "train_interactions": test.train_df.count(),
        "test_interactions": test_df.count(),
        "users_evaluated": test.users_df.count(),
        "items": catalog.size,
        **(_cold_protocol(catalog, spec.k) if cold is not None else {}),
        "relevant": "every positive event" + (f", ratings >= {spec.min_rating}" if spec.min_rating is not None else ""),
    }
    return Split(test, valid, catalog, protocol)


def _run_model(
    spark: SparkSession,
    config: Config,
    spec: ExperimentSpec,
    name: str,
    model: str,
    split: Split,
    vectors: DataFrame | None,
) -> tuple[dict[str, Any], evaluation.Curves]:
    """One model in its nested MLflow run: tuned, fitted (once per seed for the seeded ones) and scored;
    its result entry and its first run's curves."""
    test, catalog = split.test, split.catalog
    with mlflow.start_run(run_name=model, nested=True):
        mlflow.set_tags({"sparkrec.stage": "experiment", "sparkrec.model": model})
        params, tuning = tune(spark, config, model, split.valid, catalog, spec)
        runs: list[dict[str, float]] = []
        first: evaluation.Curves | None = None
        for r in range(spec.repeat if model in SEEDED else 1):
            start = time.perf_counter()
            scorer = fit(spark, config, model, test.train_df, catalog, params, spec.seed + r, label=name)
            train_s = time.perf_counter() - start
            metrics, model_curves = evaluation.score_models(
                test.users_df,
                test.truth_df,
                {model: scorer},
                catalog,
                spec.k,
                max(spec.k, config.evaluate.curve_k),
                config.recommend.block_size,
                item_vectors=vectors,
                train_df=test.train_df,
                with_curves=True,
            )
            runs.append({**metrics[model], "train_s": train_s})
            first = model_curves[model] if first is None else first
        summary = aggregate(runs)
        log_params({"model": model, **{f"param.{k}": v for k, v in params.items()}, "runs": len(runs)})
        log_metrics(dict(summary.items()))
        if tuning:
            mlflow.log_dict({"grid": tuning}, "tuning.json")
        log.info("experiment %s %s: %s", name, model, one_line(summary))
        entry = {**summary, "params": params, "runs": len(runs), **({"tuning": tuning} if tuning else {})}
        assert first is not None  # at least one run
        return entry, first


def _split(df: DataFrame, spec: ExperimentSpec, last_day: str, holdout: int, seed: int) -> tuple[DataFrame, DataFrame]:
    train, test = splits.split(df, spec.split, last_day=last_day, holdout_days=holdout, ratio=spec.ratio, seed=seed)
    return train.cache(), test.cache()


def _cold_items(catalog: Catalog, train_df: DataFrame, test_df: DataFrame) -> np.ndarray:
    """bool [n]: items of the test part that the train part never shows."""
    held_out = {
        r[0]
        for r in test_df.select("item_id")
        .distinct()
        .join(train_df.select("item_id").distinct(), "item_id", "left_anti")
        .collect()
    }
    return np.array([item in held_out for item in catalog.item_ids], dtype=bool)


def _cold_protocol(catalog: Catalog, k: int) -> dict[str, Any]:
    """The candidate count and what picking k of them at random would score (expected recall@k)."""
    n = int(catalog.eligible.sum())
    if n == 0:
        raise UserError("the cold-items split held out no eligible item: raise the share held out (lower --ratio)")
    return {"candidates": n, f"random_recall@{k}": min(k, n) / n}


def _eval_set(
    train_df: DataFrame, test_df: DataFrame, catalog: Catalog, history: int, min_rating: float | None
) -> EvalSet:
    truth = evaluation.to_truth(train_df, test_df, min_rating).cache()
    users = evaluation.to_evaluation_users(train_df, truth, catalog, history).cache()
    if users.isEmpty():
        raise UserError(
            "no user has both training history and a relevant test item: use more data, "
            "a longer --holdout-days or another --split"
        )
    return EvalSet(train_df, truth, users)
