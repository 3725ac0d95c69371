import datetime as dt

import pytest

from sparkrec import stages, tables
from sparkrec.schemas import INTERACTIONS_SCHEMA, RECOMMENDATIONS_SCHEMA


def test_served_metrics_score_yesterdays_lists_against_today(spark, config) -> None:
    now = dt.datetime(2024, 3, 11, 9, 0)
    yesterday, today = dt.date(2024, 3, 10), dt.date(2024, 3, 11)
    shown = [
        (yesterday, u, r, i, 1.0 / r, "1", "run", "two_tower", now)
        for u, items in {"u1": ["a", "b"], "u2": ["c", "d"], "u3": ["a", "c"]}.items()
        for r, i in enumerate(items, start=1)
    ]
    tables.replace_partitions(spark.createDataFrame(shown, RECOMMENDATIONS_SCHEMA), config, "recommendations", "true")
    events = [  # u1 bought one of two shown items and one other; u2 came back for something else; u3 did not come
        ("e1", "u1", "b", "purchase", 1.0, 1.0, now, today, None, False, None, "f", today),
        ("e2", "u1", "x", "purchase", 1.0, 1.0, now, today, None, False, None, "f", today),
        ("e3", "u2", "y", "view", None, 0.1, now, today, None, False, None, "f", today),
        ("e4", "u3", "a", "purchase", 1.0, 1.0, now, yesterday, None, False, None, "f", yesterday),
    ]
    tables.replace_partitions(spark.createDataFrame(events, INTERACTIONS_SCHEMA), config, "interactions", "true")
    got = stages.served_metrics(spark, config, "2024-03-11", k=2)
    assert got["users"] == 2
    assert got["served_hit@2"] == pytest.approx(1 / 2)
    assert got["served_recall@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert stages.served_metrics(spark, config, "2024-03-20", k=2) == {}
