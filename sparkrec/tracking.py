"""MLflow around every stage: one run per stage, nested under a nightly or backfill run.

Each run records the config, the git commit and the Delta versions of the tables it read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from sparkrec.config import PROJECT_ROOT, Config
from sparkrec.config.secrets import redact_text, redacted

log = logging.getLogger(__name__)


def configure_mlflow(config: Config) -> str:
    """Point MLflow at the configured store and experiment; returns the experiment id."""
    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(config.mlflow.tracking_uri)
    if config.mlflow.tracking_uri.startswith("sqlite:"):
        mlflow.set_registry_uri(config.mlflow.tracking_uri)
    experiment = mlflow.get_experiment_by_name(config.mlflow.experiment)
    if experiment is None:
        location = config.mlflow.artifact_location
        if location and "://" not in location:
            Path(location).mkdir(parents=True, exist_ok=True)
            location = Path(location).as_uri()
        experiment_id = mlflow.create_experiment(config.mlflow.experiment, artifact_location=location or None)
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def git_commit(*ignored: str) -> str:
    """The project's git commit (with ``-dirty`` when the tree has changes outside the ``ignored``
    paths), or ``unknown``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *[f":(exclude){p}" for p in ignored]],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("SPARKREC_GIT_COMMIT", "unknown")


_STAGE_COUNTS: dict[str, dict[str, float]] = {}


def report_counts(run_id: str, **counts: float) -> None:
    """Row counts of the running stage ``run_id``, for the line that logs its end."""
    _STAGE_COUNTS.setdefault(run_id, {}).update({k: float(v) for k, v in counts.items()})


@contextlib.contextmanager
def stage_run(
    config: Config, stage: str, date: str, table_versions: dict[str, int | None] | None = None
) -> Iterator[str]:
    """Start an MLflow run for one stage of one date; yields the run id.

    Nested under the active run (nightly, backfill) when there is one. The log gets a line when the
    stage starts and one when it ends (or fails), with its duration and the rows it reported (``report_counts``).
    """
    import mlflow

    configure_mlflow(config)
    nested = mlflow.active_run() is not None
    log.info("stage %s %s: started", stage, date)
    started = time.perf_counter()
    with mlflow.start_run(run_name=f"{stage} {date}", nested=nested) as run:
        run_id = run.info.run_id
        mlflow.set_tags(
            {
                "sparkrec.stage": stage,
                "sparkrec.date": date,
                "mlflow.source.git.commit": git_commit(),
            }
        )
        mlflow.log_param("date", date)
        mlflow.log_dict(redacted(config.to_dict()), "config.json")
        if table_versions:
            log_table_versions(table_versions)
        try:
            yield run_id
        except BaseException as err:
            _STAGE_COUNTS.pop(run_id, None)
            log.info(
                "stage %s %s: failed after %.1f s (%s)", stage, date, time.perf_counter() - started, type(err).__name__
            )
            raise
        rows = ", ".join(f"{k}={v:.0f}" for k, v in _STAGE_COUNTS.pop(run_id, {}).items())
        log.info(
            "stage %s %s: finished in %.1f s%s",
            stage,
            date,
            time.perf_counter() - started,
            f" ({rows})" if rows else "",
        )


def log_table_versions(versions: dict[str, int | None]) -> None:
    """Record the Delta version of each table read, as params ``table_version.<table>``."""

    log_params({f"table_version.{t}": ("absent" if v is None else v) for t, v in versions.items()})


def log_params(params: dict[str, object]) -> None:
    """MLflow params, with any secret in their values masked (``config.secrets``)."""
    import mlflow

    mlflow.log_params({k: redact_text(str(v)) for k, v in params.items()})


def mlflow_metric_name(name: str) -> str:
    """MLflow refuses '@' in metric names: ``ndcg@10`` is logged as ``ndcg_at_10``."""
    return name.replace("@", "_at_")


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    import mlflow

    mlflow.log_metrics({mlflow_metric_name(k): float(v) for k, v in metrics.items()}, step=step)
