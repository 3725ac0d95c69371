"""A day that would be replaced by nothing, or by mostly quarantine, keeps what it has."""

from pathlib import Path

import pytest

from sparkrec.cli import main
from sparkrec.config import Config
from sparkrec.tables import read_table
from tests.conftest import make_config
from tests.helpers import cli_args, write_landing

DAY = "2024-03-10"
GOOD = [f'{{"user_id":"u{i}","item_id":"i{i % 3}","event_type":"view","ts":"2024-03-10 1{i}:00:00"}}' for i in range(5)]
# An upstream renamed user_id: every row lands in quarantine as missing_user.
RENAMED = [line.replace('"user_id"', '"customer"') for line in GOOD]


def state(spark, config: Config) -> list[list[tuple]]:
    """Every row of the day's interactions, quarantine and clean counts (audit columns included)."""
    where = {"interactions": "true", "quarantine": "true", "run_metrics": "stage = 'clean'"}
    return [
        sorted((tuple(r) for r in read_table(spark, config, t).where(w).collect()), key=repr) for t, w in where.items()
    ]


@pytest.mark.parametrize(
    ("landing", "why"),
    [
        pytest.param(RENAMED, "none of its 5 rows is clean (missing_user 5)", marks=pytest.mark.slow),
        pytest.param([""], "none of its 1 rows is clean (malformed_record 1)", marks=pytest.mark.slow),
        (None, "its landing files hold no rows"),  # a 0-byte export
        pytest.param(
            GOOD[:1] + RENAMED[1:],
            "4 of its 5 rows are quarantined (missing_user 4), more than",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_a_day_is_not_replaced_by_nothing_or_mostly_quarantine(
    spark, tmp_path: Path, mlflow_db: Path, capsys, landing: list[str] | None, why: str
) -> None:
    config = make_config(tmp_path, mlflow_db)
    write_landing(config, DAY, GOOD)
    assert main(["clean", "--date", DAY, *cli_args(config)]) == 0
    before = state(spark, config)
    folder = Path(config.landing.root) / "events" / f"ds={DAY}"
    if landing is None:
        (folder / "part-0.jsonl").write_bytes(b"")
    else:
        write_landing(config, DAY, landing)
    capsys.readouterr()

    assert main(["clean", "--date", DAY, *cli_args(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"sparkrec: error: clean {DAY}: {why}"), err
    assert err[-1].endswith("nothing replaced (the day keeps its 5 rows; --allow-empty to replace)"), err
    assert not [line for line in err if "Traceback" in line]
    assert state(spark, config) == before
    refused = read_table(spark, config, "run_metrics").where("stage = 'clean_refused' AND source IS NULL")
    recorded = {r["metric"]: r["value"] for r in refused.collect()}
    expected_raw = 0 if landing is None else len(landing)
    assert recorded.get("raw_rows", 0.0) == expected_raw

    assert main(["clean", "--date", DAY, "--allow-empty", *cli_args(config)]) == 0
    interactions = read_table(spark, config, "interactions").where(f"ds = DATE'{DAY}'").count()
    assert interactions == (1 if landing and landing[0] == GOOD[0] else 0)
