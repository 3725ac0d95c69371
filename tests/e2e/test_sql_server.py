"""Downstream SQL as clients outside sparkrec reach it: ``sparkrec sql-server`` (Spark's Thrift
JDBC/ODBC server and a Spark Connect server) queried by beeline and by a Spark Connect client, and
the Hive metastore on PostgreSQL (tools/metastore.sh) read by a Spark session that knows nothing of
sparkrec. Every client runs in its own process, as a user's would."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from sparkrec.config import Config
from sparkrec.session import ensure_java_home
from tests.conftest import NIGHTLY_SETTINGS, SAMPLE_DAY
from tests.helpers import cli_args, write_recommendations

PROJECT = Path(__file__).resolve().parents[2]
DAY, NEXT_DAY = "2026-01-05", "2026-01-06"
LATEST = "SELECT ds, count(*) AS n FROM sparkrec.recommendations_latest GROUP BY ds"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sparkrec(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "sparkrec.cli", *args], capture_output=True, text=True, cwd=PROJECT, timeout=900
    )
    if check and result.returncode != 0:
        raise AssertionError(f"sparkrec {args[0]} exited {result.returncode}: {result.stderr[-3000:]}")
    return result


@contextlib.contextmanager
def sql_server(server_args: list[str]) -> Iterator[tuple[str, str]]:
    """A started ``sparkrec sql-server`` (stopped whatever happens): its JDBC and Spark Connect URLs."""
    started = _sparkrec("sql-server", "start", *server_args)
    try:
        lines = started.stdout.splitlines()
        jdbc = next(line.split()[1] for line in lines if "JDBC/ODBC:" in line)
        connect = next(line.split()[2] for line in lines if "Spark Connect:" in line)
        yield jdbc, connect
    finally:
        _sparkrec("sql-server", "stop", *server_args, check=False)


def server_args(config: Config, tmp_path: Path, *extra: str) -> list[str]:
    return [
        *cli_args(config),
        f"--set=sql_server.port={_free_port()}",
        f"--set=sql_server.connect_port={_free_port()}",
        f"--set=sql_server.state_dir={tmp_path / 'sql-server'}",
        "--set=sql_server.driver_memory=1g",
        *extra,
    ]


def beeline(url: str, query: str) -> list[list[str]]:
    """The rows of ``query`` run by beeline (the jars ship with pyspark), header first."""
    import pyspark

    ensure_java_home()
    spark_home = os.path.dirname(pyspark.__file__)
    result = subprocess.run(
        [f"{spark_home}/bin/beeline", "-u", url, "--silent=true", "--outputformat=csv2", "-e", query],
        capture_output=True,
        text=True,
        env={**os.environ, "SPARK_HOME": spark_home},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    lines = [line.split("> ", 1)[-1] if "jdbc:hive2://" in line else line for line in result.stdout.splitlines()]
    return [line.split(",") for line in lines if line.strip()]


def connect_client(url: str, query: str) -> list[tuple]:
    """The rows of ``query`` through a Spark Connect client (``SparkSession.builder.remote``)."""
    code = textwrap.dedent(
        f"""
        from pyspark.sql import SparkSession
        spark = SparkSession.builder.remote({url!r}).getOrCreate()
        for row in spark.sql({query!r}).collect():
            print("\\t".join(str(v) for v in row))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return [tuple(line.split("\t")) for line in result.stdout.splitlines() if line.strip()]


@pytest.mark.slow  # starts a Thrift and a Connect server (about 90 s)
def test_beeline_and_spark_connect_read_the_days_lists_and_the_next_write(spark, config, tmp_path):
    rows = write_recommendations(spark, config, DAY, users=4)
    args = server_args(config, tmp_path)

    with sql_server(args) as (jdbc, connect):
        second = _sparkrec("sql-server", "start", *args, check=False)  # one at a time
        assert second.returncode == 2 and "a SQL server runs already" in second.stderr
        status = _sparkrec("sql-server", "status", *args)
        assert jdbc in status.stdout and connect in status.stdout

        assert beeline(jdbc, LATEST) == [["ds", "n"], [DAY, str(rows)]]
        assert connect_client(connect, LATEST) == [(DAY, str(rows))]
        # Another process (this test's Spark) writes the next day while the server runs.
        more = write_recommendations(spark, config, NEXT_DAY, users=5)
        assert beeline(jdbc, LATEST) == [["ds", "n"], [NEXT_DAY, str(more)]]

    stopped = _sparkrec("sql-server", "status", *args, check=False)
    assert stopped.returncode == 3 and "no SQL server is running" in stopped.stdout


