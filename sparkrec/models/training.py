"""What TorchDistributor starts in every training process, and how the driver reads a failure.

``train_two_tower`` is top-level, imports torch (through ``loop``) inside, takes paths and small
arguments as plain dicts (``specs.TrainingInputs``/``TrainingParams``) and returns only small
results; the examples reach each process through the Parquet converter.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class TrainingFailedError(RuntimeError):
    """A training process failed; the checkpoint of its last finished epoch (if any) is kept."""


def train_two_tower(inputs: dict[str, Any], output_dir: str, params: dict[str, Any]) -> dict[str, Any]:
    """``loop.train`` in this process; an error is also written to ``<output_dir>/error-rank<N>.txt``
    (TorchDistributor reports only that a process failed), so the driver can say what went wrong."""
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


def rank_errors(output_dir: str, world: int) -> list[str]:
    """What the failed ranks wrote, rank order; ranks that wrote nothing while others did died outside
    Python (killed, out of memory) and come first."""
    written = {int(p.stem.removeprefix("error-rank")): p.read_text() for p in Path(output_dir).glob("error-rank*.txt")}
    if not written:
        return []
    silent = [r for r in range(world) if r not in written]
    died = (
        [f"rank {', '.join(map(str, silent))} died without a Python error (killed or out of memory)"] if silent else []
    )
    return died + [f"rank {r}: {written[r]}" for r in sorted(written)]
