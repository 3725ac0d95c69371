"""The recommend stage: the served model's top-k list for every active user of the day, through the
ranking step and the business rules (``ranking``), then the publish gate (``publish``) before the
day's partition of ``recommendations`` is replaced."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkrec import features, plots, publish, ranking, tables
from sparkrec.catalog import Catalog, item_catalog, unit_rows
from sparkrec.config import Config
from sparkrec.errors import UserError
from sparkrec.models.packaging import LoadedTwoTower
from sparkrec.models.scoring import to_matrix_rows
from sparkrec.registry import load_model, revert_promotion
from sparkrec.schemas import INTERACTIONS, ITEM_EMBEDDINGS, ITEMS, RECOMMENDATIONS
from sparkrec.serving import catalogue_text, learned_ranker, two_tower_scorer
from sparkrec.session import register_tables
from sparkrec.stages.common import check_date, write_run_metrics
from sparkrec.tracking import log_metrics, log_params, report_counts, stage_run

log = logging.getLogger("sparkrec")


def run_recommend(spark: SparkSession, config: Config, day: str) -> dict[str, Any]:
    """Top-k lists for every active user of ``day`` into ``recommendations``: candidates from the
    served model (``recommend.model_alias``), the ranking step, the business rules, then the publish
    gate; the day's partition is replaced only when the gate passes.

    Raises:
        publish.PublishGateError: a check failed; the table still serves the previous day.
    """
    check_date(day)
    rc = config.recommend
    versions = {t: tables.table_version(spark, config, t) for t in (INTERACTIONS, ITEMS, ITEM_EMBEDDINGS)}
    with stage_run(config, "recommend", day, versions) as run_id:
        loaded, version = load_model(config, rc.model_alias)
        log_params(
            {
                "model_version": version,
                "model_alias": rc.model_alias,
                "k": rc.k,
                "candidates": rc.candidates,
                "ranker": rc.ranker,
                "seen_window_days": rc.seen_window_days,
                "max_per_category": rc.max_per_category,
                "mmr_lambda": rc.mmr_lambda,
                "fallback_segment": rc.fallback_segment,
            }
        )
        interactions = features.filter_until(tables.read_table(spark, config, INTERACTIONS), day)
        active = features.active_users(interactions, day, rc.active_days).cache()
        n_active = active.count()
        try:
            recs, rules, ranker = _day_lists(spark, config, day, loaded, version, interactions, active, n_active)
            out = recs.select(
                F.to_date(F.lit(day)).alias("ds"),
                "user_id",
                "rank",
                "item_id",
                "score",
                F.lit(version).alias("model_version"),
                F.lit(run_id).alias("run_id"),
                "reason",
                F.current_timestamp().alias("generated_at"),
            ).persist(StorageLevel.MEMORY_AND_DISK)
            try:
                metrics = _publish(spark, config, day, run_id, out, rules, n_active, version)
            finally:
                out.unpersist()
        finally:
            active.unpersist()
        register_tables(spark, config)
        log.info(
            "recommend %s: %d users (%d on the popularity fallback), %d rows, model version %s",
            day,
            metrics["users"],
            metrics["fallback_users"],
            metrics["rows"],
            version,
        )
        report_counts(run_id, users=metrics["users"], rows=metrics["rows"])
        return {"run_id": run_id, "model_version": version, "ranker": ranker, **metrics}


def _day_lists(
    spark: SparkSession,
    config: Config,
    day: str,
    loaded: LoadedTwoTower,
    version: str,
    interactions: DataFrame,
    active: DataFrame,
    n_active: int,
) -> tuple[DataFrame, ranking.ListRules, str]:
    """Every active user's list (``user_id, rank, item_id, score, reason``), the rules it was picked
    under and the name of the ranking step used."""
    catalog = item_catalog(spark, config)
    # The text vectors whole only for the MMR rule; else the towers read them a part at a time.
    text = catalogue_text(spark, config, loaded, catalog) if config.recommend.mmr_lambda < 1.0 else None
    histories = _recommend_histories(interactions, active, config, day, loaded.spec.history_length)
    towers = two_tower_scorer(spark, config, loaded, catalog, text)
    ranker: ranking.Ranker | None = learned_ranker(
        spark, config, loaded, catalog, features.without_bots(interactions), towers, text
    )
    rules = _list_rules(config, catalog, interactions, active, n_active, text, day)  # last: scales text in place
    if ranker is None:
        if config.recommend.ranker == "learned":
            log.info("recommend: model version %s has no ranker; lists keep the retrieval order", version)
        ranker = ranking.RetrievalRanker()
    mlflow.log_param("ranker_used", ranker.name)
    users = to_matrix_rows(histories, catalog.index_df)
    recs = ranking.recommend(users, towers, ranker, rules, catalog.item_ids, config.recommend.block_size)
    return recs, rules, ranker.name


def _publish(
    spark: SparkSession,
    config: Config,
    day: str,
    run_id: str,
    out: DataFrame,
    rules: ranking.ListRules,
    n_active: int,
    version: str,
) -> dict[str, float]:
    """The publish gate over the day's lists; their metrics to MLflow and ``run_metrics``; the day's
    partition replaced when the gate passes (or is off). When it fails and model ``version`` was
    promoted for this day, the champion alias goes back to the version it replaced.

    Raises:
        publish.PublishGateError: a check failed and ``recommend.gate.enabled``.
    """
    gate_config = config.recommend.gate
    champion = config.mlflow.champion_alias
    stats = publish.list_stats(out)
    previous_day, previous_rows = _previous_day(spark, config, day)
    gate = publish.check(stats, n_active, previous_rows, gate_config)
    fallback = out.where(F.col("reason").startswith("fallback:")).select("user_id").distinct().count()
    items = out.select("item_id").distinct().count()
    metrics = {
        "users": stats["users"],
        "rows": stats["rows"],
        "fallback_users": float(fallback),
        "active_users": gate.values["active_users"],
        "user_coverage": gate.values["user_coverage"],
        "catalog_coverage": float(items) / max(1, int(rules.allowed.sum())),
        **{f"gate.{name}": 1.0 if ok else 0.0 for name, ok in gate.checks.items()},
    }
    if "row_change" in gate.values:
        metrics["row_change"] = gate.values["row_change"]
    log_metrics(metrics)
    write_run_metrics(spark, config, "recommend", run_id, [day], [(day, m, v, None) for m, v in metrics.items()])
    plots.log_score_distribution(out)
    mlflow.set_tags({"publish_gate": "passed" if gate.passed else "failed"})
    if not gate.passed:
        served = f"the lists of {previous_day} stay served" if previous_day else "nothing is served yet"
        message = f"publish gate failed for {day} ({served}): " + "; ".join(gate.failures)
        if gate_config.enabled:
            restored = revert_promotion(config, version, day) if config.recommend.model_alias == champion else None
            if restored is not None:
                back = f"version {restored}" if restored != "none" else "no version (there was none before)"
                message += f"; @{champion} is back on {back}, not the version {version} promoted today"
                mlflow.set_tags({"promotion_reverted": version})
            raise publish.PublishGateError(message)
        log.warning("%s — published anyway (recommend.gate.enabled=false)", message)
    tables.ensure_contract(spark, config, RECOMMENDATIONS)
    tables.replace_partitions(out, config, RECOMMENDATIONS, f"ds = {tables.date_literal(day)}")
    return metrics


def _recommend_histories(
    interactions: DataFrame, active: DataFrame, config: Config, day: str, history_length: int
) -> DataFrame:
    """Active users' recent history (what the model reads: its ``history_length`` latest items) and
    seen items (what the seen rule removes: all history, or the last ``recommend.seen_window_days``)."""
    histories = features.to_user_histories(interactions, history_length).join(active, "user_id")
    window = config.recommend.seen_window_days
    if window <= 0:
        return histories
    recent = (
        features.filter_until(interactions, day, window)
        .groupBy("user_id")
        .agg(F.collect_set("item_id").alias("recent_seen"))
    )
    return (
        histories.join(recent, "user_id", "left")
        .withColumn("seen", F.coalesce("recent_seen", F.array().cast("array<string>")))
        .drop("recent_seen")
    )


def _list_rules(
    config: Config,
    catalog: Catalog,
    interactions: DataFrame,
    active: DataFrame,
    n_active: int,
    text: np.ndarray | None,
    day: str,
) -> ranking.ListRules:
    """The business rules as arrays over the catalogue; a rule whose catalogue field is absent is
    skipped, and the log says so. ``text``: the catalogue's text vectors (for the MMR rule; None when it
    is off), scaled to unit length in place."""
    rc = config.recommend
    allowed = catalog.eligible.copy()
    if not catalog.has_in_stock:
        log.info("rule out_of_stock skipped: no item of the catalogue has an in_stock field")
    excluded = _excluded_items(config)
    if excluded:
        hits = np.array([item in excluded for item in catalog.item_ids], dtype=bool)
        allowed &= ~hits
        log.info("rule exclusion_list: %d listed items, %d in the catalogue", len(excluded), int(hits.sum()))
    categories = ranking.category_codes(catalog.categories or [])
    if categories is None and (rc.max_per_category > 0 or rc.fallback_segment == "category"):
        log.info("rule max_per_category / category fallback segment skipped: no item of the catalogue has a category")
    vectors = None
    if rc.mmr_lambda < 1.0 and text is not None:
        unit, directed = unit_rows(text)
        if not directed.any():
            log.info("rule mmr_diversity skipped: no item has a text embedding")
        else:
            vectors = unit
    people = features.without_bots(features.filter_until(interactions, day, rc.active_days)).where(F.col("weight") > 0)
    counts = (  # Arrow, not a Row an item
        people.join(active, "user_id")
        .groupBy("item_id")
        .agg(F.countDistinct("user_id").alias("n"))
        .join(catalog.index_df, "item_id")
        .select(F.col("row").cast("long"), F.col("n").cast("double"))
        .toArrow()
    )
    popularity = np.zeros(catalog.size, dtype=np.float64)
    popularity[counts.column("row").to_numpy()] = counts.column("n").to_numpy() / max(1, n_active)
    return ranking.ListRules(
        k=rc.k,
        candidates=rc.candidates,
        allowed=allowed,
        popularity=popularity,
        categories=categories,
        max_per_category=rc.max_per_category,
        item_vectors=vectors,
        mmr_lambda=rc.mmr_lambda,
        fallback_segment=rc.fallback_segment,
    )


def _excluded_items(config: Config) -> set[str]:
    """``recommend.exclude_items`` and the ids in ``recommend.exclude_file`` (one per line, # comments)."""
    items = {i for i in config.recommend.exclude_items if i}
    path = config.recommend.exclude_file
    if path:
        if not Path(path).is_file():
            raise UserError(f"recommend.exclude_file {path} does not exist")
        for line in Path(path).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                items.add(line)
    return items


def _previous_day(spark: SparkSession, config: Config, day: str) -> tuple[str | None, float | None]:
    """The latest day before ``day`` in ``recommendations`` and its row count."""
    if not tables.table_exists(spark, config, RECOMMENDATIONS):
        return None, None
    earlier = tables.read_table(spark, config, RECOMMENDATIONS).where(F.col("ds") < F.to_date(F.lit(day)))
    latest = earlier.agg(F.max("ds")).collect()[0][0]
    if latest is None:
        return None, None
    return str(latest), float(earlier.where(F.col("ds") == F.lit(latest)).count())
