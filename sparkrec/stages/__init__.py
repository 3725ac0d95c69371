"""The pipeline's stages, one module each: read tables, call the library's transforms, write tables,
track in MLflow.

Each ``run_*`` function is what a job in ``jobs/``, a ``sparkrec`` subcommand and a notebook call.
They take a session, the config and a date, and return a small dict of what they did.
"""

from sparkrec.stages.clean import run_clean
from sparkrec.stages.common import check_date, write_run_metrics
from sparkrec.stages.embed import run_embed
from sparkrec.stages.evaluate import run_evaluate, served_metrics
from sparkrec.stages.nightly import run_backfill, run_nightly
from sparkrec.stages.recommend import run_recommend
from sparkrec.stages.report import summary
from sparkrec.stages.train import run_train

__all__ = [
    "check_date",
    "run_backfill",
    "run_clean",
    "run_embed",
    "run_evaluate",
    "run_nightly",
    "run_recommend",
    "run_train",
    "served_metrics",
    "summary",
    "write_run_metrics",
]
