"""Clean stage transforms: raw landing lines into interactions, items and quarantine rows.

Every raw event line ends in exactly one place: a clean interaction, a counted duplicate, or a
quarantine row whose ``reason`` is one of ``schemas.REASONS``. ``reconcile`` checks the sums.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkrec.config import CleanConfig
from sparkrec.schemas import (
    INTERACTIONS_SCHEMA,
    ITEMS_SCHEMA,
    QUARANTINE_SCHEMA,
    RAW_EVENT_FIELDS,
    RAW_EVENT_SCHEMA,
    RAW_ITEM_SCHEMA,
    REASONS,
    require_columns,
)

CORRUPT = "_corrupt_record"
JSON_OPTIONS = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT}
# Event types whose value is a quantity and must be positive.
QUANTITY_EVENTS = ("cart", "purchase", "return")
COUNT_METRICS = ("raw_rows", "clean_rows", "duplicate_rows", "quarantined_rows")
# Bot limits (events an hour) from which the busy users join broadcast: a bot then has 100 events or
# more, so bots are at most 1 % of the events.
BROADCAST_BOTS_FROM = 99


class ReconciliationError(RuntimeError):
    """Row counts of a clean run do not add up; the day is not written."""


class CleanRefusedError(RuntimeError):
    """A clean run would replace a day with nothing, or with mostly quarantine; nothing is written."""


@dataclass(frozen=True)
class CleanResult:
    interactions: DataFrame
    quarantine: DataFrame
    # One row per (source, metric): source null for the run's total, else the file name.
    counts: DataFrame
    # Every raw row with its outcome; the frames above derive from it.
    rows: DataFrame
    # The deduplicated rows, read twice by ``rows`` (the bot flag's aggregate, then the rows
    # themselves), and the busy users: ``persist`` parses the landing files once for every frame above.
    cache_points: tuple[DataFrame, ...]

    def persist(self, level: StorageLevel = StorageLevel.MEMORY_AND_DISK) -> CleanResult:
        for df in self.cache_points:
            df.persist(level)
        return self

    def unpersist(self) -> None:
        for df in self.cache_points:
            df.unpersist()


def parse_json_lines(lines_df: DataFrame, schema: T.StructType) -> DataFrame:
    """Parse text lines (columns ``value``, ``source_file``, ``ds``) into ``j`` plus ``malformed``.

    A line is malformed when it is blank, not a JSON object, or not valid JSON.
    """
    require_columns(lines_df, ["value", "source_file", "ds"], "parse_json_lines")
    with_corrupt = T.StructType(schema.fields + [T.StructField(CORRUPT, T.StringType())])
    parsed = lines_df.withColumn("j", F.from_json("value", with_corrupt, JSON_OPTIONS))
    malformed = F.col("j").isNull() | F.col(f"j.{CORRUPT}").isNotNull() | ~F.trim("value").startswith("{")
    return parsed.withColumn("malformed", malformed)


def parse_timestamp(ts: Column) -> Column:
    """ISO-8601 (``T`` or space, zone optional: none means UTC) or epoch seconds, milliseconds,
    microseconds or nanoseconds (told apart by magnitude)."""
    text = F.trim(ts)
    number = text.try_cast("double")
    is_epoch = text.rlike(r"^[0-9]{9,19}(\.[0-9]+)?$")
    from_epoch = (
        F.when(number >= F.lit(1e17), F.timestamp_micros((number / 1000).cast("long")))
        .when(number >= F.lit(1e14), F.timestamp_micros(number.cast("long")))
        .when(number >= F.lit(1e11), F.timestamp_millis(number.cast("long")))
        .otherwise(F.timestamp_seconds(number))
    )
    return F.when(is_epoch, from_epoch).otherwise(F.try_to_timestamp(text))


def classify_events(lines_df: DataFrame, config: CleanConfig, known_items_df: DataFrame | None = None) -> DataFrame:
    """Parse raw event records and give each its first quarantine reason (null when clean).

    Args:
        lines_df: ``value`` (the raw record), ``source_file``, ``ds``.
        config: the cleaning rules.
        known_items_df: ``item_id`` of every item in the catalog; None skips the unknown_item rule.
    """
    fields = _event_fields(lines_df)
    if known_items_df is not None and config.require_known_items:
        known = known_items_df.select("item_id").distinct().withColumn("known_item", F.lit(True))
        fields = fields.join(known, "item_id", "left")
    else:
        fields = fields.withColumn("known_item", F.lit(True))
    reason = _first_reason(config)
    weights = F.create_map(*[x for k, v in config.event_weights.items() for x in (F.lit(k), F.lit(float(v)))])
    return fields.select(
        "raw",
        "source_file",
        "ds",
        reason.alias("reason"),
        "unknown_fields",
        "given_event_id",
        "user_id",
        "item_id",
        "event_type",
        "value",
        F.coalesce(weights[F.col("event_type")], F.lit(1.0)).alias("weight"),
        "event_ts",
        "session_id",
        "linked_event_id",
        "price_text",
    )


def _event_fields(lines_df: DataFrame) -> DataFrame:
    """The raw records parsed into the event fields, as text or typed where the rules need them."""
    parsed = _parse_event_lines(lines_df)
    j = {name: F.nullif(F.trim(F.col(f"j.{name}")), F.lit("")) for name in RAW_EVENT_SCHEMA.fieldNames()}
    return parsed.select(
        F.col("value").alias("raw"),
        "source_file",
        "ds",
        "malformed",
        _unknown_fields().alias("unknown_fields"),
        j["event_id"].alias("given_event_id"),
        j["user_id"].alias("user_id"),
        j["item_id"].alias("item_id"),
        F.lower(j["event_type"]).alias("event_type"),
        j["value"].alias("value_text"),
        j["value"].try_cast("double").alias("value"),
        parse_timestamp(F.col("j.ts")).alias("event_ts"),
        j["session_id"].alias("session_id"),
        j["linked_event_id"].alias("linked_event_id"),
        F.get_json_object(j["context"], "$.price").alias("price_text"),
    )


def _parse_event_lines(lines_df: DataFrame) -> DataFrame:
    """``parse_json_lines`` for event records, with ``keys`` (every key of the line), parsing most
    lines once: as a map of each key to its value's text, which gives both the contract's fields and
    the other keys.

    The map is used when it holds exactly the contract's fields that have a value, each once. Other
    lines are parsed field by field, as before: lines that are not a JSON object, lines with a key
    given twice (the map keeps the first value, JSON readers the last), and lines with other keys or
    null values, which the rest of the stage reads no differently.
    """
    require_columns(lines_df, ["value", "source_file", "ds"], "_parse_event_lines")
    mapped = lines_df.withColumn("m", F.from_json("value", "map<string,string>"))
    m = F.col("m")
    exact = m.isNotNull() & (F.size(m) == _fields_with_value(lambda n: m[n]))
    from_map = F.struct(*[m[n].alias(n) for n in RAW_EVENT_FIELDS], F.lit(None).cast("string").alias(CORRUPT))
    with_corrupt = T.StructType(RAW_EVENT_SCHEMA.fields + [T.StructField(CORRUPT, T.StringType())])
    j = F.when(exact, from_map).otherwise(F.from_json("value", with_corrupt, JSON_OPTIONS))
    keys = F.when(m.isNotNull(), F.map_keys(m)).otherwise(F.json_object_keys("value"))
    parsed = mapped.select("value", "source_file", "ds", j.alias("j"), keys.alias("keys"))
    malformed = F.col("j").isNull() | F.col(f"j.{CORRUPT}").isNotNull() | ~F.trim("value").startswith("{")
    return parsed.withColumn("malformed", malformed)


def _unknown_fields() -> Column:
    """Fields outside the contract, dropped but counted per file (schema drift shows in run_metrics);
    null when there are none.

    A line has no others when it has as many keys as contract fields with a value: every such field
    is one of its keys (names match exactly). Only the other lines, a few, compare names.
    """
    keys = F.col("keys")
    others = F.array_except(keys, F.array(*[F.lit(n) for n in RAW_EVENT_FIELDS]))
    return F.when(F.size(keys) > _fields_with_value(lambda n: F.col(f"j.{n}")), F.when(F.size(others) > 0, others))


def _fields_with_value(field: Callable[[str], Column]) -> Column:
    """How many of the contract's event fields have a value (``field``: a field by name)."""
    return sum((field(n).isNotNull().cast("int") for n in RAW_EVENT_FIELDS), F.lit(0))


