"""The ``sparkrec`` console script; ``jobs/<stage>.py`` call the same ``main``.

sparkrec <stage> --date YYYY-MM-DD [--conf FILE] [--set key=value ...]
sparkrec backfill --from D1 --to D2
sparkrec import online-retail --input CSV --output LANDING
sparkrec import movielens --input DIR --output LANDING
sparkrec experiment --landing DIR --split chrono --k 10 --models sparkrec,popularity,als,ease --output F
sparkrec sql "SELECT ..."
sparkrec maintain [--table T ...] [--retain-hours H]
sparkrec rollback --table T --to-version N
sparkrec summary --date D
sparkrec doctor
sparkrec sql-server start|stop|status
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import shutil
import sys
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from sparkrec.clean import CleanRefusedError, ReconciliationError
from sparkrec.config import Config, ConfigError, absolute_path, keys_set_in, load_config, override_key
from sparkrec.config.secrets import install_log_filter, redact_text
from sparkrec.embed import ModelNotFoundError
from sparkrec.errors import UserError
from sparkrec.experiment.spec import MODELS
from sparkrec.landing import LandingFormatError, LandingMissingError
from sparkrec.locks import RunLockedError, day_locks
from sparkrec.models.training import TrainingFailedError
from sparkrec.publish import PublishGateError
from sparkrec.registry import ModelMissingError
from sparkrec.schemas import SchemaError
from sparkrec.session import DeltaJarsMissingError
from sparkrec.tables import TableMissingError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

STAGES = ("clean", "embed", "train", "recommend", "evaluate", "nightly")


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--conf", help="YAML config file (default conf/local.yaml)")
    common.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set recommend.k=20 (repeatable)",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser = argparse.ArgumentParser(
        prog="sparkrec", description="Nightly batch recommender on Spark, Delta Lake and MLflow"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    allow_empty = argparse.ArgumentParser(add_help=False)
    allow_empty.add_argument(
        "--allow-empty",
        action="store_true",
        help="clean: replace a day even with no clean rows or mostly quarantine (clean.allow_empty)",
    )
    for stage in STAGES:
        parents = [common, allow_empty] if stage in ("clean", "nightly") else [common]
        p = sub.add_parser(stage, parents=parents, help=f"run the {stage} stage for one landing day")
        p.add_argument("--date", required=True, help="landing day YYYY-MM-DD")
    p = sub.add_parser(
        "backfill",
        parents=[common, allow_empty],
        help="clean every landing day in a range, then the rest for the last",
    )
    p.add_argument("--from", dest="start", required=True, help="first landing day YYYY-MM-DD")
    p.add_argument("--to", dest="end", required=True, help="last landing day YYYY-MM-DD")
    p = sub.add_parser("import", parents=[common], help="turn a public data set into landing files")
    p.add_argument("dataset", choices=["online-retail", "movielens"])
    p.add_argument(
        "--input",
        required=True,
        help="the data set's file (data/online-retail/online_retail_2010-12.csv.gz) "
        "or folder (a MovieLens 100K, 1M or latest(-small) copy)",
    )
    p.add_argument("--output", help="landing root (default: landing.root of the config)")
    p = sub.add_parser(
        "experiment", parents=[common], help="compare sparkrec and the baselines on one split of a landing zone"
    )
    p.add_argument("--landing", required=True, help="landing root written by 'sparkrec import'")
    p.add_argument(
        "--split", default="chrono", help="chrono, stratified-by-item, random-by-user or cold-items (default chrono)"
    )
    p.add_argument(
        "--ratio",
        type=float,
        default=0.75,
        help="train share of the stratified splits; cold-items: share of the items kept warm (default 0.75)",
    )
    p.add_argument("--holdout-days", type=int, default=0, help="chrono: days held out (default evaluate.holdout_days)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--k", type=int, default=10, help="cut-off of the metrics (default 10)")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {','.join(MODELS)}")
    p.add_argument("--repeat", type=int, default=1, help="train the seeded models with N seeds; metrics get _std")
    p.add_argument("--min-rating", type=float, help="ratings below this are not relevant test items")
    p.add_argument("--output", help="write the result JSON here")
    _table_commands(sub, common)
    return parser


def _table_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """The subcommands over the tables: sql, maintain, rollback, summary, doctor."""
    p = sub.add_parser("sql", parents=[common], help="run a SQL query against the registered tables")
    p.add_argument("query")
    p.add_argument(
        "--write", action="store_true", help="allow statements that change tables or the catalog (default: read-only)"
    )
    p.add_argument("--limit", type=int, default=50, help="rows to show")
    p = sub.add_parser(
        "maintain", parents=[common], help="OPTIMIZE (Z-order per maintenance.zorder) and VACUUM the tables"
    )
    p.add_argument(
        "--table",
        action="append",
        dest="tables",
        metavar="TABLE",
        help="a table to maintain (repeatable; default: every table that exists)",
    )
    p.add_argument("--retain-hours", type=int, help="VACUUM retention (default maintenance.retain_hours)")
    p.add_argument("--force", action="store_true", help="allow --retain-hours below Delta's 168-hour floor")
    p = sub.add_parser("rollback", parents=[common], help="restore a table to an earlier Delta version")
    p.add_argument("--table", required=True, help="table name, e.g. recommendations")
    p.add_argument("--to-version", type=int, required=True, help="version (DESCRIBE HISTORY sparkrec.<table>)")
    p = sub.add_parser("summary", parents=[common], help="rows per table, metrics, where to look next")
    p.add_argument("--date", required=True)
    p = sub.add_parser("doctor", parents=[common], help="start a session (fetching Delta's jars) and print versions")
    p.add_argument("--quiet", action="store_true")
    p = sub.add_parser(
        "sql-server",
        parents=[common],
        help="Spark's Thrift JDBC/ODBC server and a Spark Connect server over the tables (in the background)",
    )
    p.add_argument("action", choices=["start", "stop", "status", "serve"], help="serve: run in this process")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("py4j", "mlflow", "alembic", "urllib3", "httpx", "transformers", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    install_log_filter()
    try:
        return _dispatch(args)
    except Exception as err:  # noqa: BLE001 - the one place an error becomes an exit code
        message = user_error(err)
        if message is None or args.verbose:
            _say("".join(traceback.format_exception(err)).rstrip(), sys.stderr)
        if message is None:
            _say(f"sparkrec: internal error: {type(err).__name__} (a bug: the traceback above shows where)", sys.stderr)
            return 1
        _say(f"sparkrec: error: {message}", sys.stderr)
        return 2


def user_error(err: BaseException) -> str | None:
    """The one line to print for an error a user can act on (``USER_ERRORS``, Spark's analysis and
    arithmetic errors, Delta's write conflicts, MLflow's errors, an unreadable landing file); None
    for a bug."""
    from mlflow.exceptions import MlflowException
    from pyspark import errors as spark_errors

    from sparkrec.landing import unreadable_landing

    spark_user = (
        spark_errors.AnalysisException,
        spark_errors.ArithmeticException,
        spark_errors.NumberFormatException,
        spark_errors.DateTimeException,
        spark_errors.ArrayIndexOutOfBoundsException,
    )
    if isinstance(err, USER_ERRORS):
        text = str(err)
    elif isinstance(err, spark_user):
        # Spark's message: the error class, the message, then the query context on further lines.
        text = f"Spark: {str(err).strip().splitlines()[0]}"
    elif type(err).__module__.startswith("delta.exceptions"):  # every one a concurrent transaction's conflict
        text = f"a concurrent write changed the table first ({type(err).__name__}); run again: {_first_line(err)}"
    elif isinstance(err, MlflowException):
        text = f"MLflow: {_first_line(err)}"
    else:
        unreadable = unreadable_landing(err)
        if unreadable is None:
            return None
        text = unreadable
    return " ".join(text.split()) or type(err).__name__


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _say(text: str, stream: TextIO | None = None) -> None:
    """Print ``text`` with any secret in it masked (a URI's password, a key read from the environment)."""
    print(redact_text(text), file=stream or sys.stdout)


# What a user can cause (a bad argument, config or input; a gate that stops a run): one line, exit 2.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    LandingMissingError,
    LandingFormatError,
    ModelMissingError,
    TableMissingError,
    ReconciliationError,
    CleanRefusedError,
    ModelNotFoundError,
    SchemaError,
    PublishGateError,
    TrainingFailedError,
    DeltaJarsMissingError,
    RunLockedError,
    UserError,
)


