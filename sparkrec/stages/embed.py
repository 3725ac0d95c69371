"""The embed stage: BERT vectors of new or changed items into ``item_embeddings``."""

from __future__ import annotations

import logging
from typing import Any

from pyspark.sql import SparkSession

from sparkrec import embed, tables
from sparkrec.config import Config
from sparkrec.schemas import ITEM_EMBEDDINGS, ITEMS
from sparkrec.stages.common import check_date, write_run_metrics
from sparkrec.tracking import log_metrics, log_params, report_counts, stage_run

log = logging.getLogger("sparkrec")


def run_embed(spark: SparkSession, config: Config, day: str) -> dict[str, Any]:
    """Embed new or changed items' text into ``item_embeddings`` (MERGE)."""
    check_date(day)
    versions = {
        ITEMS: tables.table_version(spark, config, ITEMS),
        ITEM_EMBEDDINGS: tables.table_version(spark, config, ITEM_EMBEDDINGS),
    }
    with stage_run(config, "embed", day, versions) as run_id:
        items = tables.read_table(spark, config, ITEMS)
        stored = tables.read_table(spark, config, ITEM_EMBEDDINGS, required=False)
        model = embed.model_name(config.embed)
        todo = embed.select_items_to_embed(items, stored, model).cache()
        n_todo, n_items = todo.count(), items.count()
        if n_todo:
            partitions = max(2, spark.sparkContext.defaultParallelism)
            vectors = embed.to_item_embeddings(todo, config.embed, model, partitions)
            tables.merge_upsert(spark, vectors, config, ITEM_EMBEDDINGS, ["item_id"])
        todo.unpersist()
        metrics = {"embedded_items": float(n_todo), "skipped_unchanged_items": float(n_items - n_todo)}
        log_metrics(metrics)
        log_params({"embed_model": model})
        write_run_metrics(spark, config, "embed", run_id, [day], [(day, k, v, None) for k, v in metrics.items()])
        log.info("embed %s: %d embedded, %d unchanged (%s)", day, n_todo, n_items - n_todo, model)
        report_counts(run_id, items=n_items, embedded=n_todo)
        return {"run_id": run_id, **metrics}
