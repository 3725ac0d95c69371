"""The MLflow model registry: aliases, loading, and the promotion gate.

Training registers every model and points the ``candidate`` alias at it. The evaluate stage scores
the candidate and the current ``champion`` on the same held-out days and moves ``champion`` to the
candidate only when its ``ndcg@k`` is not worse than the champion's by more than
``evaluate.promotion_tolerance``. The recommend stage serves ``recommend.model_alias`` (``champion``).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparkrec.config import Config


class ModelMissingError(LookupError):
    """No registered model under the requested alias."""


@dataclass(frozen=True)
class PromotionDecision:
    promoted: bool
    candidate_version: str
    champion_version: str | None  # the champion before the decision; None when there was none
    candidate_score: float
    champion_score: float | None
    reason: str


def alias_version(config: Config, alias: str) -> str | None:
    """Version behind ``alias`` of the configured registered model, or None."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias(config.mlflow.registered_model, alias).version)
    except MlflowException:
        return None


def load_model(config: Config, alias: str) -> tuple[Any, str]:
    """The registered model under ``alias``, unwrapped (``LoadedTwoTower``), and its version."""

    version = alias_version(config, alias)
    if version is None:
        raise ModelMissingError(
            f"no model {config.mlflow.registered_model}@{alias} in {config.mlflow.tracking_uri}; "
            "run the train stage (and evaluate, which promotes the champion) first"
        )
    return load_version(config, version), version


def load_version(config: Config, version: str) -> Any:
    """A registered model version as a ``LoadedTwoTower``, from its weights (tensors only), JSON and
    .npy files: nothing in the registry is unpickled (``python_model.pkl`` is left unread), so write
    access to the artifact store is not code execution on the driver."""
    import mlflow
    import yaml

    from sparkrec.models.packaging import load_model_dir

    uri = f"models:/{config.mlflow.registered_model}/{version}"
    with tempfile.TemporaryDirectory(prefix="sparkrec-model-") as scratch:
        local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=scratch))
        flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["python_function"]
        return load_model_dir(local / flavor["artifacts"]["model_dir"]["path"])


def decide_promotion(
    candidate_version: str,
    candidate_score: float,
    champion_version: str | None,
    champion_score: float | None,
    tolerance: float,
) -> PromotionDecision:
    """Promote when there is no champion, or the candidate is not worse by more than ``tolerance``."""
    if champion_version is None or champion_score is None:
        return PromotionDecision(True, candidate_version, None, candidate_score, None, "no champion yet")
    if champion_version == candidate_version:
        return PromotionDecision(
            True,
            candidate_version,
            champion_version,
            candidate_score,
            champion_score,
            "candidate is already the champion",
        )
    if candidate_score >= champion_score - tolerance:
        return PromotionDecision(
            True,
            candidate_version,
            champion_version,
            candidate_score,
            champion_score,
            f"{candidate_score:.4f} >= {champion_score:.4f} - {tolerance}",
        )
    return PromotionDecision(
        False,
        candidate_version,
        champion_version,
        candidate_score,
        champion_score,
        f"{candidate_score:.4f} < {champion_score:.4f} - {tolerance}",
    )


def apply_promotion(config: Config, decision: PromotionDecision, metric: str, day: str = "") -> None:
    """Move the champion alias when promoted; tag the candidate version with its score and the outcome.

    A version promoted for ``day`` also gets the tags ``promoted_on`` (the day) and
    ``replaced_champion`` (the version it replaced, or ``none``): the recommend stage puts the alias
    back (``revert_promotion``) when that day's lists fail the publish gate.
    """
    import mlflow

    client = mlflow.MlflowClient()
    name = config.mlflow.registered_model
    key = metric.replace("@", "_at_")
    client.set_model_version_tag(
        name, decision.candidate_version, f"validation_{key}", f"{decision.candidate_score:.6f}"
    )
    client.set_model_version_tag(
        name,
        decision.candidate_version,
        "promotion",
        ("promoted: " if decision.promoted else "rejected: ") + decision.reason,
    )
    if decision.promoted:
        if day and decision.champion_version != decision.candidate_version:
            client.set_model_version_tag(name, decision.candidate_version, "promoted_on", day)
            client.set_model_version_tag(
                name, decision.candidate_version, "replaced_champion", decision.champion_version or "none"
            )
        client.set_registered_model_alias(name, config.mlflow.champion_alias, decision.candidate_version)


def revert_promotion(config: Config, version: str, day: str) -> str | None:
    """Put the champion alias back where it was before ``version`` was promoted for ``day``: the
    day's lists failed the publish gate, so the model nobody checked is not served tomorrow either.

    Returns the version the alias points at again (``"none"``: the alias is removed, there was no
    champion before); None when ``version`` was not promoted for ``day`` (nothing to put back).
    """
    import mlflow

    client = mlflow.MlflowClient()
    name, alias = config.mlflow.registered_model, config.mlflow.champion_alias
    tags = client.get_model_version(name, version).tags
    if tags.get("promoted_on") != day or alias_version(config, alias) != version:
        return None
    before = tags.get("replaced_champion", "none")
    if before == "none":
        client.delete_registered_model_alias(name, alias)
    else:
        client.set_registered_model_alias(name, alias, before)
    client.set_model_version_tag(name, version, "promotion", f"reverted: the lists of {day} failed the publish gate")
    client.delete_model_version_tag(name, version, "promoted_on")
    return before
