"""What each setting's value may be, beside its type: ``Rule`` and the checks that apply it.

Every field of the config dataclasses (``settings``) that is not a plain switch carries a ``Rule``:
a range, a set of choices or a pattern. ``load_config`` checks every value when the config loads, so
a bad value fails before the first stage runs, with a message that names its key.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A configuration file, override or value that cannot be used."""


@dataclass(frozen=True)
class Rule:
    """Bounds, choices or a pattern for one setting. A list or mapping setting applies the rule to
    each of its entries (values, for a mapping) and ``min_items`` to itself."""

    at_least: float | None = None
    above: float | None = None
    at_most: float | None = None
    below: float | None = None
    choices: tuple[str, ...] = ()
    pattern: str = ""  # a regular expression the whole text must match
    meaning: str = ""  # what the pattern asks for, in words
    min_items: int = 0

    def problem(self, value: Any) -> str | None:
        """Why ``value`` breaks the rule (``must be …, got …``), or None when it keeps it."""
        if isinstance(value, bool):
            return None
        if isinstance(value, int | float):
            low = (self.at_least is None or value >= self.at_least) and (self.above is None or value > self.above)
            high = (self.at_most is None or value <= self.at_most) and (self.below is None or value < self.below)
            return None if low and high else f"must be {self.bounds()}, got {value!r}"
        if isinstance(value, str):
            if self.choices and value not in self.choices:
                return f"must be one of {', '.join(self.choices)}, got {value!r}"
            if self.pattern and not re.fullmatch(self.pattern, value):
                return f"must be {self.meaning or 'text matching ' + self.pattern}, got {value!r}"
        return None

    def bounds(self) -> str:
        parts = []
        if self.at_least is not None:
            parts.append(f"at least {_number(self.at_least)}")
        if self.above is not None:
            parts.append(f"above {_number(self.above)}")
        if self.at_most is not None:
            parts.append(f"at most {_number(self.at_most)}")
        if self.below is not None:
            parts.append(f"below {_number(self.below)}")
        return " and ".join(parts)

    def describe(self) -> str:
        """The rule in a few words, for the configuration reference."""
        parts = [self.bounds()] if self.bounds() else []
        if self.choices:
            parts.append("one of " + ", ".join(f"`{c}`" for c in self.choices))
        if self.pattern:
            parts.append(self.meaning or f"matches `{self.pattern}`")
        if self.min_items:
            parts.append(f"at least {self.min_items} entr{'y' if self.min_items == 1 else 'ies'}")
        return "; ".join(parts)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else str(x)


def check_value(rule: Rule, value: Any, key: str) -> None:
    """Raise ``ConfigError`` naming ``key`` (or the entry of it) when ``value`` breaks ``rule``."""
    if isinstance(value, dict | list | tuple):
        if len(value) < rule.min_items:
            raise ConfigError(f"{key} needs at least {rule.min_items} entr{'y' if rule.min_items == 1 else 'ies'}")
        entries = value.items() if isinstance(value, dict) else enumerate(value)
        for name, entry in entries:
            where = f"{key}.{name}" if isinstance(value, dict) else f"{key}[{name}]"
            check_value(Rule(**{**rule.__dict__, "min_items": 0}), entry, where)
        return
    problem = rule.problem(value)
    if problem:
        raise ConfigError(f"{key} {problem}")


def check_finite(value: float, key: str) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
