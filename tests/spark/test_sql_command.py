"""``sparkrec sql``: reads by default; anything that writes needs --write."""

from pathlib import Path

import pytest

from sparkrec import stages
from sparkrec.cli import main
from sparkrec.tables import read_table
from tests.conftest import make_config
from tests.helpers import cli_args, write_landing
from tests.spark.test_clean_refusal import DAY, GOOD


@pytest.fixture(scope="module")
def cleaned(spark, tmp_path_factory: pytest.TempPathFactory, mlflow_db: Path):
    config = make_config(tmp_path_factory.mktemp("sql"), mlflow_db)
    write_landing(config, DAY, GOOD)
    stages.run_clean(spark, config, [DAY])
    return config


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("SELECT count(*) FROM sparkrec.interactions", marks=pytest.mark.slow),
        "  -- rows per day\n  /* a comment */ (SELECT ds, count(*) FROM sparkrec.interactions GROUP BY ds)",
        pytest.param("WITH d AS (SELECT * FROM sparkrec.interactions) SELECT count(*) FROM d", marks=pytest.mark.slow),
        pytest.param("SHOW TABLES IN sparkrec", marks=pytest.mark.slow),
        pytest.param("DESCRIBE HISTORY sparkrec.interactions", marks=pytest.mark.slow),
        "EXPLAIN DELETE FROM sparkrec.interactions",
    ],
)
def test_reading_statements_run(spark, cleaned, capsys, query: str) -> None:
    assert main(["sql", query, *cli_args(cleaned)]) == 0, capsys.readouterr().err


@pytest.mark.parametrize(
    "query",
    [
        "DROP TABLE sparkrec.interactions",
        pytest.param("DELETE FROM sparkrec.interactions", marks=pytest.mark.slow),
        pytest.param("delete from sparkrec.interactions where true", marks=pytest.mark.slow),
        pytest.param("RESTORE TABLE sparkrec.interactions TO VERSION AS OF 0", marks=pytest.mark.slow),
        "WITH d AS (SELECT * FROM sparkrec.interactions) INSERT INTO sparkrec.interactions SELECT * FROM d",
        "FROM sparkrec.interactions INSERT INTO sparkrec.interactions SELECT *",
        pytest.param("/* SELECT */ TRUNCATE TABLE sparkrec.interactions", marks=pytest.mark.slow),
    ],
)
def test_writing_statements_need_write(spark, cleaned, capsys, query: str) -> None:
    rows = read_table(spark, cleaned, "interactions").count()
    assert main(["sql", query, *cli_args(cleaned)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sparkrec: error: sparkrec sql is read-only"), err
    assert read_table(spark, cleaned, "interactions").count() == rows == len(GOOD)


def test_write_runs_what_it_is_given(spark, cleaned, capsys) -> None:
    query = f"DELETE FROM sparkrec.interactions WHERE user_id = 'u0' AND ds = DATE'{DAY}'"
    assert main(["sql", query, "--write", *cli_args(cleaned)]) == 0, capsys.readouterr().err
    assert read_table(spark, cleaned, "interactions").count() == len(GOOD) - 1


def test_a_lakehouse_path_with_quotes_registers_and_a_shared_catalog_name_is_never_taken_over(
    spark, cleaned, tmp_path: Path, mlflow_db: Path
) -> None:
    import dataclasses

    from sparkrec.errors import UserError
    from sparkrec.session import register_tables

    quoted = make_config(tmp_path / "it's a lake", mlflow_db)
    write_landing(quoted, DAY, GOOD[:2])
    stages.run_clean(spark, quoted, [DAY])
    assert "sparkrec.interactions" in register_tables(spark, quoted)
    assert spark.sql("SELECT count(*) FROM sparkrec.interactions").first()[0] == 2
    # With a shared (Hive) metastore the name belongs to the lakehouse that registered it.
    shared = dataclasses.replace(cleaned, catalog=dataclasses.replace(cleaned.catalog, metastore="hive"))
    with pytest.raises(UserError, match="sparkrec.interactions is registered at .*lake.*another lakehouse owns"):
        register_tables(spark, shared)
    assert spark.sql("SELECT count(*) FROM sparkrec.interactions").first()[0] == 2


def test_sql_parameters_bind_through_the_delta_parser(spark, cleaned) -> None:
    from sparkrec.session import register_tables

    register_tables(spark, cleaned)
    # The notebooks pass values this way; Delta's parser alone would leave :day unbound.
    query = "SELECT count(*) FROM sparkrec.interactions WHERE ds = to_date(:day) AND user_id = :user"
    assert spark.sql(query, args={"day": DAY, "user": "u1"}).first()[0] == 1
