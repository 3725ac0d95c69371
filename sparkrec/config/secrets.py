"""Credentials kept out of everything sparkrec logs, prints or sends to MLflow.

A value is a secret when its key looks like a credential (``password``, ``secret``, ``token``,
``key``, ... as a word of the key: ``spark.hadoop.fs.s3a.secret.key``), when it is the password of a
URI (``scheme://user:password@host``) or a credential query parameter (``?password=``, ``&token=``),
or when it came from an environment variable whose name looks like one (``${AWS_SECRET_ACCESS_KEY}``).
The config loader registers the last two kinds (``remember``), so ``redact_text`` also masks them where
they turn up without their key: an error message, a path, a log line.

``redacted`` masks a config mapping; ``redact_text`` any text; ``SecretFilter`` every log record.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

MASK = "***"
_WORD = r"(?:password|passwd|pwd|secret|token|credentials?|api[_-]?key|apikey|access[_-]?key|private[_-]?key|key|auth)"
# A key or environment variable name with a credential word in it, between separators.
SECRET_NAME = re.compile(rf"(?:^|[._-]){_WORD}(?:$|[._-])", re.IGNORECASE)
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):(?P<password>[^@/\s]+)@")
_QUERY = re.compile(
    r"(?P<head>[?&;][A-Za-z0-9_.-]*(?:password|passwd|pwd|secret|token|key|sig|signature|credential)[A-Za-z0-9_.-]*=)"
    r"(?P<value>[^&;\s'\"]+)",
    re.IGNORECASE,
)
# Shorter values are not remembered: masking every "1" or "on" would mask the logs instead.
_SHORTEST = 4
_remembered: set[str] = set()


def is_secret_name(name: str) -> bool:
    """Whether a config key or environment variable name names a credential."""
    return bool(SECRET_NAME.search(name))


def remember(value: object) -> None:
    """Mask ``value`` wherever ``redact_text`` sees it from now on (secrets read from the environment)."""
    if isinstance(value, str) and len(value) >= _SHORTEST:
        _remembered.add(value)


def remember_in(node: object, key: str = "") -> None:
    """Remember every secret of a config mapping: values under credential keys and URI passwords."""
    if isinstance(node, Mapping):
        for k, v in node.items():
            remember_in(v, str(k))
    elif isinstance(node, list | tuple):
        for v in node:
            remember_in(v, key)
    elif isinstance(node, str):
        if is_secret_name(key):
            remember(node)
        for match in _USERINFO.finditer(node):
            remember(match.group("password"))
        for match in _QUERY.finditer(node):
            remember(match.group("value"))


def redact_text(text: str) -> str:
    """``text`` with URI passwords, credential query parameters and remembered secrets masked."""
    text = _USERINFO.sub(lambda m: f"{m.group('head')}:{MASK}@", text)
    text = _QUERY.sub(lambda m: f"{m.group('head')}{MASK}", text)
    for value in sorted(_remembered, key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    return text


def redacted(node: Any, key: str = "") -> Any:
    """A copy of a config mapping (``Config.to_dict()``) safe to log: secrets masked, shapes kept."""
    if isinstance(node, Mapping):
        return {k: redacted(v, str(k)) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return type(node)(redacted(v, key) for v in node)
    if isinstance(node, str):
        return MASK if node and is_secret_name(key) else redact_text(node)
    return node


class SecretFilter(logging.Filter):
    """Masks secrets in every record a handler writes (message, arguments and traceback text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        safe = redact_text(message)
        if safe != message:
            record.msg, record.args = safe, ()
        if record.exc_info and record.exc_info[1] is not None:
            formatted = logging.Formatter().formatException(record.exc_info)
            if redact_text(formatted) != formatted:
                record.msg = f"{record.msg}\n{redact_text(formatted)}"
                record.exc_info, record.exc_text = None, None
        return True


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Add ``SecretFilter`` to every handler of ``logger`` (the root logger by default)."""
    logger = logger or logging.getLogger()
    for handler in logger.handlers:
        if not any(isinstance(f, SecretFilter) for f in handler.filters):
            handler.addFilter(SecretFilter())
