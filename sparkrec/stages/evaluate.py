"""The evaluate stage: the candidate model, the champion and popularity on the held-out days, and the
promotion gate that moves the champion alias; what users did with yesterday's lists."""

from __future__ import annotations

import logging
from typing import Any

import mlflow
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sparkrec import evaluation, features, plots, splits, tables
from sparkrec.catalog import item_catalog
from sparkrec.config import Config
from sparkrec.metrics import ranking_metrics
from sparkrec.models.baselines import fit_popularity
from sparkrec.models.packaging import LoadedTwoTower
from sparkrec.registry import (
    PromotionDecision,
    alias_version,
    apply_promotion,
    decide_promotion,
    load_model,
    load_version,
)
from sparkrec.schemas import INTERACTIONS, ITEM_EMBEDDINGS, ITEMS, RECOMMENDATIONS
from sparkrec.serving import model_scorer
from sparkrec.stages.common import MetricRow, check_date, write_run_metrics
from sparkrec.tracking import log_metrics, log_params, report_counts, stage_run

log = logging.getLogger("sparkrec")


def run_evaluate(spark: SparkSession, config: Config, day: str, version: str | None = None) -> dict[str, Any]:
    """Hold out the last ``evaluate.holdout_days`` days; score the candidate, the champion and
    popularity on them, and promote the candidate to champion when the gate allows it.

    The candidate is model ``version`` when given (the nightly run passes the version its own train
    stage registered, so another run moving ``@candidate`` meanwhile changes nothing), else
    ``@candidate``."""
    check_date(day)
    k = config.eval_k
    cutoff = features.day_offset(day, -config.evaluate.holdout_days)
    versions = {t: tables.table_version(spark, config, t) for t in (INTERACTIONS, ITEMS, ITEM_EMBEDDINGS)}
    with stage_run(config, "evaluate", day, versions) as run_id:
        if version is None:
            candidate, version = load_model(config, config.mlflow.candidate_alias)
        else:
            candidate = load_version(config, version)
        champion_version = alias_version(config, config.mlflow.champion_alias)
        log_params(
            {
                "model_version": version,
                "champion_version_before": champion_version or "none",
                "k": k,
                "cutoff": cutoff,
                "protocol": "chrono",
            }
        )
        results = _held_out_metrics(spark, config, day, candidate, version, champion_version)
        served = served_metrics(spark, config, day, k)
        if served:
            results["served"] = served
        decision = _promote(config, version, champion_version, results, k, day)
        rows: list[MetricRow] = [(day, "promoted", 1.0 if decision.promoted else 0.0, "gate")]
        for source, metrics in results.items():
            log_metrics({f"{source}.{m}": v for m, v in metrics.items()})
            rows += [(day, m, v, source) for m, v in metrics.items()]
        write_run_metrics(spark, config, "evaluate", run_id, [day], rows)
        plots.log_metric_bars(results, k)
        for source, metrics in results.items():
            log.info("evaluate %s %s: %s", day, source, ", ".join(f"{m}={v:.4f}" for m, v in metrics.items()))
        verdict = "promoted to @" + config.mlflow.champion_alias if decision.promoted else "not promoted"
        log.info("evaluate %s: version %s %s (%s)", day, version, verdict, decision.reason)
        report_counts(run_id, held_out_users=results["two_tower"].get("users", 0.0))
        return {
            "run_id": run_id,
            "model_version": version,
            "cutoff": cutoff,
            "promoted": decision.promoted,
            "champion_version": alias_version(config, config.mlflow.champion_alias),
            "metrics": results,
        }


