"""``sparkrec experiment``: every model on the same split of a landing zone, measured the same way.

The landing zone is cleaned and embedded into the experiment's own lakehouse
(``experiment.root``/<data set>), with the cleaning rules of the zone's ``_dataset.yaml``. The
interactions are split by one of ``splits.PROTOCOLS``; a validation split is carved from the train
part by the same protocol (the holdout days before the test days, or seed + 1), and the baselines'
grids from ``conf/`` are tried on it: the setting with the best validation ``ndcg@k`` is refitted on
the whole train part (``tuning``). Every model is then scored on the test part through
``evaluation`` (same users, same catalogue, seen items removed) and logged as a nested MLflow run
(``runner``); two-tower models are registered under ``experiment.registered_model``, never the
production name, and no alias of the production model moves.
"""

from sparkrec.experiment.report import aggregate, format_table
from sparkrec.experiment.runner import run_experiment
from sparkrec.experiment.spec import MODELS, PROTOCOL_TRAINING, SEEDED, ExperimentSpec, experiment_config
from sparkrec.experiment.tuning import als_grid, tunes_collaborative

__all__ = [
    "MODELS",
    "PROTOCOL_TRAINING",
    "SEEDED",
    "ExperimentSpec",
    "aggregate",
    "als_grid",
    "experiment_config",
    "format_table",
    "run_experiment",
    "tunes_collaborative",
]
