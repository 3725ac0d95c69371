"""MovieLens (GroupLens) ratings into landing files: the 100K, 1M and latest(-small) layouts.

MovieLens may not be redistributed: point this at your own copy. Layouts recognised in ``--input``:

- 100K: ``u.data`` (user, item, rating, unix time; tab-separated) and ``u.item`` (pipe-separated,
  Latin-1: id, title, release dates, IMDb URL, then 19 genre flags)
- 1M: ``ratings.dat`` and ``movies.dat`` (``::``-separated, Latin-1; genres joined by ``|``)
- latest / latest-small: ``ratings.csv``, ``movies.csv`` (quoted titles) and, when present,
  ``tags.csv`` (folded into the item text)

Every rating becomes a ``rating`` event (value = the stars) with event id ``<user>:<item>``. The
export lands at once, on the day of its newest rating, so the profile turns the lateness limit off,
and the bot rule too (people rate dozens of films a minute);
ratings are never dropped here: the clean stage judges them. Item text = title + genres (+ tags).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sparkrec.adapters import write_jsonl, write_profile

GENRES_100K = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
# Ratings files of the two older layouts: (file, field separator).
SEPARATED = {"100k": ("u.data", "\t"), "1m": ("ratings.dat", "::")}
LAYOUTS = {"100k": ("u.data", "u.item"), "1m": ("ratings.dat", "movies.dat"), "latest": ("ratings.csv", "movies.csv")}


@dataclass(frozen=True)
class ImportSummary:
    layout: str
    events: int
    items: int
    days: list[str]


@dataclass(frozen=True)
class Movie:
    item_id: str
    title: str
    genres: list[str]


def detect_layout(folder: Path) -> str:
    """``100k``, ``1m`` or ``latest`` from the files present; ValueError naming what was expected."""
    for layout, files in LAYOUTS.items():
        if all((folder / f).is_file() for f in files):
            return layout
    expected = "; ".join(f"{name}: {' + '.join(files)}" for name, files in LAYOUTS.items())
    raise ValueError(f"{folder} holds no MovieLens layout (expected {expected})")


def read_ratings(folder: Path, layout: str) -> Iterator[tuple[str, str, str, str]]:
    """(user, item, rating, unix seconds) as text, in file order."""
    if layout in SEPARATED:
        name, separator = SEPARATED[layout]
        with open(folder / name, encoding="latin-1") as handle:
            for line in handle:
                if line.strip():
                    user, item, rating, ts = line.rstrip("\n").split(separator)[:4]
                    yield user, item, rating, ts
    else:
        with open(folder / "ratings.csv", encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                yield row["userId"], row["movieId"], row["rating"], row["timestamp"]


def read_movies(folder: Path, layout: str) -> list[Movie]:
    if layout == "100k":
        movies = []
        with open(folder / "u.item", encoding="latin-1") as handle:
            for line in handle:
                if not line.strip():
                    continue
                fields = line.rstrip("\n").split("|")
                flags = fields[5 : 5 + len(GENRES_100K)]
                movies.append(
                    Movie(fields[0], fields[1], [g for g, f in zip(GENRES_100K, flags, strict=False) if f == "1"])
                )
        return movies
    if layout == "1m":
        with open(folder / "movies.dat", encoding="latin-1") as handle:
            rows = [line.rstrip("\n").split("::") for line in handle if line.strip()]
        return [Movie(r[0], r[1], _genres(r[2])) for r in rows]
    with open(folder / "movies.csv", encoding="utf-8", newline="") as handle:
        return [Movie(r["movieId"], r["title"], _genres(r["genres"])) for r in csv.DictReader(handle)]


def _genres(text: str) -> list[str]:
    return [g for g in text.split("|") if g and g != "(no genres listed)"]


def read_tags(folder: Path) -> dict[str, list[str]]:
    """Distinct tags per movie (first spelling, case-insensitive), in order of first use."""
    path = folder / "tags.csv"
    tags: dict[str, list[str]] = {}
    if not path.is_file():
        return tags
    with open(path, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            tag = (row.get("tag") or "").strip()
            known = tags.setdefault(row["movieId"], [])
            if tag and tag.lower() not in {t.lower() for t in known}:
                known.append(tag)
    return tags


def import_movielens(folder: str | Path, landing_root: str | Path) -> ImportSummary:
    """Write ``events/ds=D/movielens.jsonl.gz``, ``items/ds=D/movies.jsonl.gz`` and the profile;
    D is the day (UTC) of the newest rating. Re-running overwrites the same files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"MovieLens folder not found: {folder}")
    layout = detect_layout(folder)
    events, newest = [], None
    for user, item, rating, ts in read_ratings(folder, layout):
        seconds = int(ts) if ts.strip().isdigit() else None
        if seconds is not None:
            newest = max(newest or seconds, seconds)
        events.append(
            json.dumps(
                {
                    "event_id": f"{user.strip()}:{item.strip()}",
                    "user_id": user.strip(),
                    "item_id": item.strip(),
                    "event_type": "rating",
                    "ts": ts.strip(),
                    "value": rating.strip(),
                }
            )
        )
    if newest is None:
        raise ValueError(f"{folder}: no ratings with a timestamp")
    day = dt.datetime.fromtimestamp(newest, dt.timezone.utc).date().isoformat()
    tags = read_tags(folder) if layout == "latest" else {}
    updated = f"{day}T00:00:00Z"
    items = [
        json.dumps(
            {
                "item_id": m.item_id,
                "title": m.title,
                "category": ", ".join(m.genres) or None,
                "tags": ", ".join(tags.get(m.item_id, [])) or None,
                "updated_at": updated,
            },
            ensure_ascii=False,
        )
        for m in read_movies(folder, layout)
    ]
    root = Path(landing_root)
    write_jsonl(root / "events" / f"ds={day}" / "movielens.jsonl.gz", events)
    write_jsonl(root / "items" / f"ds={day}" / "movies.jsonl.gz", items)
    write_profile(
        root,
        f"movielens-{layout}",
        {"late_days": 0, "non_product_items": "", "bot_max_events_per_hour": 0},
        "MovieLens export: lands at once on the day of its newest rating; every rating is an interaction",
    )
    return ImportSummary(layout, len(events), len(items), [day])
