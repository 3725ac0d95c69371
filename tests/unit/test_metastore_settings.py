"""The settings a session gets for a Hive metastore kept in a database, and the jars that must be on
the driver's own class path for it (and for a SQL server)."""

from __future__ import annotations

import pytest

from sparkrec.config import load_config
from sparkrec.config.secrets import redacted
from sparkrec.errors import UserError
from sparkrec.session import METASTORE_DRIVER, _class_path, metastore_settings, spark_packages

URL = "jdbc:postgresql://127.0.0.1:5433/sparkrec_metastore?user=sparkrec"
JARS = [
    "/ivy/jars/io.delta_delta-spark_4.2_2.13-4.4.0.jar",
    "/ivy/jars/io.delta_delta-storage-4.4.0.jar",
    "/ivy/jars/com.fasterxml.jackson.core_jackson-databind-2.13.5.jar",
    "/ivy/jars/org.postgresql_postgresql-42.7.14.jar",
]


def test_a_metastore_url_configures_the_hive_client() -> None:
    config = load_config(None, ["catalog.metastore=hive", f"catalog.metastore_url={URL}"])
    settings = metastore_settings(config)
    assert settings["spark.hadoop.javax.jdo.option.ConnectionURL"] == URL
    assert settings["spark.hadoop.javax.jdo.option.ConnectionDriverName"] == "org.postgresql.Driver"
    assert "spark.hadoop.javax.jdo.option.ConnectionPassword" not in settings
    # Only the driver goes on the class path: Ivy's other jars (an older jackson) would shadow Spark's.
    assert _class_path(config, JARS, server=False) == [JARS[3]]
    assert _class_path(config, JARS, server=True) == [JARS[0], JARS[1], JARS[3]]
    assert spark_packages(config)[1] == METASTORE_DRIVER


def test_without_a_url_spark_decides_and_nothing_is_added() -> None:
    assert metastore_settings(load_config(None, ["catalog.metastore=hive"])) == {}
    assert metastore_settings(load_config(None, [f"catalog.metastore_url={URL}"])) == {}  # in-memory
    assert _class_path(load_config(None, []), JARS, server=False) == []


def test_the_metastore_password_is_passed_on_but_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARKREC_TEST_METASTORE_PASSWORD", "s3cr3t-pw")
    config = load_config(
        None,
        [
            "catalog.metastore=hive",
            f"catalog.metastore_url={URL}",
            "catalog.metastore_user=sparkrec",
            "catalog.metastore_password=${SPARKREC_TEST_METASTORE_PASSWORD}",
        ],
    )
    assert metastore_settings(config)["spark.hadoop.javax.jdo.option.ConnectionPassword"] == "s3cr3t-pw"
    assert redacted(config.to_dict())["catalog"]["metastore_password"] == "***"


def test_jars_not_resolved_yet_are_one_clear_line() -> None:
    config = load_config(None, ["catalog.metastore=hive", f"catalog.metastore_url={URL}"])
    with pytest.raises(UserError, match="not resolved yet: run make setup"):
        _class_path(config, [], server=False)