def _dispatch(args: argparse.Namespace) -> int:
    overrides = args.overrides + (["clean.allow_empty=true"] if getattr(args, "allow_empty", False) else [])
    config = load_config(args.conf, overrides)
    if args.command == "import":
        return _import(config, args)
    if args.command == "sql-server":
        return _sql_server(config, args)
    days = _run_days(config, args)
    # One run per landing day; taken before Spark starts, so a second run fails at once.
    with day_locks(config, days, args.command) if days else contextlib.nullcontext():
        return _run(config, args)


def _run_days(config: Config, args: argparse.Namespace) -> list[str]:
    """The landing days a command writes (and locks): the stage's date, or every landing day a
    backfill cleans plus its last day."""
    from sparkrec.landing import landing_days
    from sparkrec.stages.common import check_date

    if args.command in STAGES:
        return [check_date(args.date)]
    if args.command == "backfill":
        start, end = check_date(args.start), check_date(args.end)
        return sorted({d for d in landing_days(config, "events") if start <= d <= end} | {end})
    return []


def _run(config: Config, args: argparse.Namespace) -> int:
    # Spark, torch and MLflow load only for the commands that need a session.
    from sparkrec.session import build_session

    spark = build_session(config)
    handlers = {
        "doctor": _doctor,
        "sql": _sql,
        "experiment": _experiment,
        "maintain": _table_command,
        "rollback": _table_command,
        "summary": _summary,
    }
    return handlers.get(args.command, _stage)(spark, config, args)


