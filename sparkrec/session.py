"""The one place that builds a Delta-enabled SparkSession from config."""

from __future__ import annotations

import logging
import os
import re
import sys

from pyspark.sql import SparkSession

from sparkrec.config import Config, ConfigError
from sparkrec.errors import UserError
from sparkrec.schemas import TABLES, VIEWS

log = logging.getLogger(__name__)

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"


def worker_environment() -> dict[str, str]:
    """Environment every Python worker and training rank needs: offline models, one thread pool."""
    return {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def delta_maven_artifact(jar_version: str = "") -> str:
    """Maven coordinates of the Delta jar for the installed pyspark (and delta-spark unless given)."""
    from importlib.metadata import version

    import pyspark

    spark_minor = ".".join(pyspark.__version__.split(".")[:2])
    return f"io.delta:delta-spark_{spark_minor}_2.13:{jar_version or version('delta-spark')}"


def ensure_java_home() -> None:
    """Use the Java that ``make setup`` found (``.venv/java.env``) when JAVA_HOME is not set."""
    if os.environ.get("JAVA_HOME"):
        return
    env_file = os.path.join(sys.prefix, "java.env")
    if os.path.isfile(env_file):
        for line in open(env_file):
            key, _, value = line.strip().partition("=")
            if key == "JAVA_HOME" and value:
                os.environ["JAVA_HOME"] = value


# glibc's malloc (mallopt's M_MMAP_THRESHOLD): blocks of this size or more are mapped on their own and
# given back to the system when freed.
MMAP_THRESHOLD = 1 << 20


def return_large_frees() -> bool:
    """Make freed blocks of ``MMAP_THRESHOLD`` bytes or more leave this process (glibc only; False:
    nothing changed).

    The driver's per-item work is done in parts: a part of text vectors, a block of the item tower's
    activations, a part of Arrow, each megabytes that live for one step. glibc's malloc maps the
    first such block and, once it is freed, raises its threshold above that size, so later ones come
    from the heap, where freed memory stays resident: the process keeps the largest transients it
    ever had, stage after stage. A fixed threshold keeps them mapped, and freeing one unmaps it.
    ``MALLOC_MMAP_THRESHOLD_`` in the environment (glibc's own setting) is left to decide."""
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc" or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    m_mmap_threshold = -3  # malloc.h
    return bool(ctypes.CDLL(None).mallopt(m_mmap_threshold, MMAP_THRESHOLD))


def build_session(config: Config, *, server: dict[str, str] | None = None) -> SparkSession:
    """Create (or join) the SparkSession for ``config`` and register the tables by name.

    Local runs resolve Delta's jars (and the metastore's JDBC driver) from Maven Central through
    ``configure_spark_with_delta_pip`` once; ``make setup`` does that. Under ``spark-submit`` (or in a
    notebook whose JVM already runs) the command line decides the master, the driver's memory and the
    jars: the jars must come with ``--packages`` or ``--jars``, and a session without them fails here
    with that advice. ``server``: the settings of a SQL server's session (``sparkrec.sql_server``),
    whose client sessions see only the JVM's own class path, so Delta's jars go on it.
    """
    from delta import configure_spark_with_delta_pip

    ensure_java_home()
    return_large_frees()
    submitted = bool(os.environ.get("PYSPARK_GATEWAY_PORT"))  # spark-submit or a running JVM
    for key, value in worker_environment().items():
        os.environ.setdefault(key, value)
    # Driver and workers run this interpreter (the project's venv) unless the cluster says otherwise.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

    spark_cfg = config.spark
    if not spark_cfg.master and not submitted and not SparkSession.getActiveSession():
        raise ConfigError(
            "spark.master is empty, which leaves the master to spark-submit: run the job with "
            "spark-submit --master ..., or set spark.master (e.g. --set spark.master=local[*])"
        )
    builder = _settings(SparkSession.builder, config, submitted)
    packages = spark_packages(config)
    # Under spark-submit the JVM runs already: jars given here would not reach its class path.
    jars = [] if submitted else _resolved_jars(packages)
    if jars:
        # Resolved once by `make setup` (sparkrec doctor): no Ivy run, no cache collisions.
        builder = builder.config("spark.jars", ",".join(jars))
    elif not submitted:
        builder = configure_spark_with_delta_pip(builder, extra_packages=packages[1:])
        if spark_cfg.delta_jar_version:
            builder = builder.config("spark.jars.packages", ",".join(packages))
    class_path = _class_path(config, jars, server is not None) if not submitted else []
    if class_path:
        builder = builder.config("spark.driver.extraClassPath", os.pathsep.join(class_path))
    for key, value in (server or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if submitted:
        _check_delta_classes(spark, packages[0])
    elif not jars:
        _remember_jars(packages, spark.sparkContext.getConf().get("spark.jars", ""))
    spark.sparkContext.setLogLevel(os.environ.get("SPARKREC_SPARK_LOG_LEVEL", "WARN"))
    sc = spark.sparkContext
    log.info(
        "Spark %s, master %s, application %s; Spark UI: %s",
        spark.version,
        sc.master,
        sc.applicationId,
        sc.uiWebUrl or "disabled (spark.ui.enabled=false)",
    )
    register_tables(spark, config)
    return spark


# The Hive metastore's JDBC driver for a PostgreSQL metastore database (catalog.metastore_url).
METASTORE_DRIVER = "org.postgresql:postgresql:42.7.14"
_JDBC_DRIVERS = {"postgresql": "org.postgresql.Driver", "mysql": "com.mysql.cj.jdbc.Driver", "derby": ""}


def spark_packages(config: Config) -> list[str]:
    """The Maven packages a local session resolves: Delta's jar first, then the metastore's driver."""
    return [delta_maven_artifact(config.spark.delta_jar_version), METASTORE_DRIVER]


def metastore_settings(config: Config) -> dict[str, str]:
    """Spark settings of a Hive metastore kept in the database of ``catalog.metastore_url`` (none
    without one: Spark's own settings decide). The schema is created once by tools/metastore.sh."""
    catalog = config.catalog
    if catalog.metastore != "hive" or not catalog.metastore_url:
        return {}
    kind = catalog.metastore_url.split(":")[1]
    settings = {
        "spark.hadoop.javax.jdo.option.ConnectionURL": catalog.metastore_url,
        "spark.hadoop.hive.metastore.schema.verification": "false",
        "spark.hadoop.datanucleus.schema.autoCreateAll": "false",
    }
    if _JDBC_DRIVERS.get(kind):
        settings["spark.hadoop.javax.jdo.option.ConnectionDriverName"] = _JDBC_DRIVERS[kind]
    if catalog.metastore_user:
        settings["spark.hadoop.javax.jdo.option.ConnectionUserName"] = catalog.metastore_user
    if catalog.metastore_password:
        settings["spark.hadoop.javax.jdo.option.ConnectionPassword"] = catalog.metastore_password
    return settings


def _class_path(config: Config, jars: list[str], server: bool) -> list[str]:
    """Jars the driver's own class path needs: the metastore's JDBC driver (the Hive client looks for
    it there, not among spark.jars) and, for a SQL server, Delta's jars.

    Raises:
        UserError: they are needed but not resolved yet.
    """
    wanted = []
    if metastore_settings(config) and config.catalog.metastore_url.startswith("jdbc:postgresql:"):
        wanted.append("org.postgresql_postgresql-")
    if server:
        wanted += ["io.delta_delta-spark_", "io.delta_delta-storage-"]
    found = [j for j in jars if any(os.path.basename(j).startswith(w) for w in wanted)]
    if len(found) < len(wanted):
        raise UserError(
            "the jars of Delta and the metastore's JDBC driver are not resolved yet: run make setup "
            "(or .venv/bin/sparkrec doctor) once, then again"
        )
    return found


def _settings(builder: SparkSession.Builder, config: Config, submitted: bool) -> SparkSession.Builder:
    """``builder`` with sparkrec's settings: Delta, UTC, partitions sized by config, the workers'
    environment, the configured ``spark.conf`` and the catalog."""
    spark_cfg = config.spark
    if spark_cfg.master and not submitted:
        builder = builder.master(spark_cfg.master).config("spark.driver.memory", spark_cfg.driver_memory)
    builder = (
        builder.appName(spark_cfg.app_name)
        .config("spark.sql.extensions", DELTA_EXTENSION)
        .config("spark.sql.catalog.spark_catalog", DELTA_CATALOG)
        .config("spark.sql.session.timeZone", "UTC")
        # pandas writes nanosecond timestamps to Parquet, which Spark refuses; read them as epoch
        # nanoseconds instead (the clean stage parses those).
        .config("spark.sql.legacy.parquet.nanosAsLong", "true")
        # Delta's SQL parser drops the parameters of spark.sql(query, args=...) since Spark 4.1
        # (delta-io/delta#7640): bind them the way Spark 3.5 did, as constants.
        .config("spark.sql.legacy.parameterSubstitution.constantsOnly", "true")
        .config("spark.sql.shuffle.partitions", str(spark_cfg.shuffle_partitions))
        .config("spark.default.parallelism", str(spark_cfg.shuffle_partitions))
        .config("spark.ui.showConsoleProgress", str(spark_cfg.show_progress).lower())
        .config("spark.sql.warehouse.dir", f"{config.lakehouse.root.rstrip('/')}/_warehouse")
        .config("spark.databricks.delta.schema.autoMerge.enabled", "false")
        # Delta replays its log with 50 partitions by default: far too many for a small table.
        .config("spark.databricks.delta.snapshotPartitions", str(spark_cfg.shuffle_partitions))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # A write partitioned by day keeps up to two files open per task instead of sorting every
        # row by day first: a nightly writes one day, which the sort only spilled to disk (at 10M
        # events, 674 MiB for the interactions table). More days than that are sorted as before.
        .config("spark.sql.maxConcurrentOutputFileWriters", "2")
        .config("spark.sql.debug.maxToStringFields", "200")
    )
    for key, value in worker_environment().items():
        builder = builder.config(f"spark.executorEnv.{key}", value)
    for key, value in spark_cfg.conf.items():
        builder = builder.config(key, value)
    if config.catalog.metastore == "hive":
        builder = builder.enableHiveSupport()
        for key, value in metastore_settings(config).items():
            builder = builder.config(key, value)
    return builder


class DeltaJarsMissingError(RuntimeError):
    """The running JVM has no Delta Lake classes (spark-submit without --packages or --jars)."""


def _check_delta_classes(spark: SparkSession, artifact: str) -> None:
    try:
        spark.sparkContext._jvm.org.apache.spark.util.Utils.classForName(  # type: ignore[union-attr]
            "io.delta.tables.DeltaTable", True, False
        )
    except Exception as err:
        raise DeltaJarsMissingError(
            f"Delta Lake's classes are not on the driver's class path: pass --packages {artifact} "
            "(or --jars with the delta-spark and delta-storage jars) to spark-submit; "
            "configure_spark_with_delta_pip cannot add them once the JVM runs"
        ) from err


def _jars_file() -> str:
    return os.path.join(sys.prefix, "spark-jars.txt")


def _resolved_jars(packages: list[str]) -> list[str]:
    """Jar files Ivy resolved for ``packages`` earlier, if all are still there."""
    try:
        lines = open(_jars_file()).read().split()
    except OSError:
        return []
    if not lines or lines[0] != ",".join(packages):
        return []
    jars = lines[1:]
    return jars if jars and all(os.path.isfile(j.removeprefix("file:")) for j in jars) else []


def _remember_jars(packages: list[str], spark_jars: str) -> None:
    jars = [j.removeprefix("file://").removeprefix("file:") for j in spark_jars.split(",") if j.endswith(".jar")]
    if not jars or not os.access(sys.prefix, os.W_OK):
        return
    try:
        with open(_jars_file() + ".tmp", "w") as out:
            out.write("\n".join([",".join(packages), *jars]) + "\n")
        os.replace(_jars_file() + ".tmp", _jars_file())
    except OSError:
        log.debug("could not remember the resolved jars in %s", _jars_file())


def register_tables(spark: SparkSession, config: Config) -> list[str]:
    """Register every existing Delta table under ``catalog.database`` (in ``catalog.name`` when set)
    so SQL by name works.

    Jobs read and write by path; the names are a view onto those paths for SQL users. An
    in-memory catalog forgets them when the session ends, so each session registers them again; a
    persistent one (Hive, Unity Catalog) keeps them, and they are created once.

    Returns:
        The names registered.
    """
    from delta.tables import DeltaTable

    namespace = config.catalog.namespace
    schema = ".".join(f"`{part}`" for part in namespace.split("."))
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    registered = []
    for table in TABLES:
        path = config.table_path(table)
        if not DeltaTable.isDeltaTable(spark, path):
            continue
        name = f"{schema}.`{table}`"
        existing = _registered_location(spark, name, f"{namespace}.{table}")
        if existing is not None and existing.rstrip("/") != _as_uri(path).rstrip("/"):
            if config.catalog.metastore != "in-memory" or config.catalog.name:
                # A shared catalog's table belongs to whoever registered it: never dropped here.
                raise UserError(
                    f"{namespace}.{table} is registered at {existing}, not at {path}: another lakehouse owns "
                    f"the name; set catalog.database to a name of this lakehouse's own"
                )
            spark.sql(f"DROP TABLE IF EXISTS {name}")  # this session's own name for another root
            existing = None
        if existing is None:
            spark.sql(f"CREATE TABLE IF NOT EXISTS {name} USING DELTA LOCATION {sql_string(path)}")
        registered.append(f"{namespace}.{table}")
    for view, query in VIEWS.items():
        if all(f"{namespace}.{t}" in registered for t in re.findall(r"\{db\}\.(\w+)", query)):
            spark.sql(f"CREATE OR REPLACE VIEW {schema}.`{view}` AS {query.format(db=schema)}")
            registered.append(f"{namespace}.{view}")
    return registered


def sql_string(text: str) -> str:
    """``text`` as a Spark SQL string literal: quoted, its backslashes and quotes escaped."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _registered_location(spark: SparkSession, quoted: str, name: str) -> str | None:
    if not spark.catalog.tableExists(name):
        return None
    rows = spark.sql(f"DESCRIBE TABLE EXTENDED {quoted}").collect()
    for row in rows:
        if row[0] == "Location":
            return str(row[1])
    return None


def _as_uri(path: str) -> str:
    return path if ":" in path.split("/")[0] else f"file:{path}"
