"""The day locks: one run per landing day, stale locks taken over, released whatever happens."""

import datetime as dt
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sparkrec.config import load_config
from sparkrec.locks import RunLockedError, day_locks, held_locks


@pytest.fixture
def config(tmp_path: Path):
    return load_config(None, [f"lakehouse.root={tmp_path / 'lakehouse'}"])


def test_a_second_run_of_a_day_fails_at_once_and_the_lock_goes_with_the_run(config) -> None:
    with day_locks(config, ["2024-03-10", "2024-03-09"], "backfill") as taken:
        assert [p.name for p in taken] == ["ds=2024-03-09.lock", "ds=2024-03-10.lock"]
        with pytest.raises(RunLockedError, match=r"2024-03-10 is being run by .*:\d+ \(backfill, started"):
            with day_locks(config, ["2024-03-10"], "clean"):
                pass
        with day_locks(config, ["2024-03-11"], "clean"):  # another day runs beside it
            assert len(held_locks(config)) == 3
    with pytest.raises(KeyError):
        with day_locks(config, ["2024-03-10"], "clean"):
            raise KeyError("a run that fails")
    assert held_locks(config) == []
    with day_locks(config, ["2024-03-10"], "clean"):
        pass


def write_lock(config, day: str, **info: object) -> Path:
    folder = Path(config.lakehouse.root) / "_locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ds={day}.lock"
    path.write_text(json.dumps(info))
    return path


def test_a_lock_whose_run_is_gone_is_taken_over(config) -> None:
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    earlier = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    here = socket.gethostname()
    write_lock(config, "2024-03-01", owner="x", host=here, pid=dead_pid, command="clean", expires=later)
    write_lock(config, "2024-03-02", owner="y", host="elsewhere", pid=1, command="clean", expires=earlier)
    with day_locks(config, ["2024-03-01", "2024-03-02"], "clean") as taken:
        assert all(json.loads(p.read_text())["command"] == "clean" for p in taken)
    # Another machine's run that has not expired: only its expiry can tell, so it holds.
    write_lock(config, "2024-03-03", owner="z:7", host="elsewhere", pid=7, command="nightly", expires=later)
    with pytest.raises(RunLockedError, match="2024-03-03 is being run by z:7 \\(nightly"):
        with day_locks(config, ["2024-03-03"], "clean"):
            pass
