"""Typed descriptions of a model and of its training, instead of dicts of settings.

- ``RankerSpec``: the ranker a model was trained with (its network's shape, how its collaborative
  score is made), saved with the model;
- ``ModelSpec``: everything a saved model says of itself (``model.json``), read with the defaults
  that keep older saved models loading: a feature a model was saved without is off for it;
- ``TrainingInputs`` and ``TrainingParams``: what a training process reads and how it trains. They
  cross into the training processes as plain dicts (``to_dict``/``from_dict``): a process unpickles
  its arguments before sparkrec is importable there.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from sparkrec.config import ModelConfig, RankerConfig, TrainConfig
from sparkrec.encoding import UserEncoding


@dataclass(frozen=True)
class RankerSpec:
    """The ranker's network shape and its collaborative score: EASE with text neighbours, or item-kNN
    (``baselines.fit_collaborative``)."""

    hidden: int
    cross_layers: int
    ease_lambda: float
    candidates: int
    text_weight: float = 0.0  # 0: plain EASE (models saved before text joined it)
    text_neighbours: int = 0
    recent_days: int = 0  # 0: no recent popularity feature (models saved before it existed)
    collaborative: str = "ease"  # "ease" or "knn" once trained ("auto" in a spec read from the config)
    neighbours: int = 0  # item-kNN's neighbours per item
    damping: float = 0.0  # item-kNN's damping of popular neighbours

    @classmethod
    def from_config(cls, train: TrainConfig) -> RankerSpec:
        rc = train.ranker
        text = train.model.text  # the "without text" ablation takes text out of EASE as well
        return cls(
            hidden=rc.hidden,
            cross_layers=rc.cross_layers,
            ease_lambda=rc.ease_lambda,
            candidates=rc.candidates,
            text_weight=rc.text_weight if text else 0.0,
            text_neighbours=rc.text_neighbours if text else 0,
            recent_days=rc.recent_days,
            collaborative=rc.collaborative,
            neighbours=rc.neighbours,
            damping=rc.damping,
        )

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RankerSpec:
        return cls(
            hidden=int(raw["hidden"]),
            cross_layers=int(raw["cross_layers"]),
            ease_lambda=float(raw["ease_lambda"]),
            candidates=int(raw["candidates"]),
            text_weight=float(raw.get("text_weight", 0.0)),
            text_neighbours=int(raw.get("text_neighbours", 0)),
            recent_days=int(raw.get("recent_days", 0)),
            collaborative=str(raw.get("collaborative", "ease")),
            neighbours=int(raw.get("neighbours", 0)),
            damping=float(raw.get("damping", 0.0)),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def recent(self) -> bool:
        """Whether the ranker reads each candidate's recent popularity."""
        return self.recent_days > 0

    def network(self) -> dict[str, Any]:
        """``DCNRanker`` arguments."""
        return {"hidden": self.hidden, "cross_layers": self.cross_layers, "recent": self.recent}


# ModelConfig fields saved with a model for the record; serving reads only those ModelSpec names.
_MODEL_SETTINGS = tuple(f.name for f in dataclasses.fields(ModelConfig))


