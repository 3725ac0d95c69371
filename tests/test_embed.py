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


AWKWARD = [
    "red ceramic coffee mug",
    "",
    "   ",
    "陶瓷咖啡杯，红色",  # Chinese
    "🎁 gift box ✨ with ribbons",
    "WHITE HANGING HEART T-LIGHT HOLDER",
    "a hand painted wooden toy train " * 12,  # about 100 tokens
]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


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


def test_long_texts_are_truncated_or_chunked_and_averaged() -> None:
    truncate = embed.load_encoder(embed.default_model_path(), max_length=16)
    chunk = embed.load_encoder(embed.default_model_path(), max_length=16, long_text="chunk")
    short, long = "red mug", "red mug for coffee. " * 3 + "a garden shovel made of steel and oak, heavy duty " * 3
    assert np.allclose(embed.embed_texts([short], truncate), embed.embed_texts([short], chunk), atol=1e-6)
    cut, averaged = embed.embed_texts([long, short], truncate), embed.embed_texts([long, short], chunk)
    assert np.allclose(np.linalg.norm(averaged, axis=1), 1.0, atol=1e-5)
    # The chunks past the cut (the shovel) pull the averaged vector towards "shovel".
    shovel = embed.embed_texts(["steel garden shovel"], truncate)[0]
    assert averaged[0] @ shovel > cut[0] @ shovel
    with pytest.raises(ValueError, match="long_text"):
        embed.load_encoder(embed.default_model_path(), long_text="summarise")


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


def test_the_model_name_changes_with_how_texts_are_built() -> None:
    base = embed.model_name(EmbedConfig())
    assert base.startswith("all-MiniLM-L6-v2@")
    assert embed.model_name(EmbedConfig(template="{title}")) != base
    assert embed.model_name(EmbedConfig(long_text="chunk")) != base
    folder = embed.default_model_path().rstrip("/")
    local = embed.model_name(EmbedConfig(model_path=folder))
    assert local.startswith(Path(folder).name + "@") and local != base


@pytest.mark.gpu
def test_cuda_vectors_match_the_cpu() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    texts = [t for t in AWKWARD if t.strip()]
    cpu = embed.embed_texts(texts, embed.load_encoder(embed.default_model_path(), device="cpu"))
    for precision in ("fp16", "bf16"):
        gpu = embed.embed_texts(
            texts, embed.load_encoder(embed.default_model_path(), device="cuda", cuda_precision=precision)
        )
        assert cosines(cpu, gpu).min() >= 0.99, precision


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
