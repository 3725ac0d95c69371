"""Delta Lake reads and writes, all safe to re-run: the only module that touches table paths."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkrec.config import Config, absolute_path
from sparkrec.errors import UserError
from sparkrec.schemas import (
    COLUMN_COMMENTS,
    PARTITIONS,
    RECOMMENDATIONS,
    SCHEMAS,
    TABLE_COMMENTS,
    TABLE_PROPERTIES,
)


class TableMissingError(RuntimeError):
    """A stage needs a table that an earlier stage has not written yet."""


def table_exists(spark: SparkSession, config: Config, table: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, config.table_path(table))


def read_table(spark: SparkSession, config: Config, table: str, *, required: bool = True) -> DataFrame:
    """Read a table by path; an absent table is an error, or an empty frame when not required."""
    if table_exists(spark, config, table):
        return spark.read.format("delta").load(config.table_path(table))
    if required:
        raise TableMissingError(
            f"table {table!r} does not exist at {config.table_path(table)}; run the stage that writes it first"
        )
    return spark.createDataFrame([], SCHEMAS[table])


def read_source(spark: SparkSession, where: str) -> DataFrame:
    """A table the project does not own: a Delta folder, Parquet (a file or folder) or a catalog table name."""
    from delta.tables import DeltaTable

    if "/" not in where and not where.endswith(".parquet"):
        if not spark.catalog.tableExists(where):
            raise TableMissingError(f"no table {where!r} in the catalog")
        return spark.table(where)
    path = absolute_path(where)
    if DeltaTable.isDeltaTable(spark, path):
        return spark.read.format("delta").load(path)
    try:
        return spark.read.parquet(path)
    except Exception as err:  # AnalysisException: path missing or not Parquet
        raise TableMissingError(
            f"cannot read {where!r} as a Delta table or Parquet: {str(err).splitlines()[0]}"
        ) from err


def table_version(spark: SparkSession, config: Config, table: str) -> int | None:
    """Current Delta version of a table, or None when it does not exist."""
    from delta.tables import DeltaTable

    if not table_exists(spark, config, table):
        return None
    row = DeltaTable.forPath(spark, config.table_path(table)).history(1).select("version").first()
    return int(row[0]) if row else None


def replace_partitions(df: DataFrame, config: Config, table: str, where: str, *, comment: str | None = None) -> None:
    """Atomically replace the rows matching ``where`` (e.g. one landing day) with ``df``.

    A re-run replaces exactly what the previous run of the same day wrote, so days never double,
    and a run killed part-way leaves the last committed version readable.
    """
    schema = SCHEMAS[table]
    writer = (
        df.select([F.col(f.name).cast(f.dataType) for f in schema.fields])
        .write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", where)
        # A column added to the table's schema (a new release) is added to the existing table.
        .option("mergeSchema", "true")
    )
    if comment:
        writer = writer.option("userMetadata", comment)
    partitions = PARTITIONS.get(table)
    if partitions:
        writer = writer.partitionBy(*partitions)
    writer.save(config.table_path(table))


def merge_upsert(
    spark: SparkSession,
    df: DataFrame,
    config: Config,
    table: str,
    keys: Sequence[str],
    *,
    update_condition: str | None = None,
) -> None:
    """MERGE ``df`` into a table on ``keys``: matched rows update (when the condition holds), new rows insert.

    The first write creates the table.
    """
    from delta.tables import DeltaTable

    schema = SCHEMAS[table]
    source = df.select([F.col(f.name).cast(f.dataType) for f in schema.fields])
    path = config.table_path(table)
    if not DeltaTable.isDeltaTable(spark, path):
        spark.createDataFrame([], schema).write.format("delta").mode("ignore").save(path)
    target = DeltaTable.forPath(spark, path)
    on = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    (
        target.alias("t")
        .merge(source.alias("s"), on)
        .whenMatchedUpdateAll(condition=update_condition)
        .whenNotMatchedInsertAll()
        .execute()
    )


def ensure_contract(spark: SparkSession, config: Config, table: str) -> None:
    """Create ``table`` with its comments, partitioning and properties, or add them to a table an older
    release created without (a schema change is never made here: writes merge new columns)."""
    from delta.tables import DeltaTable

    path = config.table_path(table)
    comments = COLUMN_COMMENTS.get(table, {})
    properties = table_properties(config, table)
    if not DeltaTable.isDeltaTable(spark, path):
        builder = DeltaTable.createIfNotExists(spark).location(path)
        for f in SCHEMAS[table].fields:
            builder = builder.addColumn(f.name, f.dataType, nullable=f.nullable, comment=comments.get(f.name))
        if PARTITIONS.get(table):
            builder = builder.partitionedBy(*PARTITIONS[table])
        for key, value in properties.items():
            builder = builder.property(key, value)
        if table in TABLE_COMMENTS:
            builder = builder.comment(TABLE_COMMENTS[table])
        builder.execute()
        return
    current = DeltaTable.forPath(spark, path).detail().select("properties").collect()[0][0] or {}
    if all(current.get(k) == v for k, v in properties.items()):
        return
    target = f"delta.`{path}`"
    settings = {**properties, **({"comment": TABLE_COMMENTS[table]} if table in TABLE_COMMENTS else {})}
    assignments = ", ".join(f"{_quote(k)} = {_quote(v)}" for k, v in settings.items())
    spark.sql(f"ALTER TABLE {target} SET TBLPROPERTIES ({assignments})")
    for column, comment in comments.items():
        spark.sql(f"ALTER TABLE {target} ALTER COLUMN `{column}` COMMENT {_quote(comment)}")


def table_properties(config: Config, table: str) -> dict[str, str]:
    """The Delta table properties ``table`` keeps: its contract's, and on ``recommendations`` the
    change data feed (``catalog.change_data_feed``), so ``table_changes`` lists a day's rows in and out."""
    properties = dict(TABLE_PROPERTIES.get(table, {}))
    if table == RECOMMENDATIONS:
        properties["delta.enableChangeDataFeed"] = str(config.catalog.change_data_feed).lower()
    return properties


