"""The landing formats (JSON Lines, CSV, Parquet, gzip) and schema drift, through the real clean stage."""

import csv
import datetime as dt
import gzip
import io
import json
import logging
from pathlib import Path

import pandas as pd
import pytest
from pyspark.testing import assertDataFrameEqual

from sparkrec import stages
from sparkrec.config import Config
from sparkrec.landing import LandingFormatError
from sparkrec.tables import read_table
from tests.conftest import make_config

EVENTS = [
    {
        "user_id": "u1",
        "item_id": "i1",
        "event_type": "purchase",
        "ts": "2024-03-10T10:00:00Z",
        "value": "2",
        "session_id": "s1",
    },
    {"user_id": "u2", "item_id": "i2", "event_type": "view", "ts": "2024-03-10 11:00:00"},
    {"user_id": "u3", "item_id": "ï-ünïcödé 🎁", "event_type": "click", "ts": "1710064800"},
    {
        "user_id": "u4",
        "item_id": "i2",
        "event_type": "return",
        "ts": "2024-03-10 12:00:00",
        "value": "1",
        "linked_event_id": "e-original",
    },
]
COLUMNS = ["user_id", "item_id", "event_type", "ts", "value", "session_id", "linked_event_id"]


def day_folder(config: Config, day: str) -> Path:
    folder = Path(config.landing.root) / "events" / f"ds={day}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_csv_gz(path: Path, rows: list[dict], columns: list[str], extra_lines: list[str] = ()) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_bytes(gzip.compress((text.getvalue() + "".join(line + "\n" for line in extra_lines)).encode()))


@pytest.fixture(scope="module")
def three_formats(spark, tmp_path_factory: pytest.TempPathFactory, mlflow_db: Path) -> Config:
    """The same four events on three days: gzip JSON Lines, gzip CSV (with a broken line and an extra
    column), typed Parquet (a real timestamp and a numeric value)."""
    config = make_config(tmp_path_factory.mktemp("formats"), mlflow_db)
    lines = [json.dumps(e, ensure_ascii=False) for e in EVENTS]
    (day_folder(config, "2024-03-10") / "events.jsonl.gz").write_bytes(gzip.compress("\n".join(lines).encode()))
    rows = [{**e, "colour": "red"} for e in EVENTS]
    write_csv_gz(
        day_folder(config, "2024-03-11") / "events.csv.gz",
        [shift(r, 1) for r in rows],
        [*COLUMNS, "colour"],
        extra_lines=['u9,"i,9",view'],
    )
    frame = pd.DataFrame([shift(e, 2) for e in EVENTS])
    frame["ts"] = pd.to_datetime(frame["ts"].map(_iso), utc=True)
    frame["value"] = pd.to_numeric(frame["value"])
    frame.to_parquet(day_folder(config, "2024-03-12") / "events.parquet", index=False)
    (day_folder(config, "2024-03-12") / "_SUCCESS").write_text("")
    stages.run_clean(spark, config, ["2024-03-10", "2024-03-11", "2024-03-12"])
    return config


def shift(event: dict, days: int) -> dict:
    """The event moved ``days`` later, so each landing day's window accepts it."""
    ts = _iso(event["ts"]) + dt.timedelta(days=days)
    return {**event, "ts": ts.strftime("%Y-%m-%d %H:%M:%S")}


def _iso(text: str) -> dt.datetime:
    if text.isdigit():
        return dt.datetime.fromtimestamp(int(text), dt.timezone.utc).replace(tzinfo=None)
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)


def test_the_three_formats_give_the_same_interactions(spark, three_formats: Config) -> None:
    got = read_table(spark, three_formats, "interactions")
    columns = ["user_id", "item_id", "event_type", "value", "session_id", "linked_event_id"]
    per_day = {d: got.where(f"ds = DATE'{d}'").select(*columns) for d in ("2024-03-10", "2024-03-11", "2024-03-12")}
    assert per_day["2024-03-10"].count() == 4
    assertDataFrameEqual(per_day["2024-03-11"], per_day["2024-03-10"])
    assertDataFrameEqual(per_day["2024-03-12"], per_day["2024-03-10"])
    times = {r["ds"].isoformat(): r["event_ts"] for r in got.where("user_id = 'u1'").collect()}
    assert times == {
        "2024-03-10": dt.datetime(2024, 3, 10, 10),
        "2024-03-11": dt.datetime(2024, 3, 11, 10),
        "2024-03-12": dt.datetime(2024, 3, 12, 10),
    }
    assert {r["linked_event_id"] for r in got.where("event_type = 'return'").collect()} == {"e-original"}


def test_a_csv_line_that_does_not_split_is_quarantined_as_it_was(spark, three_formats: Config) -> None:
    rows = read_table(spark, three_formats, "quarantine").collect()
    assert [(r["reason"], r["raw"], r["source_file"]) for r in rows] == [
        ("malformed_record", 'u9,"i,9",view', "events/ds=2024-03-11/events.csv.gz")
    ]


def test_extra_columns_are_counted_per_file_and_logged(spark, three_formats: Config, caplog) -> None:
    metrics = read_table(spark, three_formats, "run_metrics").where("metric LIKE 'unknown_field.%'").collect()
    assert {(r["source"], r["metric"], r["value"]) for r in metrics} == {
        ("events/ds=2024-03-11/events.csv.gz", "unknown_field.colour", 4.0),
        (None, "unknown_field.colour", 4.0),
    }
    with caplog.at_level(logging.WARNING, logger="sparkrec"):
        stages.run_clean(spark, three_formats, ["2024-03-11"])
    assert "events/ds=2024-03-11/events.csv.gz carries field 'colour'" in caplog.text


def test_a_header_without_a_required_column_names_the_file_and_column(spark, tmp_path: Path, mlflow_db: Path) -> None:
    config = make_config(tmp_path, mlflow_db)
    path = day_folder(config, "2024-03-10") / "drifted.csv.gz"
    renamed = [{("customer" if k == "user_id" else k): v for k, v in e.items()} for e in EVENTS]
    write_csv_gz(path, renamed, ["customer", *COLUMNS[1:]])
    with pytest.raises(LandingFormatError, match=r"drifted\.csv\.gz: required column user_id missing"):
        stages.run_clean(spark, config, ["2024-03-10"])
    assert not (Path(config.lakehouse.root) / "interactions").exists()  # nothing written


def test_an_unknown_file_format_is_a_clear_error(spark, tmp_path: Path, mlflow_db: Path) -> None:
    config = make_config(tmp_path, mlflow_db)
    (day_folder(config, "2024-03-10") / "events.xlsx").write_bytes(b"PK\x03\x04")
    with pytest.raises(LandingFormatError, match=r"events\.xlsx: unknown format"):
        stages.run_clean(spark, config, ["2024-03-10"])