def _first_reason(config: CleanConfig) -> Column:
    """The first rule (in ``schemas.REASONS`` order) an event breaks; null when it breaks none."""
    day_start = F.col("ds").cast("timestamp")
    future_limit = day_start + F.make_interval(hours=F.lit(24 + config.future_tolerance_hours))
    late_limit = day_start - F.make_interval(days=F.lit(config.late_days))
    value = F.col("value")
    bad_value = (F.col("value_text").isNotNull() & value.isNull()) | F.isnan(value) | (F.abs(value) == float("inf"))
    bad_quantity = F.col("event_type").isin(*QUANTITY_EVENTS) & value.isNotNull() & (value <= 0)
    price = F.col("price_text").try_cast("double")
    bad_price = F.col("price_text").isNotNull() & (price.isNull() | F.isnan(price) | (price <= 0))
    non_product = F.col("item_id").rlike(config.non_product_items) if config.non_product_items else F.lit(False)
    event_ts = F.col("event_ts")
    rules: list[tuple[str, Column]] = [
        ("malformed_record", F.col("malformed")),
        ("missing_user", F.col("user_id").isNull()),
        ("missing_item", F.col("item_id").isNull()),
        ("unknown_event_type", F.col("event_type").isNull() | ~F.col("event_type").isin(*config.event_types)),
        ("bad_timestamp", event_ts.isNull()),
        ("future_timestamp", event_ts >= future_limit),
        ("too_late", (event_ts < late_limit) if config.late_days > 0 else F.lit(False)),
        ("value_out_of_range", bad_value | bad_quantity),
        ("non_product", non_product),
        ("bad_price", bad_price if config.require_positive_price else F.lit(False)),
        ("unknown_item", F.col("known_item").isNull()),
    ]
    assert [name for name, _ in rules] == list(REASONS), "rules and schemas.REASONS must agree"
    reason = F.lit(None).cast("string")
    for name, condition in reversed(rules):
        reason = F.when(F.coalesce(condition, F.lit(False)), F.lit(name)).otherwise(reason)
    return reason


