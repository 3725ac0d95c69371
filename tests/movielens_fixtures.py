"""Tiny MovieLens copies in each layout (MovieLens itself may not be shipped)."""

from __future__ import annotations

from pathlib import Path

# (user, item, rating, unix seconds): the newest rating is on 2001-09-09 (1000000000 = 01:46:40 UTC),
# the rest months earlier.
RATINGS = [
    ("1", "10", "5", "978300760"),
    ("1", "20", "3", "978300820"),
    ("2", "10", "4", "978301000"),
    ("2", "30", "1", "1000000000"),
]


def write_100k(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("".join("\t".join(r) + "\n" for r in RATINGS), encoding="latin-1")
    flags = lambda *on: "|".join("1" if i in on else "0" for i in range(19))  # noqa: E731
    (folder / "u.item").write_text(
        f"10|Amélie (2001)|01-Jan-2001||http://x|{flags(5, 14)}\n"
        f"20|Heat (1995)|01-Jan-1995||http://y|{flags(1, 6, 16)}\n"
        f"30|Unknown (1990)|01-Jan-1990||http://z|{flags(0)}\n",
        encoding="latin-1",
    )
    return folder


def write_1m(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text("".join("::".join(r) + "\n" for r in RATINGS), encoding="latin-1")
    (folder / "movies.dat").write_text(
        "10::Amélie (2001)::Comedy|Romance\n20::Heat (1995)::Action|Crime|Thriller\n30::Unknown (1990)::unknown\n",
        encoding="latin-1",
    )
    return folder


def write_latest(
    folder: Path,
    ratings: list[tuple[str, str, str, str]] | None = None,
    movies: list[tuple[str, str, str]] | None = None,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = ratings if ratings is not None else [(u, i, f"{float(r):.1f}", t) for u, i, r, t in RATINGS]
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "".join(",".join(r) + "\n" for r in rows))
    films = (
        movies
        if movies is not None
        else [
            ("10", "Amélie (2001)", "Comedy|Romance"),
            ("20", "Heat (1995)", "Action|Crime|Thriller"),
            ("30", "Good, the Bad and the Ugly, The (1966)", "(no genres listed)"),
        ]
    )
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n" + "".join(f'{m},"{t}",{g}\n' for m, t, g in films), encoding="utf-8"
    )
    (folder / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n1,10,Paris,999990000\n2,10,paris,999990001\n2,10,whimsical,999990002\n",
        encoding="utf-8",
    )
    return folder


def write_two_communities(folder: Path, users: int = 40, items: int = 24) -> Path:
    """A latest-layout set with structure: odd users like odd films, even users even films.

    Each user rates every film of their side, one per minute (MovieLens users rate that fast), over
    ten days, starting at another film than the others; the chrono and stratified splits both leave
    every user with training history and every test film with other users' ratings in training.
    """
    ratings = []
    start = 1_500_000_000
    for u in range(1, users + 1):
        side = [i for i in range(1, items + 1) if i % 2 == u % 2]
        mine = side[u % len(side) :] + side[: u % len(side)]  # each user reaches the films in another order
        for n, i in enumerate(mine):
            day = (n * 10) // len(mine)
            ratings.append((str(u), str(i), "4.0", str(start + day * 86400 + u * 60 + n)))
    movies = [(str(i), f"Film {i} ({1990 + i})", "Comedy" if i % 2 else "Drama") for i in range(1, items + 1)]
    return write_latest(folder, ratings, movies)