def _import(config: Config, args: argparse.Namespace) -> int:
    from sparkrec.adapters.movielens import import_movielens
    from sparkrec.adapters.online_retail import import_online_retail

    output = absolute_path(args.output) if args.output else config.landing.root
    importer = import_movielens if args.dataset == "movielens" else import_online_retail
    result = importer(args.input, output)
    _say(
        f"imported {result.events} events and {result.items} items into {output} "
        f"({len(result.days)} landing days, {result.days[0]} .. {result.days[-1]})"
    )
    returns, linked = getattr(result, "returns", 0), getattr(result, "linked_returns", 0)
    if returns:
        _say(f"{returns} returns, {linked} linked to the purchase they reverse")
    return 0


def _sql_server(config: Config, args: argparse.Namespace) -> int:
    from sparkrec import sql_server

    if args.action == "serve":
        sql_server.serve(config)
        return 0
    if args.action == "start":
        conf_args = ["--conf", absolute_path(args.conf)] if args.conf else []
        for override in args.overrides:
            conf_args += ["--set", override]
        _say(sql_server.start(config, conf_args).describe())
        return 0
    if args.action == "stop":
        pid = sql_server.stop(config)
        _say(f"stopped the SQL server (pid {pid})" if pid else "no SQL server was running")
        return 0
    state = sql_server.read_state(config)
    _say(state.describe() if state else "no SQL server is running")
    return 0 if state else 3


def _stage(spark: SparkSession, config: Config, args: argparse.Namespace) -> int:
    from sparkrec import stages

    if args.command == "backfill":
        result = stages.run_backfill(spark, config, args.start, args.end)
    elif args.command == "clean":
        result = stages.run_clean(spark, config, [args.date])
    else:
        result = getattr(stages, f"run_{args.command}")(spark, config, args.date)
    _say(json.dumps(result, indent=2, default=str))
    return 0


def _summary(spark: SparkSession, config: Config, args: argparse.Namespace) -> int:
    from sparkrec import stages

    _say(stages.summary(spark, config, stages.check_date(args.date)))
    return 0


def _doctor(spark: SparkSession, config: Config, args: argparse.Namespace) -> int:
    import pyspark
    import torch

    if not args.quiet:
        versions = {
            "spark": spark.version,
            "pyspark": pyspark.__version__,
            "torch": torch.__version__,
            "cuda": torch.cuda.is_available(),
            "master": spark.sparkContext.master,
            "lakehouse": config.lakehouse.root,
            "mlflow": config.mlflow.tracking_uri,
        }
        _say(json.dumps(versions, indent=2))
    spark.range(1).write.format("delta").mode("overwrite").save(config.table_path("_doctor"))
    shutil.rmtree(config.table_path("_doctor"), ignore_errors=True)
    return 0