def with_event_id(df: DataFrame) -> DataFrame:
    """``event_id`` of each clean row (``reason`` null): the given one, else a hash of user, item,
    type, time and value; null for quarantined rows."""
    fingerprint = F.concat_ws(
        "\u241f",
        "user_id",
        "item_id",
        "event_type",
        F.date_format("event_ts", "yyyy-MM-dd'T'HH:mm:ss.SSSSSS"),
        F.coalesce(F.col("value").cast("string"), F.lit("")),
    )
    event_id = F.coalesce("given_event_id", F.sha2(fingerprint, 256))
    return df.withColumn("event_id", F.when(F.col("reason").isNull(), event_id))


def clean_events(lines_df: DataFrame, config: CleanConfig, known_items_df: DataFrame | None = None) -> CleanResult:
    """Raw event records of one or more landing days into interactions, quarantine and counts.

    Args:
        lines_df: ``value`` (the raw record), ``source_file``, ``ds`` (landing day, date).
        config: the cleaning rules.
        known_items_df: ``item_id`` of the item catalog; None when there is none (no unknown_item rule).
    """
    classified = with_event_id(classify_events(lines_df, config, known_items_df))
    is_clean = F.col("reason").isNull()
    # Copies of an event: the first by source file, then by a 64-bit hash of the line, is kept. The
    # line and price text travel on only for quarantined rows, which keep them in their detail: clean
    # rows shuffle without them.
    # The window leads with a hash of the event id: rows sort on that 64-bit prefix, not on strings.
    first = Window.partitionBy(F.xxhash64("event_id"), "ds", "event_id").orderBy("source_file", "line_hash")
    ranked = (
        classified.withColumn("line_hash", F.xxhash64("raw"))
        .withColumn("raw", F.when(~is_clean, F.col("raw")))
        .withColumn("price_text", F.when(~is_clean, F.col("price_text")))
        .drop("given_event_id")
        .withColumn("copy", F.when(is_clean, F.row_number().over(first)))
        .drop("line_hash")
    )
    # Every raw row once, with its outcome: the three outputs below are filters of this one frame,
    # so a caller that calls ``persist`` parses the landing files once.
    outcome = (
        F.when(~is_clean, F.lit("quarantined_rows"))
        .when(F.col("copy") > 1, F.lit("duplicate_rows"))
        .otherwise(F.lit("clean_rows"))
    )
    busy = busy_users(ranked, config.bot_max_events_per_hour)
    rows = with_bot_flag(ranked, busy, config.bot_max_events_per_hour).withColumn("outcome", outcome)
    interactions = rows.where(F.col("outcome") == "clean_rows").select(
        "event_id",
        "user_id",
        "item_id",
        "event_type",
        "value",
        "weight",
        "event_ts",
        F.to_date("event_ts").alias("event_date"),
        "session_id",
        "is_bot",
        "linked_event_id",
        "source_file",
        "ds",
    )
    quarantine = rows.where(F.col("outcome") == "quarantined_rows").select(
        "ds",
        "source_file",
        "reason",
        "raw",
        _detail().alias("detail"),
    )
    counts = _counts(rows.select("ds", "source_file", "reason", "outcome", "is_bot", "unknown_fields"))
    return CleanResult(
        interactions=interactions.select([f.name for f in INTERACTIONS_SCHEMA.fields]),
        quarantine=quarantine.select([f.name for f in QUARANTINE_SCHEMA.fields]),
        counts=counts,
        rows=rows,
        cache_points=(ranked, busy),
    )


