"""One run per landing day: a lock file per day under the lakehouse, with its owner and expiry.

``<lakehouse.root>/_locks/ds=YYYY-MM-DD.lock`` is created with ``O_CREAT | O_EXCL`` (atomic on a
local disk and on NFS v3 and later), holding who took it (host, pid, command) and when it expires
(``lakehouse.run_lock_hours``). A second run of the same day fails at once with the owner's line. A
lock whose run is gone is taken over: it expired, or its process on this host no longer exists.
``sparkrec maintain`` does not VACUUM while any run holds a lock.

Lakehouse roots that are URIs (``s3a://``, ``abfss://``) have no atomic create-if-absent here, so
runs on them are not locked: schedule one run per day there.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from sparkrec.config import Config
from sparkrec.config.settings import URI_SCHEME
from sparkrec.errors import UserError


class RunLockedError(UserError):
    """Another run holds the day."""


def lock_folder(config: Config) -> Path | None:
    """Where the day locks live; None for a lakehouse on an object store (no locking there)."""
    root = config.lakehouse.root
    root = root.removeprefix("file://") if root.startswith("file:///") else root
    return None if URI_SCHEME.match(root) else Path(root) / "_locks"


@contextlib.contextmanager
def day_locks(config: Config, days: list[str], command: str) -> Iterator[list[Path]]:
    """Hold the lock of every day in ``days`` while the block runs; released after it, even on failure.

    Raises:
        RunLockedError: another live run holds one of the days (none of them is taken then).
    """
    folder = lock_folder(config)
    taken: list[Path] = []
    try:
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            owner = _owner(command, config.lakehouse.run_lock_hours)
            for day in sorted(set(days)):
                taken.append(_take(folder / f"ds={day}.lock", owner, day))
        yield taken
    finally:
        for path in taken:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def held_locks(config: Config) -> list[str]:
    """The live locks now held, one line each (owner, command, since); stale ones are left out."""
    folder = lock_folder(config)
    if folder is None or not folder.is_dir():
        return []
    return [
        f"{path.stem} by {info.get('owner')} ({info.get('command')}, since {info.get('started')})"
        for path in sorted(folder.glob("*.lock"))
        if (info := _read(path)) is not None and not _stale(info)
    ]


def _owner(command: str, hours: int) -> dict[str, str | int]:
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    return {
        "owner": f"{socket.gethostname()}:{os.getpid()}",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "command": command,
        "started": now.isoformat(),
        "expires": (now + dt.timedelta(hours=hours)).isoformat(),
    }


def _take(path: Path, owner: dict[str, str | int], day: str) -> Path:
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            info = _read(path)
            if info is None and _age_s(path) < 60:
                info = {"owner": "another run", "command": "starting", "started": "just now", "expires": "?"}
            if info is not None and not _stale(info):
                raise RunLockedError(
                    f"{day} is being run by {info.get('owner')} ({info.get('command')}, started "
                    f"{info.get('started')}, lock until {info.get('expires')}); wait for it, or delete "
                    f"{path} if that run is gone"
                ) from None
            _break(path)  # stale (or unreadable, half-written): take it over
            continue
        with os.fdopen(fd, "w") as out:
            json.dump(owner, out)
        return path
    raise RunLockedError(f"{day}: another run took the lock {path} at the same moment; run again")


def _read(path: Path) -> dict[str, str | int] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _age_s(path: Path) -> float:
    try:
        return dt.datetime.now().timestamp() - path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def _stale(info: dict[str, str | int]) -> bool:
    if info.get("expires") == "?":
        return False  # a lock being written right now
    try:
        expired = dt.datetime.fromisoformat(str(info["expires"])) < dt.datetime.now(dt.timezone.utc)
    except (KeyError, ValueError):
        return True
    if expired:
        return True
    if info.get("host") != socket.gethostname():
        return False  # another machine's run: only its expiry tells
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError):
        return False
    return False


def _break(path: Path) -> None:
    """Remove a stale lock; a rename first, so two runs that both found it stale do not both take it."""
    tomb = path.with_name(f"{path.name}.{os.getpid()}.stale")
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, tomb)
        tomb.unlink()
