import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from sparkrec import stages
from sparkrec.clean import ReconciliationError, reconcile
from sparkrec.config import Config
from sparkrec.landing import LandingMissingError
from sparkrec.tables import read_table
from tests.conftest import make_config
from tests.helpers import write_items, write_landing

DAY = "2024-03-10"
GOOD = [
    '{"event_id":"e1","user_id":"u1","item_id":"i1","event_type":"purchase","ts":"2024-03-10T10:00:00Z","value":2}',
    '{"user_id":"u2","item_id":"i2","event_type":"view","ts":"2024-03-10 11:00:00"}',
    '{"user_id":"u3","item_id":"ï-ünïcödé 🎁","event_type":"click","ts":1710064800}',
    '{"user_id":"u3","item_id":"i3","event_type":"CLICK","ts":1710064800000}',
    '{"user_id":"u4","item_id":"i1","event_type":"cart","ts":"2024-03-10T12:00:00+02:00","value":1}',
    '{"user_id":"u6","item_id":"i2","event_type":"view","ts":"2024-03-08 09:00:00"}',
]
DUPLICATES = [
    '{"event_id":"e1","user_id":"u1","item_id":"i1","event_type":"purchase","ts":"2024-03-10T10:00:00Z","value":2}',
    '{"user_id":"u2","item_id":"i2","event_type":"view","ts":"2024-03-10 11:00:00"}',
]
BAD = {
    "missing_user": '{"user_id":null,"item_id":"i1","event_type":"view","ts":"2024-03-10 10:00:00"}',
    "missing_item": '{"user_id":"u5","event_type":"view","ts":"2024-03-10 10:00:00"}',
    "unknown_event_type": '{"user_id":"u5","item_id":"i1","event_type":"teleport","ts":"2024-03-10 10:00:00"}',
    "bad_timestamp": '{"user_id":"u5","item_id":"i1","event_type":"view","ts":"yesterday"}',
    "future_timestamp": '{"user_id":"u5","item_id":"i1","event_type":"view","ts":"2024-03-13 10:00:00"}',
    "too_late": '{"user_id":"u5","item_id":"i1","event_type":"view","ts":"2024-02-01 10:00:00"}',
    "value_out_of_range": (
        '{"user_id":"u5","item_id":"i1","event_type":"purchase","ts":"2024-03-10 10:00:00","value":-3}'
    ),
    "non_product": '{"user_id":"u5","item_id":"POST","event_type":"purchase","ts":"2024-03-10 10:00:00","value":1}',
    "bad_price": '{"user_id":"u5","item_id":"i1","event_type":"purchase","ts":"2024-03-10 10:00:00","value":1,'
    '"context":{"price":0.0}}',
    "unknown_item": '{"user_id":"u5","item_id":"nobody-knows","event_type":"view","ts":"2024-03-10 10:00:00"}',
    "malformed_record": '{"user_id": "u6", "item_id": ',
}
MALFORMED_MORE = ["[1, 2, 3]", ""]


@pytest.fixture(scope="module")
def cleaned(spark, tmp_path_factory: pytest.TempPathFactory, mlflow_db: Path) -> Config:
    config = stages_config(make_config(tmp_path_factory.mktemp("clean"), mlflow_db))
    write_landing(config, DAY, GOOD + DUPLICATES + list(BAD.values()) + MALFORMED_MORE)
    write_items(
        config,
        DAY,
        [
            {"item_id": "i1", "title": "Red mug", "price": "3.5", "updated_at": "2024-03-10 08:00:00"},
            {"item_id": "POST", "title": "Postage"},
            {"title": "no id"},
            *[{"item_id": i} for i in ("i2", "i3", "ï-ünïcödé 🎁")],
        ],
    )
    stages.run_clean(spark, config, [DAY])
    return config


def stages_config(config: Config) -> Config:
    import dataclasses

    return dataclasses.replace(config, clean=dataclasses.replace(config.clean, non_product_items="^POST$"))


def test_clean_rows_are_parsed_and_normalised_to_utc(spark, cleaned: Config) -> None:
    got = read_table(spark, cleaned, "interactions").select(
        "user_id", "item_id", "event_type", "value", "weight", "event_ts", "event_date", "ds"
    )
    ts = dt.datetime(2024, 3, 10, 10, 0)
    day, ds = dt.date(2024, 3, 10), dt.date(2024, 3, 10)
    expected = spark.createDataFrame(
        [
            ("u1", "i1", "purchase", 2.0, 1.0, ts, day, ds),
            ("u2", "i2", "view", None, 0.1, dt.datetime(2024, 3, 10, 11, 0), day, ds),
            ("u3", "ï-ünïcödé 🎁", "click", None, 0.3, ts, day, ds),
            ("u3", "i3", "click", None, 0.3, ts, day, ds),
            ("u4", "i1", "cart", 1.0, 0.5, ts, day, ds),
            ("u6", "i2", "view", None, 0.1, dt.datetime(2024, 3, 8, 9, 0), dt.date(2024, 3, 8), ds),
        ],
        "user_id string, item_id string, event_type string, value double, weight double, event_ts timestamp, "
        "event_date date, ds date",
    )
    assertDataFrameEqual(got, expected)
    ids = [r[0] for r in read_table(spark, cleaned, "interactions").select("event_id").collect()]
    assert "e1" in ids and len(set(ids)) == 6