def busy_users(ranked_df: DataFrame, max_per_hour: int) -> DataFrame:
    """``ds``, ``user_id`` of users with more than ``max_per_hour`` clean events (first copies,
    ``copy`` 1) in some clock hour of the landing day: the bots. Nobody when the rule is off (0).

    A bot needs ``max_per_hour`` + 1 events, so there are at most events / (``max_per_hour`` + 1).
    """
    if max_per_hour <= 0:
        return ranked_df.sparkSession.createDataFrame([], "ds date, user_id string")
    # Clock hours in UTC (the session time zone), as whole hours since the epoch: cheaper than date_trunc.
    hour = F.floor(F.unix_seconds("event_ts") / 3600)
    return (
        ranked_df.where(F.col("copy") == 1)
        .groupBy("ds", "user_id", hour.alias("hour"))
        .agg(F.count(F.lit(1)).alias("events"))
        .where(F.col("events") > max_per_hour)
        .select("ds", "user_id")
        .distinct()
    )


def with_bot_flag(ranked_df: DataFrame, busy: DataFrame, max_per_hour: int) -> DataFrame:
    """``is_bot``: the row is a clean one (``copy`` set) of a busy user (``busy_users`` with the same
    ``max_per_hour``) on that day; every clean row of a bot's day is flagged.

    The busy users join broadcast when the rule bounds them to at most 1 % of the events
    (``max_per_hour`` >= ``BROADCAST_BOTS_FROM``); under a lower limit they could be many, so the
    join is left to Spark, which broadcasts them only when it finds them small.
    """
    flagged = busy.withColumn("busy", F.lit(True))
    if max_per_hour >= BROADCAST_BOTS_FROM:
        flagged = F.broadcast(flagged)
    return (
        ranked_df.join(flagged, ["ds", "user_id"], "left")
        .withColumn("is_bot", F.col("copy").isNotNull() & F.coalesce("busy", F.lit(False)))
        .drop("busy")
    )


