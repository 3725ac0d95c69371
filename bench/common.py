"""What the benchmarks share: peak-memory sampling, the machine description, writing the results."""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from pathlib import Path
from typing import Any

import psutil


class PeakMemory:
    """Largest RSS while the block runs: of this process tree summed (``peak``), of this process alone
    (``self_peak``: the driver's Python), of its Java children (``jvm_peak``: the Spark JVM) and of its
    Python children (``python_peak``: Spark's Python workers, where UDFs run, and training processes)."""

    def __init__(self) -> None:
        self.peak = 0
        self.self_peak = 0
        self.jvm_peak = 0
        self.python_peak = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        me = psutil.Process(os.getpid())
        while not self._stop.is_set():
            total = python = jvm = own = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    rss = proc.memory_info().rss
                    total += rss
                    if proc.pid == me.pid:
                        own = rss
                    elif proc.name().startswith("python"):
                        python += rss
                    elif proc.name() == "java":
                        jvm += rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self.self_peak = max(self.self_peak, own)
            self.jvm_peak = max(self.jvm_peak, jvm)
            self.python_peak = max(self.python_peak, python)
            time.sleep(0.2)

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def scratch_config(work: Path, *extra: str) -> Any:
    """The default config with every table, landing file and MLflow run under the scratch folder ``work``."""
    from sparkrec.config import load_config

    return load_config(
        None,
        [
            f"lakehouse.root={work / 'lakehouse'}",
            f"landing.root={work / 'landing'}",
            f"mlflow.tracking_uri=sqlite:///{work / 'mlflow.db'}",
            f"mlflow.artifact_location={work / 'mlartifacts'}",
            "spark.show_progress=false",
            *extra,
        ],
    )


def machine(spark: Any, **extra: object) -> dict[str, object]:
    """The machine and Spark setting a result was measured on."""
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "spark": spark.version,
        "master": spark.sparkContext.master,
        **extra,
    }


def write_report(path: str | Path, report: dict[str, Any]) -> None:
    """``report`` as JSON at ``path``, stamped with when and on which commit it was measured."""
    from sparkrec.tracking import git_commit

    stamp = {"measured_on": time.strftime("%Y-%m-%d"), "commit": git_commit()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({**stamp, **report}, indent=2) + "\n")
    print(f"wrote {path}")