def test_every_bad_row_is_quarantined_with_its_reason(spark, cleaned: Config) -> None:
    quarantine = read_table(spark, cleaned, "quarantine")
    events = quarantine.where(F.col("source_file").startswith("events/"))
    got = sorted((r["reason"], r["raw"]) for r in events.collect())
    expected = sorted(
        [(reason, raw) for reason, raw in BAD.items()] + [("malformed_record", m) for m in MALFORMED_MORE]
    )
    assert got == expected
    assert {r["source_file"] for r in events.collect()} == {f"events/ds={DAY}/part-0.jsonl"}
    items = quarantine.where(F.col("source_file").startswith("items/")).collect()
    assert [(r["reason"], r["raw"]) for r in items] == [("missing_item", '{"title": "no id"}')]


def test_counts_reconcile_and_are_written_per_file(spark, cleaned: Config) -> None:
    rows = read_table(spark, cleaned, "run_metrics").where("stage = 'clean'").collect()
    totals = {r["metric"]: r["value"] for r in rows if r["source"] is None}
    assert totals["raw_rows"] == 21
    assert (totals["clean_rows"], totals["duplicate_rows"], totals["quarantined_rows"]) == (6, 2, 13)
    per_file = {r["metric"]: r["value"] for r in rows if r["source"] == f"events/ds={DAY}/part-0.jsonl"}
    assert per_file["raw_rows"] == per_file["clean_rows"] + per_file["duplicate_rows"] + per_file["quarantined_rows"]
    assert totals["quarantined_rows.malformed_record"] == 3


def test_items_are_merged_and_non_products_inactive(spark, cleaned: Config) -> None:
    items = {r["item_id"]: r for r in read_table(spark, cleaned, "items").collect()}
    assert set(items) == {"i1", "i2", "i3", "ï-ünïcödé 🎁", "POST"}
    assert items["i1"]["title"] == "Red mug" and items["i1"]["price"] == 3.5 and items["i1"]["active"]
    assert not items["POST"]["active"]


def test_rerunning_a_day_gives_the_same_rows(spark, cleaned: Config) -> None:
    before = read_table(spark, cleaned, "interactions").collect()
    quarantine_before = read_table(spark, cleaned, "quarantine").count()
    stages.run_clean(spark, cleaned, [DAY])
    assertDataFrameEqual(read_table(spark, cleaned, "interactions"), before)
    assert read_table(spark, cleaned, "quarantine").count() == quarantine_before
    metrics = read_table(spark, cleaned, "run_metrics").where(
        "stage = 'clean' AND metric = 'raw_rows' AND source IS NULL"
    )
    assert metrics.count() == 1


def test_interactions_keep_statistics_on_the_columns_reads_filter_by(spark, cleaned: Config) -> None:
    from delta.tables import DeltaTable

    detail = DeltaTable.forPath(spark, cleaned.table_path("interactions")).detail().first()
    assert detail["properties"]["delta.dataSkippingStatsColumns"] == "event_date,event_ts,user_id,item_id"
    # ... and a filter on them skips files: a user who is in no file reads none.
    files = read_table(spark, cleaned, "interactions").where("user_id = 'nobody'").inputFiles()
    assert len(read_table(spark, cleaned, "interactions").inputFiles()) > 0
    assert files == []


def test_missing_landing_day_is_a_clear_error(spark, config: Config) -> None:
    with pytest.raises(LandingMissingError, match="2024-01-01"):
        stages.run_clean(spark, config, ["2024-01-01"])


def test_reconcile_refuses_counts_that_do_not_add_up() -> None:
    counts = [
        {"ds": DAY, "source": None, "metric": m, "value": v}
        for m, v in [("raw_rows", 10), ("clean_rows", 6), ("duplicate_rows", 1), ("quarantined_rows", 2)]
    ]
    with pytest.raises(ReconciliationError, match="raw_rows=10"):
        reconcile(counts)


