"""The synthetic log generator: sizes, dirt rates and reproducibility, cleaned by the real stage."""

from __future__ import annotations

import pytest

from sparkrec import stages
from sparkrec.synthetic import DirtRates, synthetic_events, synthetic_items, write_landing_day

DAY = "2024-06-01"


def test_generated_day_reconciles_with_the_dirt_it_was_given(spark, config) -> None:
    dirt = DirtRates(
        malformed=0.02,
        missing_user=0.03,
        bad_timestamp=0.02,
        future=0.01,
        too_late=0.01,
        unknown_event_type=0.01,
        bad_value=0.01,
        unknown_item=0.01,
        duplicate=0.05,
    )
    lines = synthetic_events(spark, 20_000, DAY, dirt=dirt, seed=3, partitions=2)
    assert sorted(r["value"] for r in lines.limit(50).collect()) == sorted(
        r["value"] for r in synthetic_events(spark, 20_000, DAY, dirt=dirt, seed=3, partitions=2).limit(50).collect()
    )
    write_landing_day(lines, config.landing.root, DAY)
    write_landing_day(synthetic_items(spark, 20_000, DAY), config.landing.root, DAY, kind="items")
    out = stages.run_clean(spark, config, [DAY])
    assert out["raw_rows"] == pytest.approx(20_000 * 1.05, rel=0.02)
    # Copies of dirty lines are quarantined again, not counted as duplicates: 12 % of the lines are dirty.
    assert out["duplicate_rows"] == pytest.approx(20_000 * 0.05 * 0.88, rel=0.1)
    for reason, rate in [
        ("malformed_record", 0.02),
        ("missing_user", 0.03),
        ("bad_timestamp", 0.02),
        ("future_timestamp", 0.01),
        ("too_late", 0.01),
        ("unknown_event_type", 0.01),
        ("value_out_of_range", 0.01),
        ("unknown_item", 0.01),
    ]:
        # Each rate of the original lines, give or take sampling noise and the duplicated copies.
        assert out[f"quarantined_rows.{reason}"] == pytest.approx(20_000 * rate * 1.05, rel=0.2), reason


def test_rates_that_do_not_add_up_are_refused(spark) -> None:
    with pytest.raises(ValueError, match="sum to at most 1"):
        synthetic_events(spark, 10, DAY, dirt=DirtRates(malformed=0.7, missing_user=0.5))
