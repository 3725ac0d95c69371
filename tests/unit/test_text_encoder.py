"""The text encoder itself: BERT vectors of texts, without Spark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sparkrec import embed
from sparkrec.config import EmbedConfig
from tests.helpers import AWKWARD, cosines


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
