"""Writes docs/configuration.md from the config dataclasses (sparkrec/config/settings.py): every key
with its default, what values it takes, and the comment above it. The dataclasses are the one place
the defaults live; this keeps the reference true to them (a test compares the two).

    python tools/config_reference.py            # rewrite docs/configuration.md
    python tools/config_reference.py --check    # exit 1 when the file is out of date
"""

from __future__ import annotations

import ast
import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sparkrec.config import Config  # noqa: E402
from sparkrec.config import settings as settings_module  # noqa: E402

SETTINGS = ROOT / "sparkrec" / "config" / "settings.py"
OUTPUT = ROOT / "docs" / "configuration.md"
HEADER = """# Configuration reference

Generated from `sparkrec/config/settings.py` by `tools/config_reference.py`; do not edit by hand.

A config is YAML: `conf/local.yaml` (the embedded default) holds only what it changes from the
defaults below, and a file can `extends:` another. `--set key=value` overrides any key
(`--set spark.conf.spark.executor.memory=2g` for Spark's own settings). `${ENV_VAR}` or
`${ENV_VAR:-default}` in a value reads the environment (secrets belong there). Every value is
checked when the config loads, before any stage runs: an unknown key, a value of the wrong type,
outside its range, not finite, or not among its choices ends with `sparkrec: error:` naming the key.
Relative paths are made absolute against the working directory.
"""


def comments() -> dict[tuple[str, str], str]:
    """(class, field) -> the comment lines right above the field in settings.py, joined."""
    lines = SETTINGS.read_text().splitlines()
    out = {}
    for node in ast.parse(SETTINGS.read_text()).body:
        if not isinstance(node, ast.ClassDef):
            continue
        previous = ""
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                text, i = [], item.lineno - 2
                while i >= 0 and lines[i].strip().startswith("#"):
                    text.insert(0, lines[i].strip().lstrip("#").strip())
                    i -= 1
                # a field right under another shares its comment (enabled / weight, hidden / cross_layers)
                previous = " ".join(text) or previous
                out[(node.name, item.target.id)] = previous
    return out


def sections(cls: type, prefix: str) -> list[tuple[str, type]]:
    """(dotted section, dataclass) of ``cls`` and every section nested in it, in field order."""
    found = [(prefix, cls)] if prefix else []
    hints = typing.get_type_hints(cls, vars(settings_module))
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            found += sections(hints[f.name], f"{prefix}.{f.name}" if prefix else f.name)
    return found


def shown(value: Any) -> str:
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    if isinstance(value, tuple | list):
        return "`[" + ", ".join(str(v) for v in value) + "]`"
    if isinstance(value, dict):
        return "`{}`" if not value else "`{" + ", ".join(f"{k}: {shown(v).strip('`')}" for k, v in value.items()) + "}`"
    return f"`{value}`"


def reference() -> str:
    notes = comments()
    parts = [HEADER]
    for name, cls in sections(Config, ""):
        hints = typing.get_type_hints(cls, vars(settings_module))
        rows = []
        defaults = cls()
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                continue
            rule = f.metadata.get("rule")
            rows.append(
                f"| `{name}.{f.name}` | {shown(getattr(defaults, f.name))} | {rule.describe() if rule else ''} | "
                f"{notes.get((cls.__name__, f.name), '').replace('|', '/')} |"
            )
        parts += [f"## `{name}`", "", "| key | default | values | meaning |", "|---|---|---|---|", *rows, ""]
    return "\n".join(parts)


def main(argv: list[str]) -> int:
    text = reference()
    if "--check" in argv:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is out of date: run python tools/config_reference.py")
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
