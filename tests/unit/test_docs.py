"""The README stays a user guide, and the reference pages say what the code does."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_is_a_guide_of_at_most_300_lines() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 300
    for page in ("configuration.md", "tables.md", "model.md", "cluster.md", "results.md"):
        assert (ROOT / "docs" / page).is_file(), page
        assert f"docs/{page}" in readme, f"the README points to docs/{page}"


def test_every_quarantine_reason_is_documented() -> None:
    from sparkrec.schemas import REASONS

    tables = (ROOT / "docs" / "tables.md").read_text(encoding="utf-8")
    assert [r for r in REASONS if f"`{r}`" not in tables] == []


def test_every_measurement_says_when_and_on_which_commit() -> None:
    """A section of docs/results.md that holds a table of numbers names its date and commit."""
    results = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    measured = [s for s in results.split("\n## ")[1:] if "\n|---" in s]
    assert len(measured) >= 5
    for section in measured:
        title = section.splitlines()[0]
        assert re.search(r"Measured on 20\d\d-\d\d-\d\d, commit `[0-9a-f]{7,}`", section), title
