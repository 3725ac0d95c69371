"""Property: whatever bytes land, the clean stage does not crash and every raw line is accounted for."""

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark import StorageLevel

from sparkrec.clean import clean_events, reconcile
from sparkrec.config import CleanConfig
from sparkrec.landing import read_landing
from sparkrec.schemas import RAW_EVENT_FIELDS, REASONS, REQUIRED_EVENT_FIELDS
from tests.conftest import make_config

DAY = "2024-03-10"
# Values that hit the rules: good and bad times, numbers of every sign, the known item, text, nesting.
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "2024-03-10T10:00:00Z",
            "2024-03-10 10:00",
            "1710064800",
            "1710064800000",
            "2999-01-01",
            "1970-01-01",
            "view",
            "purchase",
            "i1",
            "POST",
            " ",
            "NaN",
            "-1",
            "0",
        ]
    ),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["price", "country"]), st.one_of(st.integers(), st.text(max_size=4)), max_size=2),
)
EVENTS = st.dictionaries(st.sampled_from([*RAW_EVENT_FIELDS, "extra", "User_ID"]), VALUES, max_size=10)
LINES = st.one_of(
    EVENTS.map(lambda e: json.dumps(e).encode()),
    EVENTS.map(lambda e: json.dumps(e).encode()[:20]),  # cut short
    st.binary(max_size=40),  # anything, invalid UTF-8 included
    st.text(max_size=40).map(str.encode),
).map(lambda b: b.replace(b"\n", b" "))
CONFIG = CleanConfig(non_product_items="^POST$", late_days=7, bot_max_events_per_hour=2)


def check_garbage(spark, root: Path, mlflow_db: Path, lines: list[bytes], repeat: int) -> None:
    lines = lines + lines[:repeat]  # retried deliveries
    config = make_config(root, mlflow_db)
    folder = Path(config.landing.root) / "events" / f"ds={DAY}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fuzz.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    known = spark.createDataFrame([("i1",), ("POST",)], "item_id string")
    result = clean_events(read_landing(spark, config, "events", [DAY], REQUIRED_EVENT_FIELDS), CONFIG, known)
    result.persist(StorageLevel.MEMORY_ONLY)
    try:
        counts = [r.asDict() for r in result.counts.collect()]
        reconcile(counts)  # raises on any mismatch, per file and in total
        totals = {r["metric"]: r["value"] for r in counts if r["source"] is None}
        assert totals["raw_rows"] == len(lines)
        assert result.interactions.count() == totals["clean_rows"]
        quarantine = result.quarantine.collect()
        assert len(quarantine) == totals["quarantined_rows"]
        assert {r["reason"] for r in quarantine} <= set(REASONS)
        assert all(r["source_file"] == f"events/ds={DAY}/fuzz.jsonl" for r in quarantine)
    finally:
        result.unpersist()


GARBAGE = {"lines": st.lists(LINES, min_size=1, max_size=25), "repeat": st.integers(min_value=0, max_value=3)}
FIXTURES = [HealthCheck.function_scoped_fixture]


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=FIXTURES)
@given(**GARBAGE)
def test_garbage_never_crashes_and_reconciles_exactly(spark, tmp_path: Path, mlflow_db: Path, lines, repeat) -> None:
    check_garbage(spark, tmp_path, mlflow_db, lines, repeat)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURES)
@given(**GARBAGE)
def test_more_garbage_never_crashes_and_reconciles_exactly(
    spark, tmp_path: Path, mlflow_db: Path, lines, repeat
) -> None:
    check_garbage(spark, tmp_path, mlflow_db, lines, repeat)
