import datetime as dt

import pytest

from sparkrec.splits import split


@pytest.fixture(scope="module")
def events(spark):
    rows = []
    for item, n in (("a", 8), ("b", 4), ("c", 1), ("d", 3)):
        for j in range(n):
            day = dt.date(2024, 3, 1 + j)
            rows.append((f"{item}{j}", f"u{j % 3}", item, day))
    return spark.createDataFrame(rows, "event_id string, user_id string, item_id string, event_date date")


def test_stratified_by_item_keeps_ceil_ratio_of_each_item(events) -> None:
    train, test = split(events, "stratified-by-item", ratio=0.75, seed=7)
    per_item = {r["item_id"]: r["count"] for r in train.groupBy("item_id").count().collect()}
    assert per_item == {"a": 6, "b": 3, "c": 1, "d": 3}  # ceil(0.75 * n)
    ids = [r[0] for r in train.select("event_id").collect()] + [r[0] for r in test.select("event_id").collect()]
    assert sorted(ids) == sorted(r[0] for r in events.select("event_id").collect())


def test_the_seed_decides_the_split(events) -> None:
    def train_ids(seed: int) -> set[str]:
        return {r[0] for r in split(events, "random-by-user", ratio=0.5, seed=seed)[0].select("event_id").collect()}

    assert train_ids(1) == train_ids(1)
    assert any(train_ids(1) != train_ids(s) for s in (2, 3, 4))


def test_chrono_holds_out_the_last_days(events) -> None:
    train, test = split(events, "chrono", last_day="2024-03-08", holdout_days=2)
    assert {r[0] for r in test.select("event_date").distinct().collect()} == {dt.date(2024, 3, 7), dt.date(2024, 3, 8)}
    assert train.where("event_date > DATE'2024-03-06'").count() == 0


def test_unknown_split_and_bad_ratio_are_clear_errors(events) -> None:
    with pytest.raises(ValueError, match="unknown split"):
        split(events, "by-moon-phase")
    with pytest.raises(ValueError, match="between 0 and 1"):
        split(events, "stratified-by-item", ratio=1.5)
