"""A model folder written by an earlier release (before the stages package and the typed model spec)
still loads, and serves the same scores: model.json is read with the defaults of today's code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from sparkrec.encoding import UserEncoding
from sparkrec.models.packaging import TwoTowerPyfunc, load_model_dir

SAVED = Path(__file__).resolve().parent.parent / "data" / "model_saved_before_the_stages_package"


def test_an_earlier_model_folder_loads_with_its_spec() -> None:
    loaded = load_model_dir(SAVED)
    spec = loaded.spec
    assert (spec.dim, spec.history_length, spec.text_model) == (6, 4, "all-MiniLM-L6-v2@test/mean/0000")
    assert spec.encoding == UserEncoding(4, ("purchase", "view"), ("activity", "tenure_days"))
    assert (
        spec.ranker is not None
        and spec.ranker.recent
        and spec.ranker.network()
        == {
            "hidden": 0,
            "cross_layers": 2,
            "recent": True,
        }
    )
    assert spec.extra_columns == {"image": 3} and spec.attributes is not None
    assert spec.settings["temperature"] == 0.1 and spec.settings["user_features"] is True
    assert loaded.model.ranker is not None and loaded.model.ranker.recent
    assert len(loaded.item_ids) == 12 and loaded.index["item01"] == 1


def test_an_earlier_model_serves_the_scores_it_served_then() -> None:
    expected = json.loads((SAVED / "expected.json").read_text())
    model = TwoTowerPyfunc()
    model.loaded = load_model_dir(SAVED)
    got = model.predict(None, pd.DataFrame(expected["input"]), {"k": 5})
    assert got["item_ids"].tolist() == expected["item_ids"]
    np.testing.assert_allclose(np.array(got["scores"].tolist()), np.array(expected["scores"]), atol=1e-6)
    catalogue = expected["catalogue"]
    attrs = model.loaded.attribute_codes(catalogue["categories"], catalogue["prices"])
    vectors = model.loaded.item_vectors(
        catalogue["item_ids"], np.array(catalogue["text"], np.float32), attrs, np.array(catalogue["extra"], np.float32)
    )
    np.testing.assert_allclose(vectors, np.array(catalogue["vectors"]), atol=1e-6)
