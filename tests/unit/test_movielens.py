"""The MovieLens adapter on tiny copies of each layout, and its cleaning rules in a real clean run."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from sparkrec.adapters import read_profile
from sparkrec.adapters.movielens import detect_layout, import_movielens
from tests.movielens_fixtures import write_1m, write_100k, write_latest

DAY = "2001-09-09"


def _lines(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.mark.parametrize(
    ("writer", "layout", "genres"),
    [
        (write_100k, "100k", "Comedy, Romance"),
        (write_1m, "1m", "Comedy, Romance"),
        (write_latest, "latest", "Comedy, Romance"),
    ],
)
def test_each_layout_lands_every_rating_and_the_catalog(tmp_path: Path, writer, layout: str, genres: str) -> None:
    source = writer(tmp_path / "ml")
    assert detect_layout(source) == layout
    summary = import_movielens(source, tmp_path / "landing")
    assert (summary.layout, summary.events, summary.items, summary.days) == (layout, 4, 3, [DAY])
    events = _lines(tmp_path / "landing" / "events" / f"ds={DAY}" / "movielens.jsonl.gz")
    assert [(e["event_id"], e["event_type"], float(e["value"]), e["ts"]) for e in events][:2] == [
        ("1:10", "rating", 5.0, "978300760"),
        ("1:20", "rating", 3.0, "978300820"),
    ]
    items = {i["item_id"]: i for i in _lines(tmp_path / "landing" / "items" / f"ds={DAY}" / "movies.jsonl.gz")}
    assert items["10"]["title"] == "Amélie (2001)"  # Latin-1 decoded
    assert items["10"]["category"] == genres
    assert items["20"]["category"] == "Action, Crime, Thriller"
    profile = read_profile(tmp_path / "landing")
    assert profile["name"] == f"movielens-{layout}"
    assert (profile["clean"]["late_days"], profile["clean"]["bot_max_events_per_hour"]) == (0, 0)  # both rules off


def test_latest_layout_keeps_quoted_titles_and_folds_distinct_tags(tmp_path: Path) -> None:
    import_movielens(write_latest(tmp_path / "ml"), tmp_path / "landing")
    items = {i["item_id"]: i for i in _lines(tmp_path / "landing" / "items" / f"ds={DAY}" / "movies.jsonl.gz")}
    assert items["30"]["title"] == "Good, the Bad and the Ugly, The (1966)"
    assert items["30"]["category"] is None  # "(no genres listed)"
    assert items["10"]["tags"] == "Paris, whimsical"  # "paris" is the same tag


def test_a_folder_without_a_layout_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "ratings.txt").write_text("1,2,3\n")
    with pytest.raises(ValueError, match=r"no MovieLens layout \(expected 100k: u.data \+ u.item"):
        import_movielens(tmp_path, tmp_path / "landing")


def test_reimport_gives_identical_files(tmp_path: Path) -> None:
    source = write_1m(tmp_path / "ml")
    import_movielens(source, tmp_path / "landing")
    first = (tmp_path / "landing" / "events" / f"ds={DAY}" / "movielens.jsonl.gz").read_bytes()
    import_movielens(source, tmp_path / "landing")
    assert (tmp_path / "landing" / "events" / f"ds={DAY}" / "movielens.jsonl.gz").read_bytes() == first