def _sql(spark: SparkSession, config: Config, args: argparse.Namespace) -> int:
    from pyspark.errors import (
        AnalysisException,
        ArithmeticException,
        DateTimeException,
        NumberFormatException,
        ParseException,
    )

    if not args.verbose:  # PySpark logs a query error with its JVM stack trace before raising it
        for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    if not args.write and not _read_only(spark, args.query):
        raise UserError(
            f"sparkrec sql is read-only ({', '.join(READ_ONLY[:5])}); add --write to run: {args.query.strip()[:80]}"
        )
    try:
        spark.sql(args.query).show(args.limit, truncate=False)
    except (AnalysisException, ParseException, ArithmeticException, NumberFormatException, DateTimeException) as err:
        raise UserError(f"SQL error: {str(err).strip().splitlines()[0]}") from err
    return 0


# Statements ``sparkrec sql`` runs without --write, by their first keyword.
READ_ONLY = ("SELECT", "WITH", "SHOW", "DESCRIBE", "EXPLAIN", "DESC", "VALUES", "TABLE", "FROM")
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)


def _read_only(spark: SparkSession, query: str) -> bool:
    """Whether ``query`` only reads: its first keyword is one of ``READ_ONLY`` and, unless it only
    shows, describes or explains, its parsed plan inserts nowhere (``WITH ... INSERT``, ``FROM t
    INSERT ...``). A statement that does not parse counts as reading: running it reports the error."""
    try:
        tree = spark._jsparkSession.sessionState().sqlParser().parsePlan(query).treeString()
    except Exception:  # noqa: BLE001 - spark.sql reports the syntax error itself
        return True
    text = _COMMENTS.sub(" ", query).lstrip(" \t\r\n(")
    first = re.match(r"[A-Za-z]+", text)
    keyword = first.group(0).upper() if first else ""
    if keyword not in READ_ONLY:
        return False
    return keyword in ("SHOW", "DESCRIBE", "DESC", "EXPLAIN") or "InsertInto" not in tree


def _experiment(spark: SparkSession, config: Config, args: argparse.Namespace) -> int:
    from sparkrec.experiment import ExperimentSpec, format_table, run_experiment

    spec = ExperimentSpec(
        landing=absolute_path(args.landing),
        split=args.split,
        ratio=args.ratio,
        seed=args.seed,
        k=args.k,
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        repeat=args.repeat,
        holdout_days=args.holdout_days,
        min_rating=args.min_rating,
        fixed=tuple(override_key(o) for o in args.overrides) + (keys_set_in(args.conf) if args.conf else ()),
    )
    spec.check()
    result = run_experiment(spark, config, spec, absolute_path(args.output) if args.output else None)
    _say(format_table(result))
    if args.output:
        _say(f"\nwrote {args.output}")
    return 0


def _table_command(spark: SparkSession, config: Config, args: argparse.Namespace) -> int:
    from sparkrec import tables
    from sparkrec.schemas import TABLES
    from sparkrec.session import register_tables

    def known(table: str) -> str:
        if table not in TABLES:
            raise UserError(f"unknown table {table!r}; sparkrec's tables: {', '.join(TABLES)}")
        return table

    if args.command == "rollback":
        table = known(args.table)
        metrics = tables.rollback(spark, config, table, args.to_version)
        register_tables(spark, config)
        new_version = tables.table_version(spark, config, table)
        report = {"table": table, "restored_version": args.to_version, "new_version": new_version, **metrics}
        _say(json.dumps(report, indent=2))
        return 0
    names = (
        [known(t) for t in args.tables] if args.tables else [t for t in TABLES if tables.table_exists(spark, config, t)]
    )
    retain = config.maintenance.retain_hours if args.retain_hours is None else args.retain_hours
    done = {
        t: tables.maintain(spark, config, t, retain, config.maintenance.zorder.get(t, ()), force=args.force)
        for t in names
    }
    _say(json.dumps(done, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