def versions(spark: SparkSession, config: Config, table: str) -> list[int]:
    """Every version of a table still in its log, oldest first."""
    from delta.tables import DeltaTable

    if not table_exists(spark, config, table):
        raise TableMissingError(f"table {table!r} does not exist at {config.table_path(table)}")
    history = DeltaTable.forPath(spark, config.table_path(table)).history().select("version")
    return sorted(int(r[0]) for r in history.collect())


def rollback(spark: SparkSession, config: Config, table: str, version: int) -> dict[str, float]:
    """Restore ``table`` to ``version`` (Delta RESTORE: a new version whose content is the old one's).

    Raises:
        TableMissingError: no such table.
        ValueError: ``version`` is not in the table's log (or its files were vacuumed).
    """
    from delta.tables import DeltaTable
    from pyspark.errors import AnalysisException, IllegalArgumentException

    known = versions(spark, config, table)
    if version not in known:
        raise UserError(f"{table} has no version {version}; versions in its log: {known[0]}..{known[-1]}")
    if version == known[-1]:
        raise UserError(f"{table} is already at version {version}")
    try:
        metrics = DeltaTable.forPath(spark, config.table_path(table)).restoreToVersion(version).collect()[0].asDict()
    except (AnalysisException, IllegalArgumentException) as err:  # files removed by VACUUM
        raise UserError(f"cannot restore {table} to version {version}: {str(err).splitlines()[0]}") from err
    return {k: float(v) for k, v in metrics.items() if v is not None}


# Delta's own floor for VACUUM's retention (spark.databricks.delta.retentionDurationCheck).
DELTA_RETENTION_HOURS = 168


def maintain(
    spark: SparkSession,
    config: Config,
    table: str,
    retain_hours: int,
    zorder: Sequence[str] = (),
    *,
    force: bool = False,
) -> dict[str, float]:
    """Compact ``table`` (OPTIMIZE, Z-ordered by ``zorder`` when given), then VACUUM files older than
    ``retain_hours`` that no kept version needs. Below Delta's 168-hour safety limit only with
    ``force`` (the check is switched off for this call; a write still running could lose its files,
    and time travel past ``retain_hours`` is lost). Never while a run holds a day's lock."""
    from delta.tables import DeltaTable

    from sparkrec.locks import held_locks

    if not table_exists(spark, config, table):
        raise TableMissingError(f"table {table!r} does not exist at {config.table_path(table)}")
    if retain_hours < 0:
        raise UserError(f"retain hours must be >= 0, got {retain_hours}")
    if retain_hours < DELTA_RETENTION_HOURS and not force:
        raise UserError(
            f"VACUUM below {DELTA_RETENTION_HOURS} hours ({retain_hours}) can delete files a concurrent "
            "write or reader still needs; add --force if no other job uses the tables"
        )
    running = held_locks(config)
    if running:
        raise UserError(f"a run is writing ({'; '.join(running)}): maintain after it finishes")
    delta = DeltaTable.forPath(spark, config.table_path(table))
    optimizer = delta.optimize()
    result = optimizer.executeZOrderBy(*zorder) if zorder else optimizer.executeCompaction()
    stats = result.select("metrics.numFilesAdded", "metrics.numFilesRemoved").collect()[0]
    check_key = "spark.databricks.delta.retentionDurationCheck.enabled"
    before = spark.conf.get(check_key, "true") or "true"
    if retain_hours < DELTA_RETENTION_HOURS:
        spark.conf.set(check_key, "false")
    try:
        delta.vacuum(float(retain_hours))
    finally:
        spark.conf.set(check_key, before)
    files = spark.read.format("delta").load(config.table_path(table)).inputFiles()
    return {
        "files_added": float(stats[0]),
        "files_removed": float(stats[1]),
        "files_after": float(len(files)),
        "version": float(table_version(spark, config, table) or 0),
    }


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def date_literal(day: str) -> str:
    """SQL literal for a YYYY-MM-DD date in a replaceWhere predicate."""
    return f"DATE'{day}'"


def in_days(days: Iterable[str]) -> str:
    """The predicate ``ds IN (DATE'…', …)`` over landing days, for replaceWhere and filters."""
    return f"ds IN ({', '.join(date_literal(d) for d in days)})"
