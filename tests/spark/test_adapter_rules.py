"""The data set adapters' cleaning rules (``_dataset.yaml``) in real clean runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sparkrec import stages
from sparkrec.adapters import read_profile
from sparkrec.adapters.movielens import import_movielens
from sparkrec.adapters.online_retail import import_online_retail
from sparkrec.config import with_values
from sparkrec.tables import read_table
from tests.conftest import make_config
from tests.movielens_fixtures import write_latest

DAY = "2001-09-09"
RETURNS_CSV = (
    "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850,United Kingdom\n"
    "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850,United Kingdom\n"
    "536366,85123A,WHITE HANGING HEART T-LIGHT HOLDER,2,2010-12-01 09:00:00,2.55,17850,United Kingdom\n"
    "C536367,85123A,WHITE HANGING HEART T-LIGHT HOLDER,-2,2010-12-01 10:00:00,2.55,17850,United Kingdom\n"
    "C536368,71053,WHITE METAL LANTERN,-1,2010-12-01 10:05:00,3.39,17850,United Kingdom\n"
    "536369,22139,RETROSPOT TEA SET,56,2010-12-01 11:52:00,0.0,17850,United Kingdom\n"
    "536370,POST,POSTAGE,3,2010-12-01 12:00:00,18.0,12583,France\n"
    "536371,22086,PAPER CHAIN KIT,80,2010-12-01 13:00:00,2.55,,United Kingdom\n"
)


@pytest.mark.slow  # cleans a day twice under two rule sets
def test_profile_rules_keep_old_ratings_that_the_nightly_rules_would_quarantine(spark, config, tmp_path: Path) -> None:
    import_movielens(write_latest(tmp_path / "ml"), config.landing.root)
    nightly = stages.run_clean(spark, config, [DAY])
    assert nightly["quarantined_rows.too_late"] == 3  # ratings days before the landing day
    profile = yaml.safe_load((Path(config.landing.root) / "_dataset.yaml").read_text())
    result = stages.run_clean(spark, with_values(config, {"clean": profile["clean"]}), [DAY])
    assert (result["raw_rows"], result["clean_rows"], result.get("quarantined_rows", 0.0)) == (4, 4, 0)
    rows = read_table(spark, config, "interactions").select("user_id", "item_id", "event_type", "value").collect()
    assert sorted(tuple(r) for r in rows) == [
        ("1", "10", "rating", 5.0),
        ("1", "20", "rating", 3.0),
        ("2", "10", "rating", 4.0),
        ("2", "30", "rating", 1.0),
    ]


def test_online_retail_rules_through_the_clean_stage(spark, tmp_path: Path, mlflow_db: Path) -> None:
    """Cancellations become returns linked to their purchase; zero prices, postage and rows without a
    customer are quarantined with their reasons; a repeated export row is a counted duplicate."""
    from sparkrec import stages
    from sparkrec.config import with_values
    from sparkrec.tables import read_table

    source = tmp_path / "retail.csv"
    source.write_text(RETURNS_CSV, encoding="utf-8")
    summary = import_online_retail(source, tmp_path / "landing")
    assert (summary.returns, summary.linked_returns) == (2, 1)  # the lantern was bought before the export
    config = make_config(tmp_path, mlflow_db)
    config = with_values(config, {"clean": read_profile(config.landing.root)["clean"]})
    result = stages.run_clean(spark, config, ["2010-12-01"])
    assert (result["raw_rows"], result["clean_rows"], result["duplicate_rows"], result["quarantined_rows"]) == (
        8,
        4,
        1,
        3,
    )
    rows = read_table(spark, config, "interactions").collect()
    by_session = {r["session_id"]: r for r in rows}
    # The return of 2 reverses the latest purchase with quantity left: invoice 536366.
    assert by_session["C536367"]["linked_event_id"] == by_session["536366"]["event_id"]
    assert (by_session["C536367"]["event_type"], by_session["C536367"]["value"]) == ("return", 2.0)
    assert by_session["C536368"]["linked_event_id"] is None
    reasons = {r["reason"]: r["detail"] for r in read_table(spark, config, "quarantine").collect()}
    assert reasons == {"bad_price": "price=0", "non_product": "item_id=POST", "missing_user": None}