@dataclass(frozen=True)
class ModelSpec:
    """What a trained model is (saved as ``model.json`` beside its weights)."""

    dim: int
    history_length: int
    text_model: str  # embed.model_name of the text vectors it was trained with
    trained_on: str = ""
    text: bool = True
    history_attention: bool = True
    attributes: dict[str, Any] | None = None  # attributes.AttributeSpec.to_dict(); None: no attributes
    item_vectors: dict[str, str] = field(default_factory=dict)  # extra vector columns: column -> source
    extra_dims: tuple[int, ...] = ()  # their sizes, in that order
    event_types: tuple[str, ...] = ()
    user_feature_names: tuple[str, ...] = ()
    ranker: RankerSpec | None = None
    settings: dict[str, Any] = field(default_factory=dict)  # the rest of the ModelConfig, for the record

    @classmethod
    def from_config(
        cls,
        model: ModelConfig,
        text_model: str,
        trained_on: str,
        attributes: dict[str, Any] | None,
        extra_dims: tuple[int, ...],
        event_types: tuple[str, ...],
        user_feature_names: tuple[str, ...],
        ranker: RankerSpec | None,
    ) -> ModelSpec:
        settings = dataclasses.asdict(model)
        return cls(
            dim=model.dim,
            history_length=model.history_length,
            text_model=text_model,
            trained_on=trained_on,
            text=model.text,
            history_attention=model.history_attention,
            attributes=attributes,
            item_vectors=dict(model.item_vectors),
            extra_dims=tuple(extra_dims),
            event_types=tuple(event_types),
            user_feature_names=tuple(user_feature_names),
            ranker=ranker,
            settings={k: v for k, v in settings.items() if k not in _SPEC_FIELDS},
        )

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelSpec:
        """A saved ``model.json`` (``item_ids`` aside); keys a model was saved without are off."""
        ranker = raw.get("ranker")
        attributes = raw.get("attributes")
        return cls(
            dim=int(raw["dim"]),
            history_length=int(raw["history_length"]),
            text_model=str(raw["text_model"]),
            trained_on=str(raw.get("trained_on", "")),
            text=bool(raw.get("text", True)),
            history_attention=bool(raw.get("history_attention", True)),
            # "attributes" held ModelConfig's switch before the code vocabulary replaced it
            attributes=attributes if isinstance(attributes, dict) else None,
            item_vectors=dict(raw.get("item_vectors") or {}),
            extra_dims=tuple(int(d) for d in raw.get("extra_dims") or ()),
            event_types=tuple(raw.get("event_types") or ()),
            user_feature_names=tuple(raw.get("user_feature_names") or ()),
            ranker=RankerSpec.from_dict(ranker) if ranker else None,
            settings={k: v for k, v in raw.items() if k in _MODEL_SETTINGS and k not in _SPEC_FIELDS},
        )

    def to_dict(self) -> dict[str, Any]:
        """``model.json``'s layout: the ModelConfig fields, then what training found."""
        return {
            **self.settings,
            "dim": self.dim,
            "history_length": self.history_length,
            "text": self.text,
            "history_attention": self.history_attention,
            "item_vectors": dict(self.item_vectors),
            "text_model": self.text_model,
            "trained_on": self.trained_on,
            "attributes": self.attributes,
            "ranker": self.ranker.to_dict() if self.ranker else None,
            "extra_dims": list(self.extra_dims),
            "event_types": list(self.event_types),
            "user_feature_names": list(self.user_feature_names),
        }

    @property
    def encoding(self) -> UserEncoding:
        """How the model's user tower reads a user."""
        return UserEncoding(self.history_length, self.event_types, self.user_feature_names)

    @property
    def extra_columns(self) -> dict[str, int]:
        """The extra item vector columns and their sizes, in input order."""
        return dict(zip(self.item_vectors, self.extra_dims, strict=True))


_SPEC_FIELDS = {f.name for f in dataclasses.fields(ModelSpec)}


@dataclass(frozen=True)
class TrainingInputs:
    """What every training process reads: Parquet converters (``loader.ParquetConverter`` JSON) and
    .npy files in the run's staging folder, and the sizes of the model's inputs."""

    examples: str  # training examples: target, history, history_types, user_features
    item_text: str  # .npy [V + 1, T]: the vocabulary's text vectors (row 0 zeros)
    log_q: str  # .npy [V + 1]: log of each index's share of training targets
    validation: str | None = None  # held-out examples, for early stopping
    lists: str | None = None  # the ranker's training lists (None: retrieval only)
    item_attrs: str | None = None  # .npy [V + 1, A] attribute codes
    attr_codes: int = 0  # how many attribute codes exist
    item_extra: str | None = None  # .npy [V + 1, E] extra vector columns
    extra_dims: tuple[int, ...] = ()
    event_types: tuple[str, ...] = ()  # the user tower's type vocabulary
    user_features: tuple[str, ...] = ()  # the user features it reads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainingInputs:
        return cls(
            **{
                **raw,
                "extra_dims": tuple(raw.get("extra_dims") or ()),
                "event_types": tuple(raw.get("event_types") or ()),
                "user_features": tuple(raw.get("user_features") or ()),
            }
        )


@dataclass(frozen=True)
class TrainingParams:
    """How to train: the ``train`` section of the config, the threads each process takes (0: its
    share of the machine) and the checkpoint folder ("": none)."""

    train: TrainConfig
    threads: int = 0
    checkpoint_dir: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainingParams:
        train = dict(raw["train"])
        model = ModelConfig(**train.pop("model"))
        ranker = RankerConfig(**train.pop("ranker"))
        return cls(TrainConfig(**train, model=model, ranker=ranker), int(raw["threads"]), str(raw["checkpoint_dir"]))

    def flat(self) -> dict[str, Any]:
        """The settings as MLflow params: the model's fields, the run's, and the ranker's as ``ranker_*``."""
        run = {k: v for k, v in dataclasses.asdict(self.train).items() if k not in ("model", "ranker")}
        ranker = {f"ranker_{k}": v for k, v in dataclasses.asdict(self.train.ranker).items()}
        extra: dict[str, Any] = {"threads": self.threads} if self.threads else {}
        if self.checkpoint_dir:
            extra["checkpoint_dir"] = self.checkpoint_dir
        return {**dataclasses.asdict(self.train.model), **run, **ranker, **extra}
