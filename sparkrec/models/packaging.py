"""The trained model as one folder (weights, vocabulary, text vectors) and as an MLflow pyfunc.

The folder carries the ID vocabulary with the weights, so a loaded model maps item ids itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

META = "model.json"
WEIGHTS = "weights.pt"
ITEM_TEXT = "item_text.npy"
ITEM_ATTRS = "item_attrs.npy"
ITEM_EXTRA = "item_extra.npy"


@dataclass
class LoadedTwoTower:
    """A two-tower model ready to score: the torch module and its vocabulary."""

    model: Any  # sparkrec.models.two_tower.TwoTower, in eval mode
    item_ids: list[str]  # vocabulary: item_ids[i - 1] has index i; index 0 is "not in vocabulary"
    meta: dict[str, Any]

    @property
    def index(self) -> dict[str, int]:
        return {item: i + 1 for i, item in enumerate(self.item_ids)}

    def item_vectors(
        self, item_ids: list[str], text: np.ndarray, attrs: np.ndarray | None = None, extra: np.ndarray | None = None
    ) -> np.ndarray:
        """Vectors [n, D] for any items: vocabulary items use their ID, all use their text and (for a
        model trained with them) their attribute codes (``attribute_codes``) and extra vector columns
        (``extra`` [n, E], ``extra_dims`` side by side; zeros: none)."""
        import torch

        index = self.index
        ids = torch.tensor([index.get(i, 0) for i in item_ids], dtype=torch.long)
        codes = None if attrs is None or self.model.item_attrs is None else torch.from_numpy(np.asarray(attrs))
        columns = (
            None
            if extra is None or self.model.item_extra is None
            else torch.from_numpy(np.asarray(extra, dtype=np.float32))
        )
        with torch.inference_mode():
            return self.model.items(ids, torch.from_numpy(np.asarray(text, dtype=np.float32)), codes, columns).numpy()

    @property
    def extra_columns(self) -> dict[str, int]:
        """The extra item vector columns the model was trained with, and their sizes (in input order)."""
        return dict(zip(self.meta.get("item_vectors") or {}, self.meta.get("extra_dims") or (), strict=True))

    def attribute_codes(self, categories: list[str | None], prices: list[float | None]) -> np.ndarray | None:
        """Attribute codes of any items with the vocabulary the model was trained with (None: no attributes)."""
        from sparkrec.models.attributes import AttributeSpec, encode

        if self.model.item_attrs is None:
            return None
        return encode(AttributeSpec.from_dict(self.meta.get("attributes")), categories, prices)


def write_model_dir(
    path: str | Path,
    weights: str | Path,
    item_ids: list[str],
    item_text: np.ndarray,
    meta: dict[str, Any],
    item_attrs: np.ndarray | None = None,
    item_extra: np.ndarray | None = None,
) -> Path:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    (out / WEIGHTS).write_bytes(Path(weights).read_bytes())
    np.save(out / ITEM_TEXT, item_text.astype(np.float32))
    if item_attrs is not None:
        np.save(out / ITEM_ATTRS, item_attrs.astype(np.int64))
    if item_extra is not None:
        np.save(out / ITEM_EXTRA, item_extra.astype(np.float32))
    (out / META).write_text(json.dumps({**meta, "item_ids": item_ids}))
    return out


def load_model_dir(path: str | Path) -> LoadedTwoTower:
    import torch

    from sparkrec.models.ranker import saved_shape
    from sparkrec.models.two_tower import TwoTower

    folder = Path(path)
    meta = json.loads((folder / META).read_text())
    from sparkrec.models.attributes import AttributeSpec

    item_text = torch.from_numpy(np.load(folder / ITEM_TEXT))
    attrs = torch.from_numpy(np.load(folder / ITEM_ATTRS)) if (folder / ITEM_ATTRS).exists() else None
    codes = AttributeSpec.from_dict(meta.get("attributes")).size if attrs is not None else 0
    extra = torch.from_numpy(np.load(folder / ITEM_EXTRA)) if (folder / ITEM_EXTRA).exists() else None
    model = TwoTower(
        item_text,
        int(meta["dim"]),
        int(meta["history_length"]),
        item_attrs=attrs,
        attr_codes=codes,
        text=bool(meta.get("text", True)),
        history_attention=bool(meta.get("history_attention", True)),
        ranker=saved_shape(meta["ranker"]) if meta.get("ranker") else None,
        item_extra=extra,
        extra_dims=tuple(meta.get("extra_dims") or ()),
        event_types=len(meta.get("event_types") or ()),
        user_features=len(meta.get("user_feature_names") or ()),
    )
    model.load_state_dict(torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True))
    model.eval()
    item_ids = meta.pop("item_ids")
    return LoadedTwoTower(model=model, item_ids=item_ids, meta=meta)


def signature() -> Any:
    """Input ``history`` (list of item ids) and, optional, ``history_types`` (its event types) and
    ``user_features`` (``features.USER_FEATURES``); output ``item_ids`` and ``scores``; params ``k`` and
    ``exclude_history`` (the history's own items are not returned)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema(
            [
                ColSpec(Array("string"), "history"),
                ColSpec(Array("string"), "history_types", required=False),
                ColSpec(Array("double"), "user_features", required=False),
            ]
        ),
        outputs=Schema([ColSpec(Array("string"), "item_ids"), ColSpec(Array("double"), "scores")]),
        params=ParamSchema([ParamSpec("k", "long", 10), ParamSpec("exclude_history", "boolean", True)]),
    )


class TwoTowerPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: input ``history`` (list of item ids, most recent first) -> top ``k`` items, none of
    the history's own (as the recommend stage never lists a seen item; ``exclude_history: False``
    keeps them).

    ``predict`` ranks the vocabulary items for each history; batch scoring over the whole catalogue
    (cold items included) is the recommend stage's job, which unwraps this model. A model trained with
    event types or user features reads them from ``history_types`` and ``user_features`` where given
    (without them, a user is scored on the history alone).
    """

    def load_context(self, context: Any) -> None:
        self.loaded = load_model_dir(context.artifacts["model_dir"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        import torch

        from sparkrec.models.scoring import event_type_codes

        k = int((params or {}).get("k", 10))
        exclude = bool((params or {}).get("exclude_history", True))
        loaded = self.loaded
        index = loaded.index
        length = int(loaded.meta["history_length"])
        code = event_type_codes(loaded.meta.get("event_types"))
        given_types = model_input["history_types"] if "history_types" in model_input.columns else None
        rows, type_rows, seen = [], [], []
        for i, history in enumerate(model_input["history"]):
            known = [index.get(str(item), 0) for item in list(history)]
            seen.append([j for j in known if j > 0])
            ids = known[:length]
            rows.append(ids + [0] * (length - len(ids)))
            named = [] if given_types is None else _listed(given_types.iloc[i])[: len(ids)]
            type_rows.append([code.get(str(t), 0) for t in named] + [0] * (length - len(named)))
        hist = torch.tensor(rows, dtype=torch.long)
        types = torch.tensor(type_rows, dtype=torch.long) if code else None
        feats, given = self._user_features(model_input)
        with torch.inference_mode():
            users = loaded.model.users(loaded.model.item_vectors(hist), hist > 0, types)
            if given.any():  # a row without user features is scored on its history alone
                mine = torch.from_numpy(given)
                users[mine] = loaded.model.users(
                    loaded.model.item_vectors(hist[mine]),
                    hist[mine] > 0,
                    None if types is None else types[mine],
                    torch.from_numpy(feats[given]),
                )
            all_ids = torch.arange(1, len(loaded.item_ids) + 1)
            scores = users @ loaded.model.item_vectors(all_ids).T
            if exclude:
                for i, items in enumerate(seen):
                    scores[i, torch.tensor(items, dtype=torch.long) - 1] = -torch.inf
            top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        kept = [torch.isfinite(row) for row in top.values]  # fewer than k items outside the history: the rest
        return pd.DataFrame(
            {
                "item_ids": [
                    [loaded.item_ids[int(i)] for i in row[ok]] for row, ok in zip(top.indices, kept, strict=True)
                ],
                "scores": [row[ok].tolist() for row, ok in zip(top.values, kept, strict=True)],
            }
        )

    def _user_features(self, model_input: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """([rows, F] features, bool [rows]: the row has them) for a model trained with user features."""
        tower = self.loaded.model.users
        width = 0 if tower.features is None else tower.features.in_features
        feats = np.zeros((len(model_input), width), dtype=np.float32)
        given = np.zeros(len(model_input), dtype=bool)
        if width == 0 or "user_features" not in model_input.columns:
            return feats, given
        for i, value in enumerate(model_input["user_features"]):
            f = _listed(value)
            if not f:
                continue
            if len(f) != width:
                names = ", ".join(self.loaded.meta.get("user_feature_names") or [])
                raise ValueError(f"user_features of row {i} has {len(f)} values; the model reads {width} ({names})")
            feats[i], given[i] = np.asarray(f, dtype=np.float32), True
        return feats, given


def _listed(value: Any) -> list[Any]:
    """A pandas cell of an optional list column as a list ([]: missing)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return list(value)
