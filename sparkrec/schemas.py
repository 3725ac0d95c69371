"""One place for table names, column names and schemas (DESIGN.md, "Tables")."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import types as T

# Table names; each lives at <lakehouse.root>/<name> and is registered as <catalog.database>.<name>.
INTERACTIONS = "interactions"
QUARANTINE = "quarantine"
ITEMS = "items"
ITEM_EMBEDDINGS = "item_embeddings"
RECOMMENDATIONS = "recommendations"
RUN_METRICS = "run_metrics"
TABLES = (INTERACTIONS, QUARANTINE, ITEMS, ITEM_EMBEDDINGS, RECOMMENDATIONS, RUN_METRICS)

# Raw event fields of the landing contract; every one is read as text first.
# ``linked_event_id``: for a return, the event_id of the purchase it reverses (when known).
RAW_EVENT_FIELDS = (
    "event_id",
    "user_id",
    "item_id",
    "event_type",
    "ts",
    "value",
    "session_id",
    "context",
    "linked_event_id",
)
# A CSV header or Parquet schema without one of these fails the run (JSON Lines: judged per line).
REQUIRED_EVENT_FIELDS = ("user_id", "item_id", "event_type", "ts")
RAW_EVENT_SCHEMA = T.StructType([T.StructField(name, T.StringType()) for name in RAW_EVENT_FIELDS])
RAW_ITEM_FIELDS = (
    "item_id",
    "title",
    "description",
    "category",
    "tags",
    "price",
    "updated_at",
    "active",
    "in_stock",
)
RAW_ITEM_SCHEMA = T.StructType([T.StructField(name, T.StringType()) for name in RAW_ITEM_FIELDS])
REQUIRED_ITEM_FIELDS = ("item_id",)

INTERACTIONS_SCHEMA = T.StructType(
    [
        T.StructField("event_id", T.StringType(), False),
        T.StructField("user_id", T.StringType(), False),
        T.StructField("item_id", T.StringType(), False),
        T.StructField("event_type", T.StringType(), False),
        T.StructField("value", T.DoubleType()),
        T.StructField("weight", T.DoubleType(), False),
        T.StructField("event_ts", T.TimestampType(), False),
        T.StructField("event_date", T.DateType(), False),
        T.StructField("session_id", T.StringType()),
        T.StructField("is_bot", T.BooleanType(), False),
        T.StructField("linked_event_id", T.StringType()),
        T.StructField("source_file", T.StringType(), False),
        T.StructField("ds", T.DateType(), False),
    ]
)

QUARANTINE_SCHEMA = T.StructType(
    [
        T.StructField("ds", T.DateType(), False),
        T.StructField("source_file", T.StringType()),
        T.StructField("reason", T.StringType(), False),
        T.StructField("raw", T.StringType()),
        T.StructField("detail", T.StringType()),
    ]
)

ITEMS_SCHEMA = T.StructType(
    [
        T.StructField("item_id", T.StringType(), False),
        T.StructField("title", T.StringType()),
        T.StructField("description", T.StringType()),
        T.StructField("category", T.StringType()),
        T.StructField("tags", T.StringType()),
        T.StructField("price", T.DoubleType()),
        T.StructField("active", T.BooleanType(), False),
        T.StructField("in_stock", T.BooleanType()),
        T.StructField("content_hash", T.StringType(), False),
        T.StructField("updated_at", T.TimestampType()),
    ]
)

ITEM_EMBEDDINGS_SCHEMA = T.StructType(
    [
        T.StructField("item_id", T.StringType(), False),
        T.StructField("content_hash", T.StringType(), False),
        T.StructField("model", T.StringType(), False),
        T.StructField("dim", T.IntegerType(), False),
        T.StructField("embedding", T.ArrayType(T.FloatType())),
        T.StructField("has_text", T.BooleanType(), False),
        T.StructField("embedded_at", T.TimestampType(), False),
    ]
)

RECOMMENDATIONS_SCHEMA = T.StructType(
    [
        T.StructField("ds", T.DateType(), False),
        T.StructField("user_id", T.StringType(), False),
        T.StructField("rank", T.IntegerType(), False),
        T.StructField("item_id", T.StringType(), False),
        T.StructField("score", T.DoubleType(), False),
        T.StructField("model_version", T.StringType()),
        T.StructField("run_id", T.StringType()),
        T.StructField("reason", T.StringType()),
        T.StructField("generated_at", T.TimestampType(), False),
    ]
)

RUN_METRICS_SCHEMA = T.StructType(
    [
        T.StructField("ds", T.DateType(), False),
        T.StructField("run_id", T.StringType()),
        T.StructField("stage", T.StringType(), False),
        T.StructField("metric", T.StringType(), False),
        T.StructField("value", T.DoubleType()),
        T.StructField("source", T.StringType()),
    ]
)

SCHEMAS = {
    INTERACTIONS: INTERACTIONS_SCHEMA,
    QUARANTINE: QUARANTINE_SCHEMA,
    ITEMS: ITEMS_SCHEMA,
    ITEM_EMBEDDINGS: ITEM_EMBEDDINGS_SCHEMA,
    RECOMMENDATIONS: RECOMMENDATIONS_SCHEMA,
    RUN_METRICS: RUN_METRICS_SCHEMA,
}
PARTITIONS = {INTERACTIONS: ["ds"], QUARANTINE: ["ds"], RECOMMENDATIONS: ["ds"], RUN_METRICS: ["ds"]}

# The contract downstream SQL reads: a table comment, column comments and table properties, set when
# the table is created (and added to a table created by an older release).
CONTRACT_VERSION = "1"
TABLE_COMMENTS = {
    RECOMMENDATIONS: "Top-k items per active user and day; ranks 1..k, min(k, eligible items) distinct items per "
    "user; one partition per ds, replaced atomically on re-run. Latest day: recommendations_latest.",
}
COLUMN_COMMENTS = {
    RECOMMENDATIONS: {
        "ds": "run date (YYYY-MM-DD): the day the lists are for; the partition column",
        "user_id": "user the list is for",
        "rank": "position in the list, 1 = first; 1..k without gaps",
        "item_id": "recommended item; never one the user interacted with (recommend.seen_window_days)",
        "score": "ranking-step score (higher is better; popularity share for fallback rows); rank order, not score "
        "order, is the list when diversity re-ranking is on",
        "model_version": "registered model version that produced the list",
        "run_id": "MLflow run of the recommend stage",
        "reason": "why: <model>:history=<item_id> (the user's history item closest to this one in the model's "
        "item space), or fallback:popular_in_category / fallback:popular for users without history; "
        "the part before ':' is the source",
        "generated_at": "UTC time the row was written",
    },
}
TABLE_PROPERTIES = {
    RECOMMENDATIONS: {
        "sparkrec.contract": f"{RECOMMENDATIONS}/v{CONTRACT_VERSION}",
        "sparkrec.grain": "one row per (ds, user_id, rank)",
        "delta.logRetentionDuration": "interval 30 days",
        "delta.deletedFileRetentionDuration": "interval 7 days",
    },
    # Per-file min/max statistics only on the columns reads filter by (time window, a user, an item):
    # statistics on every column cost a third of the write.
    INTERACTIONS: {"delta.dataSkippingStatsColumns": "event_date,event_ts,user_id,item_id"},
}
# Views every session defines next to the tables (name -> SQL over the registered database, {db}).
VIEWS = {
    "recommendations_latest": (
        "SELECT * FROM {db}.recommendations WHERE ds = (SELECT max(ds) FROM {db}.recommendations)"
    ),
}

# Quarantine reasons, in the order the clean stage tests them (the first that applies wins).
REASONS = {
    "malformed_record": (
        "not a JSON object (broken JSON, wrong types, blank line), "
        "or a CSV line that does not split into its header's columns"
    ),
    "missing_user": "no user_id",
    "missing_item": "no item_id",
    "unknown_event_type": "event_type outside clean.event_types",
    "bad_timestamp": "ts is neither ISO-8601 nor epoch seconds/milliseconds",
    "future_timestamp": "ts after the landing day plus clean.future_tolerance_hours",
    "too_late": "ts more than clean.late_days before the landing day",
    "value_out_of_range": "value is not a finite number, or a quantity (cart, purchase, return) is not positive",
    "non_product": "item_id matches clean.non_product_items (fees, postage)",
    "bad_price": "context.price is zero, negative or not a number (clean.require_positive_price)",
    "unknown_item": "item_id is in neither the items table nor the day's catalog (clean.require_known_items)",
}


class SchemaError(ValueError):
    """A DataFrame lacks columns a transform needs."""


def require_columns(df: DataFrame, columns: list[str] | tuple[str, ...], what: str) -> None:
    """Fail early, naming the missing columns, instead of deep inside a plan."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SchemaError(f"{what} needs column(s) {missing}; got {df.columns}")


def conform(df: DataFrame, schema: T.StructType) -> DataFrame:
    """Select and cast a frame's columns into a table's schema, in its order."""
    from pyspark.sql import functions as F

    require_columns(df, [f.name for f in schema.fields], "conform")
    return df.select([F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])
