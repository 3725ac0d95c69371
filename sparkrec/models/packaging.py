"""The trained model as one folder (weights, vocabulary, text vectors) and as an MLflow pyfunc.

The folder carries the ID vocabulary with the weights, so a loaded model maps item ids itself.
"""

from __future__ import annotations

import functools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel

from sparkrec.encoding import encode_users, index_histories
from sparkrec.models.attributes import AttributeSpec, encode
from sparkrec.models.specs import ModelSpec
from sparkrec.models.two_tower import TwoTower

META = "model.json"
WEIGHTS = "weights.pt"
ITEM_TEXT = "item_text.npy"
ITEM_ATTRS = "item_attrs.npy"
ITEM_EXTRA = "item_extra.npy"
ITEM_BLOCK = 8192  # items a forward pass of the item tower takes at a time


@dataclass
class LoadedTwoTower:
    """A two-tower model ready to score: the torch module, its vocabulary and what it is."""

    model: TwoTower  # in eval mode
    item_ids: list[str]  # vocabulary: item_ids[i - 1] has index i; index 0 is "not in vocabulary"
    spec: ModelSpec
    text_file: Path | None = None  # the .npy of ``model.item_text`` (a loaded model folder's)

    @functools.cached_property
    def index(self) -> dict[str, int]:
        return {item: i + 1 for i, item in enumerate(self.item_ids)}

    def item_vectors(
        self, item_ids: list[str], text: np.ndarray, attrs: np.ndarray | None = None, extra: np.ndarray | None = None
    ) -> np.ndarray:
        """Vectors [n, D] for any items: vocabulary items use their ID, all use their text and (for a
        model trained with them) their attribute codes (``attribute_codes``) and extra vector columns
        (``extra`` [n, E], ``spec.extra_dims`` side by side; zeros: none)."""
        index = self.index
        ids = torch.tensor([index.get(i, 0) for i in item_ids], dtype=torch.long)
        codes = None if attrs is None or self.model.item_attrs is None else torch.from_numpy(np.asarray(attrs))
        columns = (
            None
            if extra is None or self.model.item_extra is None
            else torch.from_numpy(np.asarray(extra, dtype=np.float32))
        )
        text_in = torch.from_numpy(np.asarray(text, dtype=np.float32))
        out = np.empty((len(item_ids), self.spec.dim), dtype=np.float32)
        # In blocks: the tower's activations cost a block's worth of memory, not the catalogue's.
        with torch.inference_mode():
            for start in range(0, len(item_ids), ITEM_BLOCK):
                part = slice(start, start + ITEM_BLOCK)
                out[part] = self.model.items(
                    ids[part],
                    text_in[part],
                    None if codes is None else codes[part],
                    None if columns is None else columns[part],
                ).numpy()
        return out

    def vocabulary_vectors(self) -> torch.Tensor:
        """Every vocabulary item's vector [V, D] (row i: ``item_ids[i]``), in blocks of ``ITEM_BLOCK``
        items. With ``text_file``, each block's text vectors are read from it, mapped for that block
        alone: the vocabulary's text (1.5 KB an item) never stays resident in the process."""
        model = self.model
        with torch.inference_mode():
            out = torch.empty((len(self.item_ids), self.spec.dim))
            for start in range(0, len(self.item_ids), ITEM_BLOCK):
                stop = min(start + ITEM_BLOCK, len(self.item_ids))
                ids = torch.arange(start + 1, stop + 1)
                text = None
                if self.text_file is not None:
                    mapped = np.load(self.text_file, mmap_mode="r")
                    text = torch.from_numpy(np.array(mapped[start + 1 : stop + 1], dtype=np.float32))
                    del mapped  # unmapped: its pages leave the process
                out[start:stop] = model.item_vectors(ids, text)
        return out

    def attribute_codes(self, categories: list[str | None], prices: list[float | None]) -> np.ndarray | None:
        """Attribute codes of any items with the vocabulary the model was trained with (None: no attributes)."""
        if self.model.item_attrs is None:
            return None
        return encode(AttributeSpec.from_dict(self.spec.attributes), categories, prices)


