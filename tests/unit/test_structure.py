"""The package-shape check that ``make lint`` runs: sizes and import cycles, found on a tiny package."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

from check_structure import problems  # noqa: E402


def test_an_import_cycle_is_found_even_through_an_import_inside_a_function(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from pkg import c\n")
    (package / "c.py").write_text("from . import a\n")
    assert problems(package) == ["import cycle: pkg.a -> pkg.c -> pkg.sub.b"]
    (package / "c.py").write_text("import math\n")
    assert problems(package) == []


def test_long_functions_and_modules_are_named(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(80))
    (package / "__init__.py").write_text(f"def long():\n{body}\n" + "\n" * 420)
    found = problems(package)
    assert any("long is 81 lines" in p for p in found) and any("501 lines" in p for p in found)


def test_sparkrec_itself_keeps_its_shape() -> None:
    assert problems(Path(__file__).resolve().parents[2] / "sparkrec") == []