def test_fast_users_are_kept_as_bots_counted_and_left_out_of_training(spark, tmp_path: Path, mlflow_db: Path) -> None:
    config = make_config(tmp_path, mlflow_db, "clean.bot_max_events_per_hour=3")
    burst = [
        json.dumps({"user_id": "bot", "item_id": f"i{n}", "event_type": "view", "ts": f"2024-03-10T10:{n:02d}:00Z"})
        for n in range(4)
    ]  # 4 events in one hour: above 3
    slow = [json.dumps({"user_id": "bot", "item_id": "i9", "event_type": "view", "ts": "2024-03-10T20:00:00Z"})]
    person = [
        json.dumps({"user_id": "person", "item_id": f"i{n}", "event_type": "view", "ts": f"2024-03-10T{10 + n}:00:00Z"})
        for n in range(4)
    ]  # 4 events, one per hour
    write_landing(config, DAY, burst + slow + person + burst[:1])  # the repeated line is a duplicate, not a 5th event
    result = stages.run_clean(spark, config, [DAY])
    assert (result["raw_rows"], result["clean_rows"], result["duplicate_rows"], result["bot_rows"]) == (10, 9, 1, 5)
    flags = {(r["user_id"], r["item_id"]): r["is_bot"] for r in read_table(spark, config, "interactions").collect()}
    assert all(flags[("bot", i)] for i in ("i0", "i1", "i2", "i3", "i9"))  # every event of the bot's day
    assert not any(flag for (user, _), flag in flags.items() if user == "person")
    from sparkrec.features import without_bots

    kept = without_bots(read_table(spark, config, "interactions"))
    assert {r["user_id"] for r in kept.select("user_id").distinct().collect()} == {"person"}
    # Off: nobody is a bot.
    off = stages.run_clean(
        spark,
        make_config(
            tmp_path / "off", mlflow_db, "clean.bot_max_events_per_hour=0", f"landing.root={config.landing.root}"
        ),
        [DAY],
    )
    assert off["bot_rows"] == 0


def test_the_landing_files_are_read_once_and_the_first_file_keeps_a_repeated_event(
    spark, tmp_path: Path, mlflow_db: Path
) -> None:
    from sparkrec import clean
    from sparkrec.landing import read_landing
    from sparkrec.schemas import REQUIRED_EVENT_FIELDS

    config = make_config(tmp_path, mlflow_db)
    first = '{"event_id":"e9","user_id":"u1","item_id":"i1","event_type":"view","ts":"2024-03-10 10:00:00"}'
    again = '{"event_id":"e9","user_id":"u1","item_id":"i2","event_type":"view","ts":"2024-03-10 10:00:00"}'
    write_landing(config, DAY, [again, BAD["missing_user"]], name="part-1.jsonl")
    write_landing(config, DAY, [first], name="part-0.jsonl")
    result = clean.clean_events(read_landing(spark, config, "events", [DAY], REQUIRED_EVENT_FIELDS), config.clean)
    result.persist()
    try:
        result.counts.collect()
        # Parsed once: with the landing files gone, clean, duplicate and quarantined rows still come.
        shutil.rmtree(Path(config.landing.root) / "events")
        kept = result.interactions.collect()
        assert [(r.event_id, r.item_id, r.source_file.rsplit("/", 1)[1]) for r in kept] == [
            ("e9", "i1", "part-0.jsonl")
        ]
        outcomes = {(r.source_file.rsplit("/", 1)[1], r.outcome) for r in result.rows.collect()}
        assert outcomes == {
            ("part-0.jsonl", "clean_rows"),
            ("part-1.jsonl", "duplicate_rows"),
            ("part-1.jsonl", "quarantined_rows"),
        }
        assert len(result.quarantine.collect()) == 1
    finally:
        result.unpersist()


def test_each_line_is_parsed_once_into_its_fields_and_the_names_outside_the_contract(spark, config: Config) -> None:
    from sparkrec import clean

    base = '"user_id":"u1","item_id":"i1","event_type":"view","ts":"2024-03-10 10:00:00"'
    lines = {
        "{" + base + "}": None,
        "{" + base + ',"colour":"red"}': ["colour"],
        # A contract field without a value is no stranger; the other field still is.
        '{"session_id":null,' + base + ',"colour":"red"}': ["colour"],
        '{"session_id":null,' + base + "}": None,
        # The same field twice is still a contract field; names match case and all.
        '{"user_id":"u0",' + base + "}": None,
        '{"User_Id":"u0",' + base + ',"a":1,"a":2}': ["User_Id", "a"],
        '{"user_id": "u6", "item_id": ': None,
    }
    frame = spark.createDataFrame(
        [(line, "events/ds=x/f.jsonl", DAY) for line in lines], ["value", "source_file", "ds"]
    )
    classified = clean.classify_events(frame.withColumn("ds", F.to_date("ds")), config.clean)
    found = classified.select("raw", "unknown_fields", "user_id", "reason").collect()
    assert {r["raw"]: r["unknown_fields"] for r in found} == lines
    # A key given twice: the last value, as JSON parsers read it.
    assert {r["user_id"] for r in found if r["raw"].startswith('{"user_id":"u0"')} == {"u1"}
    assert [r["reason"] for r in found if r["raw"].startswith('{"user_id": "u6"')] == ["malformed_record"]
