"""Hostile arguments, configs and files: each ends in one ``sparkrec: error:`` line and exit code 2;
a bug ends in its traceback and exit code 1; ``-v`` shows the traceback of any error."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import pytest

from sparkrec.cli import main
from tests.spark.test_clean_refusal import GOOD, RENAMED

DAY = "2024-03-10"


class Case:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.args = [
            f"--set=lakehouse.root={root / 'lakehouse'}",
            f"--set=landing.root={root / 'landing'}",
            f"--set=mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
            f"--set=mlflow.artifact_location={root / 'mlartifacts'}",
            "--set=mlflow.registered_model=errors_test",
            "--set=spark.show_progress=false",
        ]
        self.day = root / "landing" / "events" / f"ds={DAY}"
        self.day.mkdir(parents=True)

    def file(self, name: str, data: str | bytes) -> Path:
        path = self.root / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        return path

    def landing(self, name: str, data: str | bytes) -> None:
        (self.day / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def clean(*more: str) -> Callable[[Case], list[str]]:
    return lambda c: ["clean", "--date", DAY, *c.args, *more]


def with_landing(name: str, data: str | bytes, then: Callable[[Case], list[str]]) -> Callable[[Case], list[str]]:
    def build(c: Case) -> list[str]:
        c.landing(name, data)
        return then(c)

    return build


def with_conf(text: str | bytes) -> Callable[[Case], list[str]]:
    return lambda c: ["clean", "--date", DAY, "--conf", str(c.file("bad.yaml", text)), *c.args]


GOOD_FILE = "\n".join(GOOD) + "\n"
CUT_GZIP = gzip.compress(GOOD_FILE.encode() * 200)[:300]
CASES: list[tuple[str, Callable[[Case], list[str]], str]] = [
    # The config file and --set values.
    ("conf missing", lambda c: ["clean", "--date", DAY, "--conf", str(c.root / "nope.yaml")], "config file not found"),
    ("conf is a folder", lambda c: ["clean", "--date", DAY, "--conf", str(c.root)], "is not a file"),
    ("yaml syntax", with_conf("spark: [unclosed\n"), "is not valid YAML"),
    ("yaml not a mapping", with_conf("- a\n- b\n"), "must hold a mapping"),
    ("yaml not utf-8", with_conf(b'clean:\n  non_product_items: "caf\xe9"\n'), "is not valid YAML"),
    ("unknown key", clean("--set", "recommend.nope=1"), "recommend.nope"),
    ("infinite number", clean("--set", "recommend.k=.inf"), "recommend.k"),
    ("huge number", clean("--set", "recommend.k=1e400"), "recommend.k"),
    ("negative window", clean("--set", "clean.late_days=-1"), "clean.late_days"),
    ("list where text", clean("--set", "landing.root=[a, b]"), "landing.root"),
    ("list where a number", clean("--set", "train.epochs=[1]"), "train.epochs"),
    ("share above one", clean("--set", "clean.max_quarantine_share=2"), "clean.max_quarantine_share"),
    ("unset variable", clean("--set", "mlflow.experiment=${SPARKREC_SURELY_UNSET}"), "SPARKREC_SURELY_UNSET"),
    ("override without =", clean("--set", "recommend.k"), "recommend.k"),
    # Arguments.
    ("not a date", lambda c: ["clean", "--date", "2024-13-45", *c.args], "date must be YYYY-MM-DD"),
    ("a path for a date", lambda c: ["clean", "--date", "../../etc", *c.args], "date must be YYYY-MM-DD"),
    ("backfill backwards", lambda c: ["backfill", "--from", DAY, "--to", "2024-03-01", *c.args], "is after"),
    ("unknown table", lambda c: ["maintain", "--table", "nope", *c.args], "unknown table 'nope'"),
    # Input files.
    ("missing day", lambda c: ["clean", "--date", "2024-03-11", *c.args], "no landing event files"),
    ("cut-off gzip", with_landing("part-0.jsonl.gz", CUT_GZIP, clean()), "cannot be read"),
    ("not gzip at all", with_landing("part-0.jsonl.gz", b"PK\x03\x04 a zip", clean()), "cannot be read"),
    ("unknown format", with_landing("part-0.xml", "<events/>", clean()), "unknown format"),
    ("csv without user_id", with_landing("part-0.csv", "item_id,event_type,ts\ni1,view,x\n", clean()), "user_id"),
    ("every row quarantined", with_landing("part-0.jsonl", "\n".join(RENAMED), clean()), "nothing replaced"),
    ("empty export", with_landing("part-0.jsonl", b"", clean()), "hold no rows"),
    # SQL and missing prerequisites.
    ("division by zero", lambda c: ["sql", "SELECT 1/0", *c.args], "DIVIDE_BY_ZERO"),
    ("no such table", lambda c: ["sql", "SELECT * FROM sparkrec.nope", *c.args], "TABLE_OR_VIEW_NOT_FOUND"),
    ("sql syntax", lambda c: ["sql", "SELEC 1", *c.args], "PARSE_SYNTAX_ERROR"),
    ("sql write", lambda c: ["sql", "DROP TABLE sparkrec.interactions", *c.args], "read-only"),
    ("no model to serve", lambda c: ["recommend", "--date", DAY, *c.args], "no model errors_test@champion"),
    ("no table to roll back", lambda c: ["rollback", "--table", "items", "--to-version", "0", *c.args], "items"),
]


# Cases that start Spark take seconds each: these run with the slow tests (make test-all).
SLOW = {
    "not gzip at all",
    "unknown format",
    "csv without user_id",
    "empty export",
    "no such table",
    "sql syntax",
    "sql write",
    "no table to roll back",
}


@pytest.mark.parametrize(
    ("build", "expected"),
    [pytest.param(b, e, id=i, marks=[pytest.mark.slow] if i in SLOW else []) for i, b, e in CASES],
)
def test_a_user_error_is_one_line_and_exit_2(spark, tmp_path: Path, capsys, build, expected: str) -> None:
    argv = build(Case(tmp_path))
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("sparkrec: error: "), err
    assert expected in err[0], err


def test_a_wrongly_encoded_file_is_cleaned_not_a_crash(spark, tmp_path: Path, capsys) -> None:
    case = Case(tmp_path)
    case.landing("part-0.jsonl", GOOD_FILE.replace("i1", "caf\u00e9").encode("latin-1"))
    assert main(clean()(case)) == 0, capsys.readouterr().err


def test_verbose_shows_the_traceback_of_a_user_error(spark, tmp_path: Path, capsys) -> None:
    case = Case(tmp_path)
    assert main(["clean", "--date", "2024-03-11", "-v", *case.args]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "LandingMissingError" in err
    assert err.strip().splitlines()[-1].startswith("sparkrec: error: no landing event files")


def test_a_bug_is_exit_1_with_its_traceback(spark, tmp_path: Path, capsys, monkeypatch) -> None:
    from sparkrec import stages

    def broken(*_args: object) -> str:
        return {}["a key that is not there"]

    monkeypatch.setattr(stages, "summary", broken)
    case = Case(tmp_path)
    assert main(["summary", "--date", DAY, *case.args]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in broken" in err
    assert err.strip().splitlines()[-1] == "sparkrec: internal error: KeyError (a bug: the traceback above shows where)"


def test_a_real_delta_write_conflict_is_one_line_and_exit_2(spark, tmp_path: Path, capsys, monkeypatch) -> None:
    """Two writers of one table, for real: a transaction reads the table and removes a file, another
    writer appends first; Delta's conflict check refuses the first commit."""
    from sparkrec import stages

    table = str(tmp_path / "contested")
    spark.range(4).write.format("delta").save(table)

    def losing_writer(*_args: object) -> str:
        jvm = spark.sparkContext._jvm
        txn = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, table).startTransaction()
        read = txn.filterFiles()  # this transaction read the whole table
        spark.range(4, 6).write.format("delta").mode("append").save(table)  # the other writer wins
        nil = getattr(getattr(jvm.scala.collection.immutable, "Nil$"), "MODULE$")
        manual = getattr(getattr(jvm.org.apache.spark.sql.delta, "DeltaOperations$ManualUpdate$"), "MODULE$")
        txn.commit(getattr(nil, "$colon$colon")(read.head().remove()), manual)
        return "committed"

    monkeypatch.setattr(stages, "summary", losing_writer)
    case = Case(tmp_path)
    assert main(["summary", "--date", DAY, *case.args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        "sparkrec: error: a concurrent write changed the table first (ConcurrentAppendException); run again: "
        "[DELTA_CONCURRENT_APPEND"
    )
    assert spark.read.format("delta").load(table).count() == 6  # the winner's rows, the loser's change not
