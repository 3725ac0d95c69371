"""Adapters: public data sets into the landing contract of DESIGN.md (raw events + item catalog).

Each adapter also writes ``<landing>/_dataset.yaml``: the data set's name and the cleaning rules
that fit it (a historical export lands at once, so MovieLens needs no lateness limit). ``sparkrec
experiment`` applies those rules; the nightly job keeps the rules of its own config.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import yaml

PROFILE_FILE = "_dataset.yaml"


def write_profile(landing_root: str | Path, name: str, clean: dict[str, Any], note: str) -> Path:
    """Write the data set profile of a landing zone."""
    path = Path(landing_root) / PROFILE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"name": name, "note": note, "clean": clean}
    path.write_text(yaml.safe_dump(body, sort_keys=False, allow_unicode=True))
    return path


def read_profile(landing_root: str | Path) -> dict[str, Any]:
    """The profile of a landing zone, or an empty one when the zone has none."""
    path = Path(landing_root) / PROFILE_FILE
    if not path.exists():
        return {}
    body = yaml.safe_load(path.read_text()) or {}
    if not isinstance(body, dict):
        raise ValueError(f"{path} must hold a mapping")
    return body


def write_jsonl(path: Path, lines: list[str]) -> None:
    """A gzip JSON-lines file, written atomically; the same lines give byte-identical files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
        out.write(("\n".join(lines) + "\n").encode("utf-8"))
    tmp.replace(path)
