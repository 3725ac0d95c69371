"""Delta Lake reads and writes, all safe to re-run: the only module that touches table paths."""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkrec.config import Config
from sparkrec.schemas import PARTITIONS, SCHEMAS


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


def table_version(spark: SparkSession, config: Config, table: str) -> int | None:
    """Current Delta version of a table, or None when it does not exist."""
    from delta.tables import DeltaTable

    if not table_exists(spark, config, table):
        return None
    row = DeltaTable.forPath(spark, config.table_path(table)).history(1).select("version").first()
    return int(row[0]) if row else None


def replace_partitions(
    df: DataFrame, config: Config, table: str, where: str, *, comment: str | None = None
) -> None:
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


def date_literal(day: str) -> str:
    """SQL literal for a YYYY-MM-DD date in a replaceWhere predicate."""
    return f"DATE'{day}'"
