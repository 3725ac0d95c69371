"""What an experiment compares, on which split, and the config it runs with."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparkrec import splits
from sparkrec.adapters import read_profile
from sparkrec.config import Config, with_values
from sparkrec.errors import UserError

MODELS = ("sparkrec", "popularity", "als", "ease", "knn")
SEEDED = ("sparkrec", "als")  # the others are deterministic: --repeat fits them once


# The towers and the ranker learn to find what the protocol hides. chrono: what the user does next (the
# nightly job's question). Every other protocol hides random interactions: a hidden item can be older
# than the history the user tower reads, so an example's history is the user's other items; the
# ranker's labels are a small random share of each user's items, so the EASE its training lists are
# built with (fitted on the rest) sees nearly all that the EASE it is served with sees. A key the user
# sets (--set, or the --conf file) is left alone.
PROTOCOL_TRAINING: dict[str, dict[str, Any]] = {
    "chrono": {"example_history": "earlier", "ranker.labels": "latest"},
    # a protocol that hides random interactions hides them across all the history: what sold lately
    # says nothing about them (ranker.recent_days off)
    "random": {
        "example_history": "others",
        "ranker.labels": "random",
        "ranker.label_fraction": 0.05,
        "ranker.recent_days": 0,
    },
}


@dataclass(frozen=True)
class ExperimentSpec:
    """What to compare, on which split."""

    landing: str
    split: str = "chrono"
    ratio: float = 0.75
    seed: int = 42
    k: int = 10
    models: tuple[str, ...] = MODELS
    repeat: int = 1
    holdout_days: int = 0  # chrono split; 0 = evaluate.holdout_days
    min_rating: float | None = None  # ratings below are not relevant in the test part
    fixed: tuple[str, ...] = ()  # config keys the user set (--set, --conf): the protocol leaves them alone

    def check(self) -> None:
        unknown = [m for m in self.models if m not in MODELS]
        if unknown or not self.models:
            raise UserError(f"unknown model(s) {unknown or '(none)'}; choose from {', '.join(MODELS)}")
        if self.split not in splits.PROTOCOLS:
            raise UserError(f"unknown split {self.split!r}; choose one of {', '.join(splits.PROTOCOLS)}")
        if not 0.0 < self.ratio < 1.0:
            raise UserError(f"--ratio must be between 0 and 1, got {self.ratio}")
        if self.k < 1 or self.repeat < 1 or self.holdout_days < 0:
            raise UserError(
                f"--k and --repeat must be positive, --holdout-days not negative: "
                f"k={self.k}, repeat={self.repeat}, holdout_days={self.holdout_days}"
            )


DATASET_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def experiment_lakehouse(config: Config, name: str) -> Path:
    """``<experiment.root>/<name>/lakehouse``: checked to stay under ``experiment.root``, which must
    neither be nor hold the production lakehouse (an experiment replaces its tables' days).

    Raises:
        UserError: a data set name outside ``[A-Za-z0-9_.-]+`` (or ``.``/``..``), or an experiment
            root that is or contains ``lakehouse.root``.
    """
    if not DATASET_NAME.match(name) or name in (".", ".."):
        raise UserError(f"data set name {name!r} (from _dataset.yaml or the folder) must match [A-Za-z0-9_.-]+")
    root = Path(config.experiment.root).resolve()
    production = Path(config.lakehouse.root).resolve() if "://" not in config.lakehouse.root else None
    if production is not None and (production == root or root in production.parents):
        raise UserError(
            f"experiment.root {root} is or contains lakehouse.root {production}: experiments would replace "
            "the production tables' days; point experiment.root elsewhere"
        )
    lakehouse = (root / name / "lakehouse").resolve()
    if root not in lakehouse.parents:
        raise UserError(f"data set {name!r} resolves outside experiment.root {root}")
    return lakehouse


def experiment_config(config: Config, spec: ExperimentSpec) -> tuple[Config, str]:
    """The config an experiment runs with, and the data set name (profile name or folder name)."""
    profile = read_profile(spec.landing)
    name = str(profile.get("name") or Path(spec.landing).resolve().name)
    values: dict[str, dict[str, Any]] = {
        "landing": {"root": spec.landing},
        "lakehouse": {"root": str(experiment_lakehouse(config, name))},
        "mlflow": {
            "experiment": config.experiment.mlflow_experiment,
            "registered_model": config.experiment.registered_model,
        },
    }
    if profile.get("clean"):
        values["clean"] = dict(profile["clean"])
    train: dict[str, Any] = {"ranker": {}}
    for key, value in PROTOCOL_TRAINING["chrono" if spec.split == "chrono" else "random"].items():
        if f"train.{key}" not in spec.fixed:
            section, _, leaf = key.rpartition(".")
            (train[section] if section else train)[leaf] = value
    values["train"] = train
    return with_values(config, values), name
