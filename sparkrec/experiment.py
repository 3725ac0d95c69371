"""``sparkrec experiment``: every model on the same split of a landing zone, measured the same way.

The landing zone is cleaned and embedded into the experiment's own lakehouse
(``experiment.root``/<data set>), with the cleaning rules of the zone's ``_dataset.yaml``. The
interactions are split by one of ``splits.PROTOCOLS``; a validation split is carved from the train
part by the same protocol (the holdout days before the test days, or seed + 1), and the baselines'
grids from ``conf/`` are tried on it: the setting with the best validation ``ndcg@k`` is refitted on
the whole train part. Every model is then scored on the test part through ``evaluation`` (same
users, same catalogue, seen items removed) and logged as a nested MLflow run; two-tower models are
registered under ``experiment.registered_model``, never the production name, and no alias of the
production model moves.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkrec import evaluation, features, landing, splits, stages, tables
from sparkrec.adapters import read_profile
from sparkrec.config import Config, with_values
from sparkrec.evaluation import Catalog
from sparkrec.models import baselines
from sparkrec.models.scoring import Scorer
from sparkrec.schemas import INTERACTIONS, ITEM_EMBEDDINGS
from sparkrec.tracking import configure_mlflow, git_commit, log_metrics, mlflow_metric_name

log = logging.getLogger("sparkrec")
MODELS = ("sparkrec", "popularity", "als", "ease")
SEEDED = ("sparkrec", "als")  # the others are deterministic: --repeat fits them once


# The towers and the ranker learn to find what the protocol hides. chrono: what the user does next (the
# nightly job's question). Every other protocol hides random interactions: a hidden item can be older
# than the history the user tower reads, so an example's history is the user's other items; the
# ranker's labels are a small random share of each user's items, so the EASE its training lists are
# built with (fitted on the rest) sees nearly all that the EASE it is served with sees. A key the user
# sets (--set, or the --conf file) is left alone.
PROTOCOL_TRAINING: dict[str, dict[str, Any]] = {
    "chrono": {"example_history": "earlier", "ranker.labels": "latest"},
    # a protocol that hides random interactions hides them across all the history: what sold lately
    # says nothing about them (ranker.recent_days off)
    "random": {
        "example_history": "others",
        "ranker.labels": "random",
        "ranker.label_fraction": 0.05,
        "ranker.recent_days": 0,
    },
}


@dataclass(frozen=True)
class ExperimentSpec:
    """What to compare, on which split."""

    landing: str
    split: str = "chrono"
    ratio: float = 0.75
    seed: int = 42
    k: int = 10
    models: tuple[str, ...] = MODELS
    repeat: int = 1
    holdout_days: int = 0  # chrono split; 0 = evaluate.holdout_days
    min_rating: float | None = None  # ratings below are not relevant in the test part
    fixed: tuple[str, ...] = ()  # config keys the user set (--set, --conf): the protocol leaves them alone

    def check(self) -> None:
        unknown = [m for m in self.models if m not in MODELS]
        if unknown or not self.models:
            raise ValueError(f"unknown model(s) {unknown or '(none)'}; choose from {', '.join(MODELS)}")
        if self.split not in splits.PROTOCOLS:
            raise ValueError(f"unknown split {self.split!r}; choose one of {', '.join(splits.PROTOCOLS)}")
        if not 0.0 < self.ratio < 1.0:
            raise ValueError(f"--ratio must be between 0 and 1, got {self.ratio}")
        if self.k < 1 or self.repeat < 1 or self.holdout_days < 0:
            raise ValueError(
                f"--k and --repeat must be positive, --holdout-days not negative: "
                f"k={self.k}, repeat={self.repeat}, holdout_days={self.holdout_days}"
            )


@dataclass(frozen=True)
class EvalSet:
    """One train/test pair, ready to score."""

    train_df: DataFrame
    truth_df: DataFrame
    users_df: DataFrame


def experiment_config(config: Config, spec: ExperimentSpec) -> tuple[Config, str]:
    """The config an experiment runs with, and the data set name (profile name or folder name)."""
    profile = read_profile(spec.landing)
    name = str(profile.get("name") or Path(spec.landing).resolve().name)
    values: dict[str, dict[str, Any]] = {
        "landing": {"root": spec.landing},
        "lakehouse": {"root": str(Path(config.experiment.root) / name / "lakehouse")},
        "mlflow": {
            "experiment": config.experiment.mlflow_experiment,
            "registered_model": config.experiment.registered_model,
        },
    }
    if profile.get("clean"):
        values["clean"] = dict(profile["clean"])
    train: dict[str, Any] = {"ranker": dataclasses.asdict(config.train.ranker)}
    for key, value in PROTOCOL_TRAINING["chrono" if spec.split == "chrono" else "random"].items():
        if f"train.{key}" not in spec.fixed:
            section, _, leaf = key.rpartition(".")
            (train[section] if section else train)[leaf] = value
    values["train"] = train
    return with_values(config, values), name


def run_experiment(
    spark: SparkSession, config: Config, spec: ExperimentSpec, output: str | None = None
) -> dict[str, Any]:
    """Clean, embed, split, tune, train and score every model of ``spec``; returns (and writes) the JSON."""
    import mlflow

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
        stages.run_clean(spark, xconfig, days)
        if "sparkrec" in spec.models:
            stages.run_embed(spark, xconfig, days[-1])
        interactions = features.without_bots(tables.read_table(spark, xconfig, INTERACTIONS)).cache()
        last_day = str(interactions.agg(F.max("event_date")).first()[0])
        holdout = spec.holdout_days or xconfig.evaluate.holdout_days
        train_df, test_df = _split(interactions, spec, last_day, holdout, spec.seed)
        fit_df, valid_df = _split(train_df, spec, features.day_offset(last_day, -holdout), holdout, spec.seed + 1)
        catalog = stages.item_catalog(spark, xconfig)
        history = xconfig.train.model.history_length
        cold = _cold_items(catalog, train_df, test_df) if spec.split == "cold-items" else None
        if cold is not None:  # candidates: the held-out items only; histories still map every item
            catalog = dataclasses.replace(catalog, eligible=catalog.eligible & cold)
        test = _eval_set(train_df, test_df, catalog, history, spec.min_rating)
        protocol = {
            "dataset": name,
            "landing": spec.landing,
            "split": spec.split,
            "k": spec.k,
            "seed": spec.seed,
            "repeat": spec.repeat,
            "min_rating": spec.min_rating,
            "last_day": last_day,
            **({"holdout_days": holdout} if spec.split == "chrono" else {"ratio": spec.ratio}),
            "validation": (
                "the train part's last holdout_days"
                if spec.split == "chrono"
                else "the same split of the train part with seed + 1"
            ),
            "interactions": interactions.count(),
            "train_interactions": test.train_df.count(),
            "test_interactions": test_df.count(),
            "users_evaluated": test.users_df.count(),
            "items": catalog.size,
            **(_cold_protocol(catalog, spec.k) if cold is not None else {}),
            "relevant": "every positive event"
            + (f", ratings >= {spec.min_rating}" if spec.min_rating is not None else ""),
        }
        mlflow.log_params({f"protocol.{mlflow_metric_name(k)}": v for k, v in protocol.items() if k != "landing"})
        log.info("experiment %s: %s", name, json.dumps(protocol))
        valid = (
            _eval_set(fit_df, valid_df, catalog, history, spec.min_rating)
            if {"als", "ease"} & set(spec.models) or _tunes_collaborative(xconfig, spec)
            else None
        )
        vectors = _text_vectors(spark, xconfig) if "sparkrec" in spec.models else None
        results: dict[str, dict[str, Any]] = {}
        lists: dict[str, Any] = {}
        popularity: baselines.PopularityScorer | None = None
        for model in spec.models:
            with mlflow.start_run(run_name=model, nested=True):
                mlflow.set_tags({"sparkrec.stage": "experiment", "sparkrec.model": model})
                params, tuning = _tune(spark, xconfig, model, valid, catalog, spec, vectors)
                runs = []
                for r in range(spec.repeat if model in SEEDED else 1):
                    start = time.perf_counter()
                    scorer = _fit(spark, xconfig, model, test.train_df, catalog, params, spec.seed + r, label=name)
                    train_s = time.perf_counter() - start
                    metrics, recs = evaluation.score_models(
                        test.users_df,
                        test.truth_df,
                        {model: scorer},
                        catalog,
                        spec.k,
                        max(spec.k, xconfig.evaluate.curve_k),
                        xconfig.recommend.block_size,
                        item_vectors_df=vectors,
                        train_df=test.train_df,
                    )
                    runs.append({**metrics[model], "train_s": train_s})
                    lists.setdefault(model, recs[model])
                    if model == "popularity":
                        popularity = scorer  # type: ignore[assignment]
                summary = _aggregate(runs)
                mlflow.log_params({"model": model, **{f"param.{k}": v for k, v in params.items()}, "runs": len(runs)})
                log_metrics({m: v for m, v in summary.items()})
                if tuning:
                    mlflow.log_dict({"grid": tuning}, "tuning.json")
                results[model] = {
                    **summary,
                    "params": params,
                    "runs": len(runs),
                    **({"tuning": tuning} if tuning else {}),
                }
                log.info("experiment %s %s: %s", name, model, _one_line(summary))
        truth = test.truth_df.toPandas()
        if popularity is None:
            popularity = baselines.fit_popularity(test.train_df, catalog.index_df, catalog.size)
        evaluation.log_evaluation_plots(
            lists,
            truth,
            max(spec.k, xconfig.evaluate.curve_k),
            spec.k,
            dict(zip(catalog.item_ids, popularity.popularity, strict=True)),
        )
        evaluation.log_metric_bars(results, spec.k)
        out = {"protocol": protocol, "models": results}
        mlflow.log_dict(out, "experiment.json")
        interactions.unpersist()
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(out, indent=2, default=str) + "\n")
    return out


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
        raise ValueError("the cold-items split held out no eligible item: raise the share held out (lower --ratio)")
    return {"candidates": n, f"random_recall@{k}": min(k, n) / n}


def _eval_set(
    train_df: DataFrame, test_df: DataFrame, catalog: Catalog, history: int, min_rating: float | None
) -> EvalSet:
    truth = evaluation.to_truth(train_df, test_df, min_rating).cache()
    users = evaluation.to_evaluation_users(train_df, truth, catalog, history).cache()
    if users.isEmpty():
        raise ValueError(
            "no user has both training history and a relevant test item: use more data, "
            "a longer --holdout-days or another --split"
        )
    return EvalSet(train_df, truth, users)


def _text_vectors(spark: SparkSession, config: Config) -> DataFrame:
    from sparkrec import embed

    return tables.read_table(spark, config, ITEM_EMBEDDINGS).where(F.col("model") == embed.model_name(config.embed))


# ------------------------------------------------------------------------------------ fit and tune
def _fit(
    spark: SparkSession,
    config: Config,
    model: str,
    train_df: DataFrame,
    catalog: Catalog,
    params: dict[str, Any],
    seed: int,
    label: str,
    gram: np.ndarray | None = None,
) -> Scorer:
    """``model`` fitted on ``train_df`` with the ``params`` ``_tune`` chose."""
    if model == "popularity":
        return baselines.fit_popularity(train_df, catalog.index_df, catalog.size)
    if model == "als":
        return baselines.fit_als(train_df, catalog.index_df, catalog.size, baselines.AlsParams(**params), seed)
    if model == "ease":
        if gram is None:
            gram = baselines.item_gram(train_df, catalog.index_df, catalog.size, config.experiment.ease_max_items)
        return baselines.fit_ease(gram, float(params["lambda"]))
    return _fit_two_tower(spark, config, train_df, catalog, seed, label, params.get("ranker_ease_lambda"))


def _fit_two_tower(
    spark: SparkSession,
    config: Config,
    train_df: DataFrame,
    catalog: Catalog,
    seed: int,
    label: str,
    ease_lambda: float | None = None,
) -> Scorer:
    import mlflow

    from sparkrec.registry import load_model

    train: dict[str, Any] = {"seed": seed}
    if ease_lambda is not None:  # with_values replaces a section's mapping whole: keep the ranker's other keys
        train["ranker"] = {**dataclasses.asdict(config.train.ranker), "ease_lambda": ease_lambda}
    seeded = with_values(config, {"train": train})
    with mlflow.start_run(run_name=f"sparkrec seed {seed}", nested=True) as run:
        result = stages.fit_two_tower(spark, seeded, train_df, run.info.run_id, f"{label} train part")
    loaded, _ = load_model(seeded, seeded.mlflow.candidate_alias)
    log.info("experiment: two-tower version %s of %s", result["model_version"], seeded.mlflow.registered_model)
    return stages.model_scorer(spark, seeded, loaded, catalog, train_df)


def _tunes_collaborative(config: Config, spec: ExperimentSpec) -> bool:
    """Whether sparkrec's collaborative score (its ranker's EASE) is tuned on validation: it has a
    ranker and the user did not set ``train.ranker.ease_lambda``."""
    return (
        "sparkrec" in spec.models
        and config.train.ranker.enabled
        and "train.ranker.ease_lambda" not in spec.fixed
        and bool(config.experiment.ease_lambdas)
    )


def _tune(
    spark: SparkSession,
    config: Config,
    model: str,
    valid: EvalSet | None,
    catalog: Catalog,
    spec: ExperimentSpec,
    vectors: DataFrame | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The grid point with the best validation ndcg@k (first wins a tie), and every point's score.

    sparkrec trains once per seed, so only its collaborative score is tuned: the EASE lambda of its
    ranker, with its text neighbours (``vectors``: the text vectors), scored alone on validation as
    the ``ease`` baseline's lambda is."""
    if model == "popularity":
        return {}, []
    if model == "sparkrec":
        t = config.train
        fixed = {
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
        if not _tunes_collaborative(config, spec):
            return {**fixed, "ranker_ease_lambda": t.ranker.ease_lambda}, []
        assert valid is not None and vectors is not None
        best, scored = _tune_collaborative(spark, config, valid, catalog, spec, vectors)
        return {**fixed, **best}, scored
    assert valid is not None
    if model == "als":
        grid = _als_grid(config.experiment.als_grid)
        fit: Callable[[dict[str, Any]], Scorer] = lambda p: baselines.fit_als(  # noqa: E731
            valid.train_df, catalog.index_df, catalog.size, baselines.AlsParams(**p), spec.seed
        )
    else:
        gram = baselines.item_gram(valid.train_df, catalog.index_df, catalog.size, config.experiment.ease_max_items)
        grid = [{"lambda": float(lam)} for lam in config.experiment.ease_lambdas]
        fit = lambda p: baselines.fit_ease(gram, p["lambda"])  # noqa: E731
    return _grid_search(config, model, grid, fit, valid, catalog, spec)


def _tune_collaborative(
    spark: SparkSession, config: Config, valid: EvalSet, catalog: Catalog, spec: ExperimentSpec, vectors: DataFrame
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """sparkrec's collaborative score (EASE with the text neighbours of ``stages.ranker_meta``) alone on
    validation, over ``experiment.ease_lambdas``."""
    gram = baselines.item_gram(valid.train_df, catalog.index_df, catalog.size, config.experiment.ease_max_items)
    stored = dict(vectors.select("item_id", "embedding").collect())
    dim = len(next(iter(stored.values()))) if stored else 1
    text = stages.vector_matrix(stored, catalog.item_ids, dim)
    meta = stages.ranker_meta(config)
    grid = [{"ranker_ease_lambda": float(lam)} for lam in config.experiment.ease_lambdas]
    return _grid_search(
        config,
        "sparkrec",
        grid,
        lambda p: baselines.EaseScorer(
            stages.collaborative_weights(gram, text, {**meta, "ease_lambda": p["ranker_ease_lambda"]})
        ),
        valid,
        catalog,
        spec,
    )


def _grid_search(
    config: Config,
    model: str,
    grid: list[dict[str, Any]],
    fit: Callable[[dict[str, Any]], Scorer],
    valid: EvalSet,
    catalog: Catalog,
    spec: ExperimentSpec,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    if not grid:
        raise ValueError(f"experiment grid of {model} is empty in the config")
    key = f"ndcg@{spec.k}"
    scored = []
    for point in grid:
        metrics, _ = evaluation.score_models(
            valid.users_df, valid.truth_df, {model: fit(point)}, catalog, spec.k, spec.k, config.recommend.block_size
        )
        scored.append({**point, f"validation_{key}": metrics[model][key]})
        log.info("experiment tune %s %s: validation %s=%.4f", model, point, key, metrics[model][key])
    best = max(range(len(scored)), key=lambda i: (scored[i][f"validation_{key}"], -i))
    return grid[best], scored


def _als_grid(grid: dict[str, list[float]]) -> list[dict[str, Any]]:
    fields = {f.name: f.type for f in dataclasses.fields(baselines.AlsParams)}
    unknown = sorted(set(grid) - set(fields))
    if unknown:
        raise ValueError(f"experiment.als_grid has unknown key(s) {unknown}; known: {sorted(fields)}")
    whole = {"rank", "max_iter"}
    keys = sorted(grid)
    values = [[int(v) if k in whole else float(v) for v in grid[k]] for k in keys]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


# ------------------------------------------------------------------------------------------- report
def _aggregate(runs: list[dict[str, float]]) -> dict[str, float]:
    """Mean of every metric over the runs; ``<metric>_std`` beside it when there was more than one."""
    out: dict[str, float] = {}
    for name in runs[0]:
        values = np.array([r[name] for r in runs], dtype=np.float64)
        out[name] = float(values.mean())
        if len(runs) > 1 and name != "users":
            out[f"{name}_std"] = float(values.std(ddof=1))
    return out


def _one_line(metrics: dict[str, float]) -> str:
    return ", ".join(f"{m}={v:.4f}" for m, v in metrics.items() if not m.endswith("_std"))


def format_table(result: dict[str, Any]) -> str:
    """The result as a Markdown table: one row per model, the accuracy metrics, coverage and train time."""
    k = result["protocol"]["k"]
    columns = [
        f"ndcg@{k}",
        f"precision@{k}",
        f"recall@{k}",
        "map",
        f"map@{k}",
        f"mrr@{k}",
        f"hit@{k}",
        f"coverage@{k}",
        f"novelty@{k}",
        "train_s",
    ]
    models = result["models"]
    present = [c for c in columns if any(c in m for m in models.values())]
    lines = ["| model | " + " | ".join(present) + " |", "|---" * (len(present) + 1) + "|"]
    for name, metrics in models.items():
        cells = []
        for c in present:
            value = metrics.get(c)
            if value is None:
                cells.append("")
                continue
            digits = 1 if c == "train_s" or c.startswith("novelty") else 4
            std = metrics.get(f"{c}_std")
            cells.append(f"{value:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    p = result["protocol"]
    split = (
        f"{p['split']}, last {p['holdout_days']} days"
        if p["split"] == "chrono"
        else f"{p['split']}, ratio {p['ratio']}"
    )
    if "candidates" in p:
        split += (
            f" ({p['candidates']} held-out items are the candidates; picking {k} at random gives "
            f"recall@{k} {p[f'random_recall@{k}']:.4f})"
        )
    lines.append("")
    lines.append(
        f"{p['dataset']}: {split}, seed {p['seed']}, {p['users_evaluated']} users evaluated, "
        f"{p['train_interactions']} train / {p['test_interactions']} test interactions, {p['items']} items"
    )
    params = {m: v["params"] for m, v in models.items() if v.get("params")}
    for name, chosen in params.items():
        lines.append(f"{name}: " + ", ".join(f"{k}={v}" for k, v in chosen.items()))
    return "\n".join(lines)