def _detail() -> Column:
    return (
        F.when(
            F.col("reason") == "unknown_event_type",
            F.concat(F.lit("event_type="), F.coalesce("event_type", F.lit("null"))),
        )
        .when(
            F.col("reason") == "value_out_of_range",
            F.concat(F.lit("value="), F.coalesce(F.col("value").cast("string"), F.lit("not a number"))),
        )
        .when(
            F.col("reason").isin("future_timestamp", "too_late"),
            F.concat(F.lit("event_ts="), F.col("event_ts").cast("string")),
        )
        .when(F.col("reason").isin("non_product", "unknown_item"), F.concat(F.lit("item_id="), F.col("item_id")))
        .when(F.col("reason") == "bad_price", F.concat(F.lit("price="), F.col("price_text")))
        .otherwise(F.lit(None))
    )


def _counts(per_row: DataFrame) -> DataFrame:
    """Counts per day and source file, plus per-day totals (source null), quarantine by reason and
    fields outside the contract (``unknown_field.<name>``: rows carrying it, per file and in total)."""
    outcomes = per_row.groupBy("ds", "source_file").agg(
        F.count(F.lit(1)).alias("raw_rows"),
        *[F.count(F.when(F.col("outcome") == m, 1)).alias(m) for m in COUNT_METRICS[1:]],
        # Bots' clean rows: a share of clean_rows, outside the reconciliation sum.
        F.count(F.when((F.col("outcome") == "clean_rows") & F.col("is_bot"), 1)).alias("bot_rows"),
    )
    metrics = (*COUNT_METRICS, "bot_rows")
    stack = ", ".join(f"'{m}', CAST({m} AS DOUBLE)" for m in metrics)
    per_file = outcomes.select(
        "ds",
        F.col("source_file").alias("source"),
        F.expr(f"stack({len(metrics)}, {stack}) AS (metric, value)"),
    )
    totals = (
        per_file.groupBy("ds", "metric")
        .agg(F.sum("value").alias("value"))
        .withColumn("source", F.lit(None).cast("string"))
    )
    reasons = (
        per_row.where(F.col("reason").isNotNull())
        .groupBy("ds", "reason")
        .agg(F.count(F.lit(1)).cast("double").alias("value"))
        .select("ds", F.concat(F.lit("quarantined_rows."), F.col("reason")).alias("metric"), "value")
        .withColumn("source", F.lit(None).cast("string"))
    )
    unknown_per_file = (
        per_row.select("ds", "source_file", F.explode("unknown_fields").alias("field"))
        .groupBy("ds", "source_file", "field")
        .agg(F.count(F.lit(1)).cast("double").alias("value"))
        .select(
            "ds",
            F.col("source_file").alias("source"),
            F.concat(F.lit("unknown_field."), "field").alias("metric"),
            "value",
        )
    )
    unknown_totals = (
        unknown_per_file.groupBy("ds", "metric")
        .agg(F.sum("value").alias("value"))
        .withColumn("source", F.lit(None).cast("string"))
    )
    return per_file.unionByName(totals).unionByName(reasons).unionByName(unknown_per_file).unionByName(unknown_totals)


def reconcile(counts: list[dict[str, object]]) -> None:
    """Check ``raw_rows = clean_rows + duplicate_rows + quarantined_rows`` for every day and file.

    Raises:
        ReconciliationError: naming the day, file and the four numbers.
    """
    table: dict[tuple[object, object], dict[str, float]] = {}
    for row in counts:
        if str(row["metric"]) in COUNT_METRICS:
            table.setdefault((row["ds"], row["source"]), {})[str(row["metric"])] = float(row["value"])  # type: ignore[arg-type]
    for (ds, source), numbers in sorted(table.items(), key=str):
        raw, clean, dup, quarantined = (numbers.get(m, 0.0) for m in COUNT_METRICS)
        if raw != clean + dup + quarantined:
            raise ReconciliationError(
                f"clean {ds} {source or 'total'}: raw_rows={raw:.0f} but clean_rows={clean:.0f} + "
                f"duplicate_rows={dup:.0f} + quarantined_rows={quarantined:.0f} = {clean + dup + quarantined:.0f}"
            )


