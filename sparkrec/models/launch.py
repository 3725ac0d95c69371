"""The function TorchDistributor starts in every training process.

It travels by value (cloudpickle), so a training process can start before sparkrec is importable
there. Under ``spark-submit --py-files sparkrec-<version>.zip`` the package sits in each executor's
working folder, on the path of Spark's own Python workers but not on the path of the processes that
torchrun starts from them; ``in_rank`` adds the ``.zip`` packages of its working folder to the path,
then calls the training function by name.
"""

from __future__ import annotations

from typing import Any


def in_rank(target: str, *args: Any) -> Any:
    """Call ``target`` (``module:function``) with ``args`` in this training process."""
    import glob
    import importlib
    import os
    import sys

    for package in sorted(glob.glob("*.zip")):  # what Spark itself treats as Python packages (.zip, .egg)
        path = os.path.abspath(package)
        if path not in sys.path:
            sys.path.append(path)  # after what is installed: an installed sparkrec wins
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)(*args)
