"""The landing zone: each day's raw files, whatever their format, as one frame of raw records.

``<landing.root>/<kind>/ds=YYYY-MM-DD/`` holds JSON Lines, CSV (with a header) or Parquet files,
each optionally gzip-compressed (``.jsonl.gz``, ``.csv.gz``; Parquet compresses inside). Files whose
names start with ``_`` or ``.`` (``_SUCCESS``, checksums) are skipped, as Spark does. Every record
becomes one ``value`` text for the clean stage: a JSON line as it is; a CSV or Parquet row as the JSON
object of its columns; a CSV line that does not split into the header's columns as the line itself,
which the clean stage quarantines as malformed.

Schema drift: a CSV header or Parquet schema without a required column fails with
``LandingFormatError`` naming the file and the column, before anything is written. Extra columns
travel on inside ``value``; the clean stage counts and reports them. JSON Lines has no header, so
a missing field is judged per line (``missing_user``, ``missing_item``, ...).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from functools import reduce
from pathlib import Path
from typing import TypeVar

from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkrec.clean import CORRUPT
from sparkrec.config import Config

DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Spark's text writer names its part files *.txt; they hold JSON lines too.
FORMATS = {".jsonl": "json", ".ndjson": "json", ".json": "json", ".txt": "json", ".csv": "csv", ".parquet": "parquet"}
COMPRESSIONS = (".gz", ".bz2")
T_ = TypeVar("T_")


class LandingMissingError(FileNotFoundError):
    """No landing files for a requested day."""


class LandingFormatError(ValueError):
    """A landing file cannot be read as records: unknown format, or a required column is missing."""


def landing_days(config: Config, kind: str = "events") -> list[str]:
    """Landing days present under ``<landing.root>/<kind>/ds=YYYY-MM-DD``, sorted."""
    root = Path(config.landing.root) / kind
    if not root.is_dir():
        return []
    days = [
        p.name[3:]
        for p in root.iterdir()
        if p.is_dir() and not p.is_symlink() and p.name.startswith("ds=") and landing_files(p)
    ]
    return sorted(d for d in days if DATE_RE.match(d))


def landing_files(folder: Path) -> list[Path]:
    """The data files of one landing day folder, sorted. Left out: anything under a name starting with
    ``_`` or ``.`` (``_SUCCESS``, checksums, a writer's ``_temporary/``), symbolic links, and anything
    that resolves outside the folder."""
    if folder.is_symlink():
        return []
    inside = folder.resolve()
    return sorted(
        p
        for p in folder.rglob("*")
        if not any(part.startswith(("_", ".")) for part in p.relative_to(folder).parts)
        and not p.is_symlink()
        and p.is_file()
        and inside in p.resolve().parents
    )


def file_format(path: Path) -> str:
    """``json``, ``csv`` or ``parquet`` from the file name (a ``.gz`` or ``.bz2`` suffix allowed).

    Raises:
        LandingFormatError: the name ends in none of the known suffixes.
    """
    name = path.name.lower()
    for compression in COMPRESSIONS:
        name = name.removesuffix(compression)
    for suffix, fmt in FORMATS.items():
        if name.endswith(suffix):
            return fmt
    raise LandingFormatError(
        f"landing file {path}: unknown format; name it *.jsonl, *.csv or *.parquet (gzip: *.jsonl.gz, *.csv.gz)"
    )


def read_landing(
    spark: SparkSession, config: Config, kind: str, days: Iterable[str], required: Sequence[str]
) -> DataFrame:
    """Raw records of the given landing days: ``value`` (text), ``source_file``, ``ds`` (date).

    ``source_file`` is relative to the landing root (``events/ds=YYYY-MM-DD/<file>``), the same on
    any file system.

    Raises:
        LandingFormatError: an unknown file format, or a CSV/Parquet file without a required column.
    """
    base = Path(config.landing.root) / kind
    files = [f for d in days for f in landing_files(base / f"ds={d}")]
    by_format: dict[str, list[Path]] = {"json": [], "csv": [], "parquet": []}
    for path in files:
        by_format[file_format(path)].append(path)
    frames: list[DataFrame] = []
    if by_format["json"]:
        frames.append(spark.read.option("lineSep", "\n").text([str(p) for p in by_format["json"]]))
    csv_frames = [_csv_records(spark, path, required) for path in by_format["csv"]]
    frames += [f for f in csv_frames if f is not None]
    frames += [_parquet_records(spark, path, required) for path in by_format["parquet"]]
    if not frames:
        return spark.createDataFrame([], "value string, source_file string, ds date")
    records = reduce(
        DataFrame.unionByName, [f.select("value", F.col("_metadata.file_path").alias("path")) for f in frames]
    )
    # Substrings, not regular expressions: these run once per record (a regex here cost a tenth of
    # the clean stage at 10M records). ``<kind>/ds=`` is the day folder; the date follows it.
    prefix = f"{kind}/ds="
    source_file = F.substring(F.col("path"), F.instr(F.col("path"), prefix), 1 << 16)
    return records.select(
        "value",
        source_file.alias("source_file"),
        F.to_date(F.substring(source_file, len(prefix) + 1, 10)).alias("ds"),
    )


_FAILED_READ = re.compile(r"\[FAILED_READ_FILE[^\]]*\] Encountered error while reading file (\S+?)\.?\s")
_CAUSE = re.compile(r"Caused by: ([\w.$]+)(?:: ([^\n]*))?")


def unreadable_landing(err: BaseException) -> str | None:
    """A Spark job's failure to read a file (a cut-off or corrupt gzip, a file that changed while it
    was read) as one line naming the file and the deepest cause; None for any other error."""
    text = str(err)
    failed = _FAILED_READ.search(text)
    if failed is None:
        return None
    causes = _CAUSE.findall(text)
    why = f" ({causes[-1][0].rsplit('.', 1)[-1]}: {causes[-1][1]})" if causes else ""
    return f"file {failed.group(1)} cannot be read{why}; replace or remove it and run again"


def _csv_records(spark: SparkSession, path: Path, required: Sequence[str]) -> DataFrame | None:
    """One CSV file (header first) as JSON records; lines that do not split stay as they were."""
    header = _readable(path, "CSV", lambda: spark.read.option("header", True).csv(str(path)).columns)
    if not header:
        return None  # an empty file holds no records
    columns = [c.strip() for c in header]
    _check_columns(path, columns, required)
    schema = T.StructType(
        [T.StructField(c, T.StringType()) for c in columns] + [T.StructField(CORRUPT, T.StringType())]
    )
    rows = (
        spark.read.schema(schema)
        .options(header=True, mode="PERMISSIVE", columnNameOfCorruptRecord=CORRUPT, enforceSchema=True)
        .csv(str(path))
    )
    return rows.select(
        F.coalesce(F.col(CORRUPT), _as_json(rows, columns)).alias("value"),
        "_metadata",
    )


def _parquet_records(spark: SparkSession, path: Path, required: Sequence[str]) -> DataFrame:
    rows = _readable(path, "Parquet", lambda: spark.read.parquet(str(path)))
    _check_columns(path, rows.columns, required)
    return rows.select(_as_json(rows, rows.columns).alias("value"), "_metadata")


def _as_json(rows: DataFrame, columns: Sequence[str]) -> Column:
    """A row as one JSON object (null columns left out), as a JSON line would have carried it."""
    return F.to_json(F.struct(*[rows[f"`{c}`"].alias(c) for c in columns]))


def _readable(path: Path, what: str, read: Callable[[], T_]) -> T_:
    """``read()``, with a file Spark cannot open as ``what`` reported as a LandingFormatError."""
    try:
        return read()
    except AnalysisException as error:
        reason = str(error).strip().splitlines()[0]
        raise LandingFormatError(f"landing file {path}: cannot be read as {what}: {reason}") from error


def _check_columns(path: Path, columns: Sequence[str], required: Sequence[str]) -> None:
    missing = [c for c in required if c not in columns]
    if missing:
        raise LandingFormatError(
            f"landing file {path}: required column {', '.join(missing)} missing (columns: {', '.join(columns)})"
        )
