"""The tables by name for SQL users: three-level names with ``catalog.name``, and the change data
feed on ``recommendations`` (a day's rows in and out through ``table_changes``)."""

from __future__ import annotations

import dataclasses

import pytest

from sparkrec import tables
from sparkrec.errors import UserError
from sparkrec.schemas import RECOMMENDATIONS
from sparkrec.session import register_tables
from sparkrec.stages import summary
from tests.helpers import write_recommendations

DAY = "2026-01-05"


def _named(config, **catalog):
    return dataclasses.replace(config, catalog=dataclasses.replace(config.catalog, **catalog))


def test_catalog_name_makes_every_table_and_view_a_three_level_name(spark, config):
    unity = _named(config, name="spark_catalog", database="three_level_names")
    rows = write_recommendations(spark, unity, DAY, users=4)

    registered = register_tables(spark, unity)

    assert registered == [
        "spark_catalog.three_level_names.recommendations",
        "spark_catalog.three_level_names.recommendations_latest",
    ]
    latest = spark.sql(
        "SELECT count(*) AS n, min(ds) AS ds FROM spark_catalog.three_level_names.recommendations_latest"
    )
    assert latest.first()["n"] == rows
    assert str(latest.first()["ds"]) == DAY
    assert "spark_catalog.three_level_names.recommendations" in summary(spark, unity, DAY)
    # Registered once: a second session's registration keeps the same table.
    assert register_tables(spark, unity) == registered


def test_a_named_catalog_never_drops_a_table_registered_elsewhere(spark, config, tmp_path):
    unity = _named(config, name="spark_catalog", database="owned_elsewhere")
    write_recommendations(spark, unity, DAY, users=1)
    register_tables(spark, unity)
    other = dataclasses.replace(
        unity, lakehouse=dataclasses.replace(unity.lakehouse, root=str(tmp_path / "another_lakehouse"))
    )
    write_recommendations(spark, other, DAY, users=2)

    with pytest.raises(UserError, match="owned_elsewhere.recommendations is registered at .* another lakehouse"):
        register_tables(spark, other)
    assert spark.sql("SELECT count(*) FROM spark_catalog.owned_elsewhere.recommendations").first()[0] == 3


def test_recommendations_keep_a_change_data_feed_of_each_day(spark, config):
    cdf = _named(config, database="change_feed")
    write_recommendations(spark, cdf, DAY, users=2)
    write_recommendations(spark, cdf, "2026-01-06", users=1)
    register_tables(spark, cdf)
    before = tables.table_version(spark, cdf, RECOMMENDATIONS)

    write_recommendations(spark, cdf, DAY, users=3, k=2)  # the day again, with other lists

    properties = spark.sql("SHOW TBLPROPERTIES change_feed.recommendations").collect()
    assert {r["key"]: r["value"] for r in properties}["delta.enableChangeDataFeed"] == "true"
    changes = spark.sql(
        f"""SELECT ds, _change_type, count(*) AS n FROM table_changes('change_feed.recommendations', {before + 1})
        GROUP BY ds, _change_type"""
    ).collect()
    assert {(str(r["ds"]), r["_change_type"]): r["n"] for r in changes} == {
        (DAY, "delete"): 6,
        (DAY, "insert"): 6,
    }


def test_change_data_feed_can_be_turned_off(spark, config):
    off = _named(config, change_data_feed=False)
    write_recommendations(spark, off, DAY, users=1)
    properties = tables.table_properties(off, RECOMMENDATIONS)
    assert properties["delta.enableChangeDataFeed"] == "false"
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{off.table_path(RECOMMENDATIONS)}`").first()["properties"]
    assert detail["delta.enableChangeDataFeed"] == "false"