def write_model_dir(
    path: str | Path,
    weights: str | Path,
    item_ids: list[str],
    item_text: np.ndarray | Path,
    spec: ModelSpec,
    item_attrs: np.ndarray | None = None,
    item_extra: np.ndarray | None = None,
) -> Path:
    """The model as one folder: weights, text vectors (and attribute codes, extra vectors) as .npy, and
    ``model.json`` (the spec and the vocabulary). ``item_text``: the vectors, or the float32 .npy file
    that holds them (copied as it is: the driver never reads it)."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, out / WEIGHTS)
    if isinstance(item_text, Path):
        shutil.copyfile(item_text, out / ITEM_TEXT)
    else:
        np.save(out / ITEM_TEXT, np.asarray(item_text, dtype=np.float32))
    if item_attrs is not None:
        np.save(out / ITEM_ATTRS, item_attrs.astype(np.int64))
    if item_extra is not None:
        np.save(out / ITEM_EXTRA, item_extra.astype(np.float32))
    (out / META).write_text(json.dumps({**spec.to_dict(), "item_ids": item_ids}))
    return out


def load_model_dir(path: str | Path) -> LoadedTwoTower:
    """A model folder (``write_model_dir``) back as a ``LoadedTwoTower``: weights read as tensors
    only (``torch.load(weights_only=True)``), everything else from JSON and .npy.

    The weights are mapped from their file, not read, and the model takes the mapped tensors as its
    own (``assign``): no copy of any weight is made. The vocabulary's text vectors (the largest buffer,
    1.5 KB an item) stay on disk until read, and serving never reads them (it passes the catalogue's
    own, ``LoadedTwoTower.item_vectors``), so a served model holds the pages of its ID vectors only.
    The mapping is private: nothing written to a tensor reaches the file.
    """
    folder = Path(path)
    meta = json.loads((folder / META).read_text())
    item_ids = meta.pop("item_ids")
    spec = ModelSpec.from_dict(meta)
    state = torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True, mmap=True)
    item_text = state["item_text"]
    attrs = torch.from_numpy(np.load(folder / ITEM_ATTRS)) if (folder / ITEM_ATTRS).exists() else None
    codes = AttributeSpec.from_dict(spec.attributes).size if attrs is not None else 0
    extra = torch.from_numpy(np.load(folder / ITEM_EXTRA)) if (folder / ITEM_EXTRA).exists() else None
    model = TwoTower(
        item_text,
        spec.dim,
        spec.history_length,
        item_attrs=attrs,
        attr_codes=codes,
        text=spec.text,
        history_attention=spec.history_attention,
        ranker=spec.ranker.network() if spec.ranker else None,
        item_extra=extra,
        extra_dims=spec.extra_dims,
        event_types=len(spec.event_types),
        user_features=len(spec.user_feature_names),
    )
    model.load_state_dict(state, assign=True)  # the mapped tensors become the model's: nothing copied
    model.eval()
    return LoadedTwoTower(model=model, item_ids=item_ids, spec=spec, text_file=folder / ITEM_TEXT)


def signature() -> Any:
    """Input ``history`` (list of item ids) and, optional, ``history_types`` (its event types) and
    ``user_features`` (``encoding.USER_FEATURES``); output ``item_ids`` and ``scores``; params ``k`` and
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


class TwoTowerPyfunc(PythonModel):
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

    def _items(self) -> torch.Tensor:
        """The vocabulary's vectors, computed at the first call for the model loaded (items x D)."""
        held = getattr(self, "_vocabulary", None)
        if held is None or held[0] is not self.loaded:
            held = self._vocabulary = (self.loaded, self.loaded.vocabulary_vectors())
        return held[1]

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        k = int((params or {}).get("k", 10))
        exclude = bool((params or {}).get("exclude_history", True))
        loaded = self.loaded
        given_types = list(model_input["history_types"]) if "history_types" in model_input.columns else None
        given_features = list(model_input["user_features"]) if "user_features" in model_input.columns else None
        rows, types = index_histories(list(model_input["history"]), given_types, loaded.index)
        encoded = encode_users(rows, types, given_features, loaded.spec.encoding)
        with torch.inference_mode():
            history = loaded.model.item_vectors(torch.from_numpy(encoded.items))
            users = loaded.model.users.read(history, encoded)
            scores = users @ self._items().T
            if exclude:
                for i, items in enumerate(rows):
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