def _held_out_metrics(
    spark: SparkSession,
    config: Config,
    day: str,
    candidate: LoadedTwoTower,
    version: str,
    champion_version: str | None,
) -> dict[str, dict[str, float]]:
    """Metrics of the candidate (``two_tower``), the champion (when another version) and popularity on
    the held-out days; the metric@k curves go to MLflow."""
    k = config.eval_k
    catalog = item_catalog(spark, config)
    people = features.without_bots(tables.read_table(spark, config, INTERACTIONS))
    train_part, test_part = splits.chrono_split(people, day, config.evaluate.holdout_days)
    truth = evaluation.sample_users(
        evaluation.to_truth(train_part, test_part), config.evaluate.max_users, config.train.seed
    ).cache()
    popularity = fit_popularity(train_part, catalog.index_df, catalog.size)
    models = {"two_tower": candidate}
    if champion_version is not None and champion_version != version:
        models["champion"], _ = load_model(config, config.mlflow.champion_alias)
    fitted: dict = {}  # the candidate and the champion fit one collaborative score when they share it
    scorers: dict[str, Any] = {name: model_scorer(spark, config, m, catalog, train_part, fitted=fitted)
                               for name, m in models.items()}  # fmt: skip
    scorers["popularity"] = popularity
    # the users' histories as long as the longest model reads them; each model reads its own length
    length = max(m.spec.history_length for m in models.values())
    users = evaluation.to_evaluation_users(train_part, truth, catalog, length).cache()
    longest = max(k, config.evaluate.curve_k)
    # diversity@k reads the stored text vectors of the candidate's encoder, in Spark
    text_model, dim = _encoder(candidate)
    text_vectors = tables.read_table(spark, config, ITEM_EMBEDDINGS).where(
        (F.col("model") == text_model) & (F.col("dim") == dim)
    )
    block = config.recommend.block_size
    results, curves = evaluation.score_models(
        users,
        truth,
        scorers,
        catalog,
        k,
        longest,
        block,
        item_vectors=text_vectors,
        train_df=train_part,
        with_curves=True,
    )
    users.unpersist()
    truth.unpersist()
    by_item = dict(zip(catalog.item_ids, popularity.popularity, strict=True))
    plots.log_metrics_at_k(curves, k, by_item)
    return results


def _encoder(loaded: LoadedTwoTower) -> tuple[str, int]:
    """The text encoder a model reads: its name and vector size."""
    return loaded.spec.text_model, int(loaded.model.item_text.shape[1])


def _promote(
    config: Config,
    version: str,
    champion_version: str | None,
    results: dict[str, dict[str, float]],
    k: int,
    day: str,
) -> PromotionDecision:
    """The promotion gate on ``ndcg@k``: decide, move the champion alias when promoted, tag the run."""
    gate_metric = f"ndcg@{k}"
    candidate_score = results["two_tower"][gate_metric]
    champion_score: float | None
    if "champion" in results:
        champion_score = results["champion"][gate_metric]
    else:  # no champion yet, or the candidate is the champion already
        champion_score = candidate_score if champion_version == version else None
    decision = decide_promotion(
        version, candidate_score, champion_version, champion_score, config.evaluate.promotion_tolerance
    )
    apply_promotion(config, decision, gate_metric, day)
    mlflow.set_tags({"promoted": str(decision.promoted).lower(), "promotion_reason": decision.reason})
    return decision


def served_metrics(spark: SparkSession, config: Config, day: str, k: int) -> dict[str, float]:
    """What users did with what they were shown: yesterday's served list against today's interactions.

    ``served_hit@k`` is the share of yesterday's recommended users active today who interacted with
    one of their recommended items today; ``served_recall@k`` the mean share of their items today that
    were recommended. Empty when there was no list yesterday or nobody came back.
    """
    if not tables.table_exists(spark, config, RECOMMENDATIONS):
        return {}
    yesterday = features.day_offset(day, -1)
    shown = tables.read_table(spark, config, RECOMMENDATIONS).where(F.col("ds") == F.to_date(F.lit(yesterday)))
    today = tables.read_table(spark, config, INTERACTIONS).where(
        (F.col("event_date") == F.to_date(F.lit(day))) & (F.col("weight") > 0)
    )
    got = ranking_metrics(shown, today.select("user_id", "item_id"), k)
    if not got["users"]:
        return {}
    return {f"served_hit@{k}": got[f"hit@{k}"], f"served_recall@{k}": got[f"recall@{k}"], "users": got["users"]}
