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

    def item_vectors(self, item_ids: list[str], text: np.ndarray, attrs: np.ndarray | None = None,
                     extra: np.ndarray | None = None) -> np.ndarray:
        """Vectors [n, D] for any items: vocabulary items use their ID, all use their text and (for a
        model trained with them) their attribute codes (``attribute_codes``) and extra vector columns
        (``extra`` [n, E], ``extra_dims`` side by side; zeros: none)."""
        import torch

        index = self.index
        ids = torch.tensor([index.get(i, 0) for i in item_ids], dtype=torch.long)
        codes = None if attrs is None or self.model.item_attrs is None else torch.from_numpy(np.asarray(attrs))
        columns = None if extra is None or self.model.item_extra is None else torch.from_numpy(
            np.asarray(extra, dtype=np.float32))
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


def write_model_dir(path: str | Path, weights: str | Path, item_ids: list[str], item_text: np.ndarray,
                    meta: dict[str, Any], item_attrs: np.ndarray | None = None,
                    item_extra: np.ndarray | None = None) -> Path:
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

    from sparkrec.models.two_tower import TwoTower

    folder = Path(path)
    meta = json.loads((folder / META).read_text())
    from sparkrec.models.attributes import AttributeSpec

    item_text = torch.from_numpy(np.load(folder / ITEM_TEXT))
    attrs = torch.from_numpy(np.load(folder / ITEM_ATTRS)) if (folder / ITEM_ATTRS).exists() else None
    codes = AttributeSpec.from_dict(meta.get("attributes")).size if attrs is not None else 0
    extra = torch.from_numpy(np.load(folder / ITEM_EXTRA)) if (folder / ITEM_EXTRA).exists() else None
    model = TwoTower(item_text, int(meta["dim"]), int(meta["history_length"]), item_attrs=attrs, attr_codes=codes,
                     text=bool(meta.get("text", True)), history_attention=bool(meta.get("history_attention", True)),
                     ranker={k: int(meta["ranker"][k]) for k in ("hidden", "cross_layers")} if meta.get("ranker") else None,
                     item_extra=extra, extra_dims=tuple(meta.get("extra_dims") or ()),
                     event_types=len(meta.get("event_types") or ()),
                     user_features=len(meta.get("user_feature_names") or ()))
    model.load_state_dict(torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True))
    model.eval()
    item_ids = meta.pop("item_ids")
    return LoadedTwoTower(model=model, item_ids=item_ids, meta=meta)


def signature() -> Any:
    """Input ``history`` (list of item ids), output ``item_ids`` and ``scores``, param ``k``."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec(Array("string"), "history")]),
        outputs=Schema([ColSpec(Array("string"), "item_ids"), ColSpec(Array("double"), "scores")]),
        params=ParamSchema([ParamSpec("k", "long", 10)]),
    )


class TwoTowerPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: input ``history`` (list of item ids, most recent first) -> top ``k`` items.

    ``predict`` ranks the vocabulary items for each history; batch scoring over the whole catalogue
    (cold items included) is the recommend stage's job, which unwraps this model.
    """

    def load_context(self, context: Any) -> None:
        self.loaded = load_model_dir(context.artifacts["model_dir"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        import torch

        k = int((params or {}).get("k", 10))
        loaded = self.loaded
        index = loaded.index
        length = int(loaded.meta["history_length"])
        rows = []
        for history in model_input["history"]:
            ids = [index.get(str(i), 0) for i in list(history)[:length]]
            rows.append(ids + [0] * (length - len(ids)))
        hist = torch.tensor(rows, dtype=torch.long)
        with torch.inference_mode():
            users = loaded.model.users(loaded.model.item_vectors(hist), hist > 0)
            all_ids = torch.arange(1, len(loaded.item_ids) + 1)
            scores = users @ loaded.model.item_vectors(all_ids).T
            top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        return pd.DataFrame(
            {
                "item_ids": [[loaded.item_ids[int(i)] for i in row] for row in top.indices],
                "scores": [row.tolist() for row in top.values],
            }
        )
