"""What TorchDistributor starts in every training process, and how the driver reads a failure.

``train_two_tower`` is top-level, imports torch (through ``loop``) inside, takes paths and small
arguments as plain dicts (``specs.TrainingInputs``/``TrainingParams``) and returns only small
results; the examples reach each process through the Parquet converter.
"""

from __future__ import annotations

import faulthandler
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import IO, Any

# This process's trace files (``record_faults``), open while it lives.
_faults: IO[str] | None = None
_terminated: IO[str] | None = None


class TrainingFailedError(RuntimeError):
    """A training process failed; the checkpoint of its last finished epoch (if any) is kept."""


def train_two_tower(inputs: dict[str, Any], output_dir: str, params: dict[str, Any]) -> dict[str, Any]:
    """``loop.train`` in this process; an error is also written to ``<output_dir>/error-rank<N>.txt``
    (TorchDistributor reports only that a process failed), so the driver can say what went wrong; a
    death below Python leaves a traceback (``record_faults``)."""
    if "LOCAL_RANK" in os.environ:  # a process torchrun started, not a caller's own
        record_faults(output_dir)
    try:
        from sparkrec.models.loop import train
        from sparkrec.models.specs import TrainingInputs, TrainingParams

        return train(TrainingInputs.from_dict(inputs), output_dir, TrainingParams.from_dict(params))
    except BaseException as err:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"error-rank{os.environ.get('RANK', '0')}.txt").write_text(f"{type(err).__name__}: {err}")
        raise


def checkpoint_epoch(checkpoint_dir: str) -> int:
    """The last epoch saved under ``checkpoint_dir`` (0: none)."""
    import torch

    path = Path(checkpoint_dir) / "last.pt"
    if not path.exists():
        return 0
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])


def record_faults(output_dir: str) -> None:
    """Leave this process's Python traceback under ``output_dir`` if it dies below Python: a fatal
    signal (SIGSEGV, SIGBUS, SIGFPE, SIGABRT, SIGILL) in ``fault-rank<N>.txt``, a SIGTERM (what
    torchrun sends the other processes when one fails) in ``terminated-rank<N>.txt``; and a copy of
    its standard error in ``stderr-rank<N>.txt``, where native code says why it aborted (C++'s
    ``terminate called after throwing ...`` with its ``what()``)."""
    global _faults, _terminated
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rank = os.environ.get("RANK", "0")
    _faults = (out / f"fault-rank{rank}.txt").open("w")
    _terminated = (out / f"terminated-rank{rank}.txt").open("w")
    faulthandler.enable(file=_faults, all_threads=True)
    faulthandler.register(signal.SIGTERM, file=_terminated, all_threads=True, chain=True)
    _copy_stderr(out / f"stderr-rank{rank}.txt")


def _copy_stderr(path: Path) -> None:
    """Send this process's file descriptor 2 through ``tee``, into ``path`` as well as where it went.
    Native code writes there directly, so no Python-level hook sees it. ``tee`` lives in a session
    of its own: the SIGTERM torchrun sends this process's group leaves it to copy the last lines, and
    it ends when this process does (even killed), at the end of its input."""
    tee = shutil.which("tee")
    if tee is None:
        return
    copier = subprocess.Popen([tee, "-a", str(path)], stdin=subprocess.PIPE, stdout=2, start_new_session=True)
    assert copier.stdin is not None
    os.dup2(copier.stdin.fileno(), 2)
    copier.stdin.close()  # descriptor 2 is now the pipe's only writer here


def rank_errors(output_dir: str, world: int, oom_kills: int = 0) -> list[str]:
    """What the failed ranks left, causes first: ranks that died outside Python (a crash, with
    faulthandler's first line and what native code printed before it; no trace at all: killed, and
    whether the kernel's out-of-memory killer ran ``oom_kills`` times meanwhile), then the Python
    errors, then the ranks torchrun stopped with a SIGTERM once another had failed. Empty when no
    rank left a trace."""
    folder = Path(output_dir)
    written = {int(p.stem.removeprefix("error-rank")): p.read_text() for p in folder.glob("error-rank*.txt")}
    crashed = {
        r: f"{lines[0]}{_native_error(folder, r)} (traceback in {path})" for r, path, lines in _traces(folder, "fault")
    }
    terminated = {r: f"terminated by SIGTERM (traceback in {path})" for r, path, _ in _traces(folder, "terminated")}
    if not (written or crashed or terminated):
        return []
    killed = (
        f"killed; the kernel's out-of-memory killer ran {oom_kills} time(s) meanwhile"
        if oom_kills
        else "killed or out of memory"
    )
    silent = [r for r in range(world) if r not in written]
    died = [f"rank {r} died without a Python error ({crashed.get(r, killed)})" for r in silent if r not in terminated]
    stopped = [f"rank {r} died without a Python error ({terminated[r]})" for r in silent if r in terminated]
    return died + [f"rank {r}: {written[r]}" for r in sorted(written)] + stopped


def _traces(folder: Path, kind: str) -> list[tuple[int, Path, list[str]]]:
    """The non-empty ``<kind>-rank<N>.txt`` files of ``folder``: rank, path, lines."""
    found = []
    for path in sorted(folder.glob(f"{kind}-rank*.txt")):
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            found.append((int(path.stem.removeprefix(f"{kind}-rank")), path, lines))
    return found


def _native_error(folder: Path, rank: int) -> str:
    """What native code said before rank ``rank`` aborted, from the copy of its standard error: the
    last ``terminate called ...`` line and its ``what():`` (``": <both>"``); empty when there is none."""
    path = folder / f"stderr-rank{rank}.txt"
    if not path.is_file():
        return ""
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith("terminate called")]
    if not starts:
        return ""
    said = lines[starts[-1] : starts[-1] + 2]
    words = " ".join(said if len(said) > 1 and said[1].startswith("what():") else said[:1]).split()
    return ": " + " ".join(words)


def oom_kills() -> int:
    """Processes the kernel's out-of-memory killer has stopped on this machine since boot (0 where
    ``/proc/vmstat`` does not say)."""
    try:
        for line in Path("/proc/vmstat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
    except OSError:
        pass
    return 0
