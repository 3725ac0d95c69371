"""The embed pandas UDF and the embed stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F

from sparkrec import embed, stages
from sparkrec.config import Config, EmbedConfig
from sparkrec.tables import read_table
from tests.helpers import AWKWARD, cosines, write_items, write_landing


@pytest.fixture(scope="module")
def encoder() -> embed.TextEncoder:
    return embed.load_encoder(embed.default_model_path())


def test_udf_vectors_equal_the_pure_function_and_sentence_transformers(spark, encoder: embed.TextEncoder) -> None:
    from sentence_transformers import SentenceTransformer

    frame = spark.createDataFrame([(i, t) for i, t in enumerate(AWKWARD)], "n int, text string").repartition(2)
    udf = embed.make_embed_udf(EmbedConfig())
    rows = sorted(frame.select("n", udf("text").alias("v")).collect())
    from_udf = np.array([r["v"] for r in rows], dtype=np.float32)
    pure = embed.embed_texts(AWKWARD, encoder)
    with_text = [i for i, t in enumerate(AWKWARD) if t.strip()]
    assert cosines(from_udf[with_text], pure[with_text]).min() >= 0.9999
    assert not from_udf[1].any() and not from_udf[2].any()  # empty and blank: zero vectors
    reference = SentenceTransformer(embed.default_model_path(), device="cpu")
    reference.max_seq_length = encoder.max_length
    expected = reference.encode([AWKWARD[i] for i in with_text], batch_size=4, normalize_embeddings=True)
    assert cosines(pure[with_text], expected).min() >= 0.999


def test_item_text_from_fields_or_a_template(spark) -> None:
    items = spark.createDataFrame(
        [("i1", "Red mug", "Ceramic, 300 ml", "kitchen"), ("i2", "Blue cup", None, None), ("i3", None, None, None)],
        "item_id string, title string, description string, category string",
    )
    by_fields = [r[0] for r in items.select(embed.item_text(["title", "description", "category"])).collect()]
    assert by_fields == ["Red mug. Ceramic, 300 ml. kitchen", "Blue cup", ""]
    by_template = [r[0] for r in items.select(embed.item_text([], "{title} ({category}): {description}")).collect()]
    assert by_template == ["Red mug (kitchen): Ceramic, 300 ml", "Blue cup ():", ""]
    with pytest.raises(ValueError, match="colour"):
        embed.item_text([], "{title} in {colour}")


def test_embed_stage_only_embeds_new_or_changed_items(spark, config: Config, tmp_path: Path) -> None:
    day1, day2 = "2024-03-10", "2024-03-11"
    event = '{"user_id":"u1","item_id":"i1","event_type":"view","ts":"%s 10:00:00"}'
    write_landing(config, day1, [event % day1])
    write_landing(config, day2, [event % day2])
    write_items(
        config,
        day1,
        [{"item_id": "i1", "title": "Red mug"}, {"item_id": "i2", "title": "Blue cup"}, {"item_id": "i3", "title": ""}],
    )
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
    assert {r["metric"]: r["value"] for r in metrics.collect()} == {
        "embedded_items": 1.0,
        "skipped_unchanged_items": 2.0,
    }
    assert json.loads(json.dumps(changed))  # small, serialisable result

    # The driver's matrix of them, read whole or a part at a time (here one item a part), is the same.
    from sparkrec.catalog import save_text_matrix, text_matrix

    ids = ["i2", "not-an-item", "i1", "i3"]
    whole = text_matrix(spark, config, embed.model_name(config.embed), ids)
    in_parts = text_matrix(spark, config, embed.model_name(config.embed), ids, padded=True, collect_bytes=384 * 4)
    assert whole.shape == (4, 384) and np.array_equal(in_parts[1:], whole) and not in_parts[0].any()
    assert np.allclose(whole[2], rows["i1"]["embedding"]) and not whole[1].any()
    # Written to a file a part at a time instead, the same matrix.
    saved = save_text_matrix(spark, config, embed.model_name(config.embed), ids, tmp_path / "text.npy", True, 384 * 4)
    assert np.array_equal(np.load(saved), in_parts)