def test_a_second_server_on_a_taken_port_is_one_line(config, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _sparkrec(
            "sql-server", "start", *server_args(config, tmp_path, f"--set=sql_server.port={port}"), check=False
        )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"sparkrec: error: port {port} on 127.0.0.1 is in use: --set sql_server.port=<a free port>"
    )


@pytest.fixture(scope="module")
def metastore(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL metastore started by tools/metastore.sh (its data in a folder of this run); its
    JDBC URL."""
    folder = Path("/var/tmp") / f"sparkrec-metastore-{tmp_path_factory.getbasetemp().name}"
    env = {**os.environ, "SPARKREC_METASTORE_DIR": str(folder), "SPARKREC_METASTORE_PORT": str(_free_port())}
    script = str(PROJECT / "tools" / "metastore.sh")
    started = subprocess.run([script, "start"], capture_output=True, text=True, env=env, timeout=600)
    assert started.returncode == 0, started.stdout + started.stderr
    url = subprocess.run([script, "url"], capture_output=True, text=True, env=env, check=True).stdout.strip()
    try:
        yield url
    finally:
        subprocess.run([script, "stop"], capture_output=True, env=env, timeout=120)
        subprocess.run(["rm", "-rf", str(folder)], check=False)


@pytest.mark.slow
def test_hive_metastore_on_postgres_serves_a_nightly_run_by_name(spark, sample, tmp_path, metastore):
    """The sample in a PostgreSQL metastore: a Spark session without sparkrec finds its tables by name,
    and the SQL server over the same metastore shows a nightly run's lists as soon as it ends."""
    hive = ["--set=catalog.metastore=hive", f"--set=catalog.metastore_url={metastore}"]
    args = [
        *cli_args(sample),
        *hive,
        f"--set=mlflow.artifact_location={sample.mlflow.artifact_location}",
        f"--set=mlflow.registered_model={sample.mlflow.registered_model}",
    ]
    events = spark.read.format("delta").load(sample.table_path("interactions")).count()

    # One sparkrec session registers the tables in the metastore ...
    _sparkrec("sql", *args, "SHOW TABLES IN sparkrec")
    # ... and a Spark session with only Delta and the metastore's address finds them by name.
    jars = (Path(sys.prefix) / "spark-jars.txt").read_text().split()[1:]
    code = textwrap.dedent(
        f"""
        from pyspark.sql import SparkSession
        jars = {jars!r}
        spark = (SparkSession.builder.master("local[1]")
            .config("spark.jars", ",".join(jars))
            .config("spark.driver.extraClassPath", [j for j in jars if "postgresql" in j][0])
            .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
            .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
            .config("spark.sql.warehouse.dir", {str(tmp_path / "warehouse")!r})
            .config("spark.hadoop.javax.jdo.option.ConnectionURL", {metastore!r})
            .enableHiveSupport().getOrCreate())
        print("events", spark.table("sparkrec.interactions").count())
        """
    )
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert f"events {events}" in plain.stdout

    with sql_server(server_args(sample, tmp_path, *hive)) as (jdbc, _):
        assert beeline(jdbc, "SELECT count(*) AS n FROM sparkrec.interactions") == [["n"], [str(events)]]
        # The nightly run of the next day, while the server runs; the next query sees its lists.
        _sparkrec("nightly", "--date", SAMPLE_DAY, *args, *(f"--set={s}" for s in NIGHTLY_SETTINGS))
        served = spark.read.format("delta").load(sample.table_path("recommendations")).count()
        assert served > 0
        assert beeline(jdbc, LATEST) == [["ds", "n"], [SAMPLE_DAY, str(served)]]
