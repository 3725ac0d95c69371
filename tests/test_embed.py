import json
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F

from sparkrec import embed, stages
from sparkrec.config import Config, EmbedConfig
from sparkrec.tables import read_table
from tests.test_clean import write_items, write_landing


@pytest.fixture(scope="module")
def encoder() -> embed.TextEncoder:
    return embed.load_encoder(embed.default_model_path())


def test_similar_texts_are_closer_and_vectors_normalised(encoder: embed.TextEncoder) -> None:
    texts = ["red ceramic coffee mug", "blue porcelain tea cup", "steel garden shovel"]
    vectors = embed.embed_texts(texts, encoder)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_length_sorting_keeps_input_order_and_empty_text_is_zero(encoder: embed.TextEncoder) -> None:
    texts = ["a much longer description of a hand painted wooden toy train", "", "mug"]
    together = embed.embed_texts(texts, encoder)
    alone = np.vstack([embed.embed_texts([t], encoder) for t in texts])
    assert np.allclose(together, alone, atol=1e-5)
    assert not together[1].any()


def test_cls_pooling_and_missing_model_folder(tmp_path: Path) -> None:
    cls = embed.load_encoder(embed.default_model_path(), pooling="cls")
    mean = embed.load_encoder(embed.default_model_path(), pooling="mean")
    assert not np.allclose(embed.embed_texts(["mug"], cls), embed.embed_texts(["mug"], mean))
    with pytest.raises(embed.ModelNotFoundError, match="no config.json"):
        embed.resolve_model_path(EmbedConfig(model_path=str(tmp_path)))


def test_embed_stage_only_embeds_new_or_changed_items(spark, config: Config) -> None:
    day1, day2 = "2024-03-10", "2024-03-11"
    event = '{"user_id":"u1","item_id":"i1","event_type":"view","ts":"%s 10:00:00"}'
    write_landing(config, day1, [event % day1])
    write_landing(config, day2, [event % day2])
    write_items(config, day1, [{"item_id": "i1", "title": "Red mug"}, {"item_id": "i2", "title": "Blue cup"},
                               {"item_id": "i3", "title": ""}])
    stages.run_clean(spark, config, [day1])
    first = stages.run_embed(spark, config, day1)
    assert (first["embedded_items"], first["skipped_unchanged_items"]) == (3, 0)
    rows = {r["item_id"]: r for r in read_table(spark, config, "item_embeddings").collect()}
    assert rows["i1"]["dim"] == 384 and len(rows["i1"]["embedding"]) == 384
    assert rows["i1"]["has_text"] and not rows["i3"]["has_text"]

    again = stages.run_embed(spark, config, day1)
    assert (again["embedded_items"], again["skipped_unchanged_items"]) == (0, 3)

    write_items(config, day2, [{"item_id": "i2", "title": "Blue cup, large", "updated_at": f"{day2} 09:00:00"}])
    stages.run_clean(spark, config, [day2])
    changed = stages.run_embed(spark, config, day2)
    assert (changed["embedded_items"], changed["skipped_unchanged_items"]) == (1, 2)
    assert read_table(spark, config, "item_embeddings").count() == 3
    metrics = read_table(spark, config, "run_metrics").where((F.col("stage") == "embed") & (F.col("ds") == F.lit(day2)))
    assert {r["metric"]: r["value"] for r in metrics.collect()} == {"embedded_items": 1.0, "skipped_unchanged_items": 2.0}
    assert json.loads(json.dumps(changed))  # small, serialisable result