def clean_items(lines_df: DataFrame, config: CleanConfig) -> tuple[DataFrame, DataFrame]:
    """Item catalog lines into the newest row per item, and quarantine rows for the unusable ones.

    ``content_hash`` covers the text fields only (title, description, category, tags): the embed
    stage re-embeds an item exactly when its text changes.
    """
    parsed = parse_json_lines(lines_df, RAW_ITEM_SCHEMA)
    j = {name: F.nullif(F.trim(F.col(f"j.{name}")), F.lit("")) for name in RAW_ITEM_SCHEMA.fieldNames()}
    reason = F.when(F.col("malformed"), F.lit("malformed_record")).when(j["item_id"].isNull(), F.lit("missing_item"))
    rows = parsed.select(
        F.col("value").alias("raw"),
        "source_file",
        "ds",
        reason.alias("reason"),
        j["item_id"].alias("item_id"),
        j["title"].alias("title"),
        j["description"].alias("description"),
        j["category"].alias("category"),
        j["tags"].alias("tags"),
        j["price"].try_cast("double").alias("price"),
        F.coalesce(parse_timestamp(F.col("j.updated_at")), F.col("ds").cast("timestamp")).alias("updated_at"),
        _boolean(j["active"]).alias("active"),
        _boolean(j["in_stock"]).alias("in_stock"),
    )
    non_product = F.col("item_id").rlike(config.non_product_items) if config.non_product_items else F.lit(False)
    newest = Window.partitionBy("item_id").orderBy(F.desc("updated_at"), F.desc("ds"), F.desc("raw"))
    text = F.concat_ws("\u241f", *[F.coalesce(c, F.lit("")) for c in ("title", "description", "category", "tags")])
    items = (
        rows.where(F.col("reason").isNull())
        .withColumn("n", F.row_number().over(newest))
        .where("n = 1")
        .withColumn("active", F.coalesce("active", F.lit(True)) & ~non_product)
        .withColumn("content_hash", F.sha2(text, 256))
        .select([f.name for f in ITEMS_SCHEMA.fields])
    )
    quarantine = rows.where(F.col("reason").isNotNull()).select(
        "ds", "source_file", "reason", "raw", F.lit("item catalog").alias("detail")
    )
    return items, quarantine


def _boolean(text: Column) -> Column:
    lowered = F.lower(text)
    return F.when(lowered.isin("true", "1", "yes"), True).when(lowered.isin("false", "0", "no"), False)


def refusal(counts: list[dict[str, object]], days: list[str], config: CleanConfig) -> dict[str, str]:
    """Why each day of a run must not be replaced (no clean rows, or a quarantine share above
    ``config.max_quarantine_share``), by day; empty when every day may be, or ``config.allow_empty``."""
    if config.allow_empty:
        return {}
    totals: dict[str, dict[str, float]] = {d: {} for d in days}
    for row in counts:
        if row["source"] is None and str(row["ds"]) in totals:
            totals[str(row["ds"])][str(row["metric"])] = float(row["value"])  # type: ignore[arg-type]
    reasons: dict[str, str] = {}
    for day, numbers in totals.items():
        raw, clean_rows, quarantined = (numbers.get(m, 0.0) for m in ("raw_rows", "clean_rows", "quarantined_rows"))
        top = sorted(
            ((v, m.split(".", 1)[1]) for m, v in numbers.items() if m.startswith("quarantined_rows.")), reverse=True
        )
        why = ", ".join(f"{reason} {n:.0f}" for n, reason in top[:3])
        if raw == 0:
            reasons[day] = "its landing files hold no rows"
        elif clean_rows == 0:
            reasons[day] = f"none of its {raw:.0f} rows is clean ({why or 'all duplicates'})"
        elif quarantined / raw > config.max_quarantine_share:
            reasons[day] = (
                f"{quarantined:.0f} of its {raw:.0f} rows are quarantined ({why}), more than "
                f"clean.max_quarantine_share {config.max_quarantine_share:g}"
            )
    return reasons
