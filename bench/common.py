"""What the benchmarks share: peak-memory sampling, the machine description, writing the results."""

from __future__ import annotations

import json
import os
import platform
import re
import threading
import time
from pathlib import Path
from typing import Any, Self

import psutil


class _Sampler:
    """Calls ``sample()`` every 0.2 s on a thread while the ``with`` block runs."""

    def sample(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(0.2)

    def __enter__(self) -> Self:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class PeakMemory(_Sampler):
    """Largest RSS while the block runs: of this process tree summed (``peak``), of this process alone
    (``self_peak``: the driver's Python), of its Java children (``jvm_peak``: the Spark JVM) and of its
    Python children (``python_peak``: Spark's Python workers, where UDFs run, and training processes)."""

    def __init__(self) -> None:
        self.peak = 0
        self.self_peak = 0
        self.jvm_peak = 0
        self.python_peak = 0

    def sample(self) -> None:
        me = psutil.Process(os.getpid())
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


class ClusterMemory(_Sampler):
    """Largest RSS of a ``spark-submit`` run on a standalone cluster on this machine, apart: the
    driver's JVM (the spark-submit process, ``driver_jvm_peak``), the driver's Python (its Python
    children, ``driver_peak``) and each executor (``executors``: id -> {jvm, python}): its JVM and
    the Python processes under it (UDF workers, training processes)."""

    EXECUTOR = "org.apache.spark.executor.CoarseGrainedExecutorBackend"

    def __init__(self, driver_pid: int) -> None:
        self.driver_pid = driver_pid
        self.driver_jvm_peak = 0
        self.driver_peak = 0
        self.executors: dict[str, dict[str, int]] = {}

    def sample(self) -> None:
        try:
            driver = psutil.Process(self.driver_pid)
            self.driver_jvm_peak = max(self.driver_jvm_peak, driver.memory_info().rss)
            python = sum(_python_rss(c) for c in driver.children(recursive=True))
            self.driver_peak = max(self.driver_peak, python)
        except psutil.Error:
            pass
        for proc in psutil.process_iter(["cmdline"]):
            cmd = proc.info["cmdline"] or []
            if self.EXECUTOR not in cmd or "--executor-id" not in cmd:
                continue
            peak = self.executors.setdefault(cmd[cmd.index("--executor-id") + 1], {"jvm": 0, "python": 0})
            try:
                peak["jvm"] = max(peak["jvm"], proc.memory_info().rss)
                peak["python"] = max(peak["python"], sum(_python_rss(c) for c in proc.children(recursive=True)))
            except psutil.Error:
                pass


def _python_rss(proc: psutil.Process) -> int:
    try:
        return proc.memory_info().rss if proc.name().startswith("python") else 0
    except psutil.Error:
        return 0


STAGE_LINE = re.compile(r"stage (\w+) \S+: finished in ([\d.]+) s")


def stage_times(log: str) -> dict[str, float]:
    """Each stage's seconds, from the ``stage NAME DAY: finished in S s`` lines of a driver log."""
    return {m.group(1): float(m.group(2)) for m in STAGE_LINE.finditer(log)}


def scratch_sets(work: Path) -> list[str]:
    """The ``--set`` items that put every table, landing file and MLflow run under the scratch folder ``work``."""
    return [
        f"lakehouse.root={work / 'lakehouse'}",
        f"landing.root={work / 'landing'}",
        f"mlflow.tracking_uri=sqlite:///{work / 'mlflow.db'}",
        f"mlflow.artifact_location={work / 'mlartifacts'}",
        "spark.show_progress=false",
    ]


def scratch_config(work: Path, *extra: str) -> Any:
    """The default config with every table, landing file and MLflow run under the scratch folder ``work``."""
    from sparkrec.config import load_config

    return load_config(None, [*scratch_sets(work), *extra])


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


def measured_commit() -> str:
    """The commit the benchmark's code is at: ``-dirty`` for changes outside ``bench/results``, which
    a run itself writes (a ladder rewrites its report after every rung)."""
    from sparkrec.tracking import git_commit

    return git_commit("bench/results")


def write_report(path: str | Path, report: dict[str, Any]) -> None:
    """``report`` as JSON at ``path``, stamped with when and on which commit it was measured."""
    stamp = {"measured_on": time.strftime("%Y-%m-%d"), "commit": measured_commit()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({**stamp, **report}, indent=2) + "\n")
    print(f"wrote {path}")
