"""How the driver tells a training process that died below Python: the traceback it left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sparkrec.models.training import rank_errors

DIE = (
    "import os, sys, faulthandler\n"
    "from sparkrec.models.training import record_faults\n"
    "record_faults(sys.argv[1])\n"
    "{how}\n"
)


def _rank_dies(folder: Path, rank: int, how: str) -> int:
    """A process that records its faults as a training rank does, then dies ``how``; its exit status."""
    env = {**os.environ, "RANK": str(rank)}
    script = DIE.format(how=how)
    return subprocess.run([sys.executable, "-c", script, str(folder)], env=env, check=False).returncode


def test_a_crashed_process_leaves_its_python_traceback(tmp_path: Path) -> None:
    assert _rank_dies(tmp_path, 1, "faulthandler._sigsegv()") == -signal.SIGSEGV
    (tmp_path / "error-rank0.txt").write_text("RuntimeError: Connection closed by peer")  # what its peer wrote
    died, peer = rank_errors(str(tmp_path), 2)
    fault = tmp_path / "fault-rank1.txt"
    assert died == f"rank 1 died without a Python error (Fatal Python error: Segmentation fault (traceback in {fault}))"
    assert peer == "rank 0: RuntimeError: Connection closed by peer"
    assert 'File "<string>", line 4' in fault.read_text()  # where Python was when it crashed


def test_a_killed_process_is_named_beside_one_torchrun_terminated(tmp_path: Path) -> None:
    assert _rank_dies(tmp_path, 0, "os.kill(os.getpid(), 9)") == -signal.SIGKILL  # leaves no trace
    assert _rank_dies(tmp_path, 1, "os.kill(os.getpid(), 15)") == -signal.SIGTERM
    terminated = tmp_path / "terminated-rank1.txt"
    assert rank_errors(str(tmp_path), 2) == [
        "rank 0 died without a Python error (killed or out of memory)",
        f"rank 1 died without a Python error (terminated by SIGTERM (traceback in {terminated}))",
    ]


def test_the_killed_process_comes_first_and_the_oom_killer_is_named(tmp_path: Path) -> None:
    assert _rank_dies(tmp_path, 0, "os.kill(os.getpid(), 15)") == -signal.SIGTERM
    assert _rank_dies(tmp_path, 1, "os.kill(os.getpid(), 9)") == -signal.SIGKILL  # leaves no trace
    (tmp_path / "error-rank2.txt").write_text("RuntimeError: Connection closed by peer")
    terminated = tmp_path / "terminated-rank0.txt"
    assert rank_errors(str(tmp_path), 3, oom_kills=1) == [  # the cause first, what followed from it last
        "rank 1 died without a Python error (killed; the kernel's out-of-memory killer ran 1 time(s) meanwhile)",
        "rank 2: RuntimeError: Connection closed by peer",
        f"rank 0 died without a Python error (terminated by SIGTERM (traceback in {terminated}))",
    ]
    assert 'File "<string>", line 4' in terminated.read_text()


MISMATCH = (
    "import sys, torch, torch.distributed as dist\n"
    "from sparkrec.models.training import record_faults\n"
    "record_faults(sys.argv[1])\n"
    "rank = int(sys.argv[2])\n"
    "dist.init_process_group('gloo', init_method=f'file://{sys.argv[1]}/store', rank=rank, world_size=2)\n"
    "try:  # the ranks disagree on the collective\n"
    "    dist.all_reduce(torch.ones(4 if rank == 0 else 1000))\n"
    "except RuntimeError as err:  # as train_two_tower keeps it\n"
    "    open(f'{sys.argv[1]}/error-rank{rank}.txt', 'w').write(f'RuntimeError: {err}')\n"
    "    raise\n"
)


def test_a_process_that_native_code_aborted_names_its_reason(tmp_path: Path) -> None:
    """Two real gloo processes whose all-reduces differ in size: gloo's C++ throws in its own thread,
    so the receiving process aborts with no Python error, and its peer loses the connection."""
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", MISMATCH, str(tmp_path), str(rank)],
            env={**os.environ, "RANK": str(rank)},
            stderr=subprocess.DEVNULL,
        )
        for rank in (0, 1)
    ]
    assert [p.wait(timeout=120) for p in ranks] == [-signal.SIGABRT, 1]
    died, peer = rank_errors(str(tmp_path), 2)  # the cause first
    assert died.startswith("rank 0 died without a Python error (Fatal Python error: Aborted: terminate called after")
    assert "what(): [enforce fail at" in died and "op.preamble.length <= op.nbytes. 1000 vs 4" in died
    assert died.endswith(f"(traceback in {tmp_path / 'fault-rank0.txt'}))")
    assert peer.startswith("rank 1: RuntimeError: ") and "Connection reset by peer" in peer
    assert "Connection reset by peer" in (tmp_path / "stderr-rank1.txt").read_text()  # its traceback, copied


@pytest.mark.parametrize("how", ["pass", "sys.exit(0)"])
def test_a_process_that_ends_normally_leaves_no_trace(tmp_path: Path, how: str) -> None:
    assert _rank_dies(tmp_path, 0, how) == 0
    assert rank_errors(str(tmp_path), 1) == []
