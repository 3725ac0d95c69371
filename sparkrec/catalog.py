"""The item side on the driver: the catalogue every scorer works on, and per-item matrices (text
vectors, extra vector columns, attribute codes) in its row order or a training vocabulary's.

Per-item state is what the driver holds (items x dim); per-event and per-user work stays in Spark.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkrec import tables
from sparkrec.config import Config
from sparkrec.models.attributes import AttributeSpec, encode, fit_spec
from sparkrec.schemas import ITEM_EMBEDDINGS, ITEMS


@dataclass(frozen=True)
class Catalog:
    """The item matrix every scorer works on: row i is ``item_ids[i]``."""

    item_ids: list[str]
    eligible: np.ndarray  # bool [n]: active and not out of stock
    index_df: DataFrame  # item_id, row
    categories: list[str | None] | None = None  # per row, when read from the items table
    prices: list[float | None] | None = None  # per row, when read from the items table
    has_in_stock: bool = True  # false: no item has an in_stock field (the rule is skipped)

    @property
    def size(self) -> int:
        return len(self.item_ids)


def item_catalog(spark: SparkSession, config: Config) -> Catalog:
    """Every item of the ``items`` table in id order, with its eligibility (active, not out of stock),
    category and price."""
    # Arrow, not Rows: a million items come as a few columns, not a million Row objects.
    table = (
        tables.read_table(spark, config, ITEMS)
        .select("item_id", "active", "in_stock", "category", "price")
        .orderBy("item_id")
        .toArrow()
    )
    item_ids = table.column("item_id").to_pylist()
    active = pc.fill_null(table.column("active"), False).to_numpy(zero_copy_only=False)
    in_stock = pc.fill_null(table.column("in_stock"), True).to_numpy(zero_copy_only=False)
    index = pd.DataFrame({"item_id": item_ids, "row": np.arange(len(item_ids), dtype=np.int32)})
    index_df = spark.createDataFrame(index, "item_id string, row int")  # through Arrow
    return Catalog(
        item_ids,
        np.asarray(active & in_stock, dtype=bool),
        index_df,
        categories=table.column("category").to_pylist(),
        prices=table.column("price").to_pylist(),
        has_in_stock=table.column("in_stock").null_count < table.num_rows,
    )


def vector_matrix(
    vectors: dict[str, Any],
    item_ids: list[str],
    dim: int,
    what: str = "item_embeddings",
    fix: str = "embed with the model it was trained on, or train again",
) -> np.ndarray:
    """``vectors`` in ``item_ids`` order as float32 [n, dim]; zeros for items without one."""
    out = np.zeros((len(item_ids), dim), dtype=np.float32)
    for i, item in enumerate(item_ids):
        vector = vectors.get(item)
        if vector is not None:
            if len(vector) != dim:
                raise ValueError(f"{what} has {len(vector)}-d vectors but the model expects {dim}-d: {fix}")
            out[i] = vector
    return out


def text_matrix(
    spark: SparkSession, config: Config, model: str, item_ids: list[str], dim: int | None = None
) -> np.ndarray:
    """The stored text vectors of text model ``model`` for ``item_ids``, in order, as float32 [n, dim]
    (zeros for items without one). ``dim``: what a trained model expects (checked); None: the stored
    vectors' size, and there must be some.

    Raises:
        tables.TableMissingError: ``dim`` is None and no item has a vector of ``model``.
    """
    # Arrow, not Rows: a million 384-d vectors stay one float array, never 384 million Python floats.
    table = (
        tables.read_table(spark, config, ITEM_EMBEDDINGS)
        .where((F.col("model") == model) & F.col("embedding").isNotNull())
        .select("item_id", "embedding")
        .toArrow()
    )
    if dim is None:
        if table.num_rows == 0:
            raise tables.TableMissingError(
                f"item_embeddings holds no vectors of model {model!r}; run the embed stage first"
            )
        dim = len(table.column("embedding")[0])
    vectors = arrow_matrix(table.column("embedding"))
    if vectors is None or vectors.shape[1] != dim:  # vectors of another size: say which (a model trained on others)
        embedding = table.column("embedding").to_pylist()
        return vector_matrix(dict(zip(table.column("item_id").to_pylist(), embedding, strict=True)), item_ids, dim)
    position = {item: i for i, item in enumerate(item_ids)}
    rows = np.fromiter((position.get(i, -1) for i in table.column("item_id").to_pylist()), np.int64, table.num_rows)
    out = np.zeros((len(item_ids), dim), dtype=np.float32)
    out[rows[rows >= 0]] = vectors[rows >= 0]
    return out


def arrow_matrix(column: pa.ChunkedArray | pa.ListArray) -> np.ndarray | None:
    """An Arrow column of float lists as one float32 matrix [rows, dim], never a Python float per
    value; None when the lists differ in length (nulls must be filtered out before)."""
    lists = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    lengths = lists.value_lengths().to_numpy(zero_copy_only=False)
    if len(lengths) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if (lengths != lengths[0]).any():
        return None
    return lists.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, int(lengths[0]))


def extra_vectors(
    spark: SparkSession, sources: dict[str, str], item_ids: list[str], dims: dict[str, int] | None = None
) -> tuple[np.ndarray | None, list[int]]:
    """The extra item vector columns (``train.model.item_vectors``: column -> where) of ``item_ids``,
    side by side as float32 [n, E] (zeros where a source does not hold the item), and each column's
    size; None, [] without sources. ``dims``: the sizes a trained model expects (serving), checked.

    Raises:
        ValueError: a source without ``item_id`` or the column, vectors of mixed sizes, or values that
            are not finite numbers.
    """
    blocks, sizes = [], []
    for column, where in sources.items():
        name = f"train.model.item_vectors.{column} ({where})"
        vectors = _source_vectors(spark, column, where, name)
        found = sorted({len(v) for v in vectors.values()})
        if dims is None and len(found) > 1:
            raise ValueError(f"{name}: {column} vectors must all have one size, found sizes {found}")
        size = dims[column] if dims is not None else (found[0] if found else 0)
        if size == 0:
            raise ValueError(f"{name} holds no {column} vectors")
        fix = "give the vectors the model was trained on, or train again"
        blocks.append(vector_matrix(vectors, item_ids, size, name, fix))
        sizes.append(size)
    return (np.hstack(blocks) if blocks else None), sizes


def _source_vectors(spark: SparkSession, column: str, where: str, name: str) -> dict[str, list[float]]:
    """item id -> vector of one extra vector column; every value a finite number."""
    df = tables.read_source(spark, where)
    if "item_id" not in df.columns or column not in df.columns:
        raise ValueError(f"{name} needs the columns item_id and {column}; it has {', '.join(df.columns)}")
    if not isinstance(df.schema[column].dataType, T.ArrayType):
        kind = df.schema[column].dataType.simpleString()
        raise ValueError(f"{name}: {column} must be an array of numbers, not {kind}")
    rows = (
        df.where(F.col(column).isNotNull())
        .select(F.col("item_id").cast("string"), F.col(column).cast("array<double>"))
        .collect()
    )
    vectors = {item: vector for item, vector in rows}
    bad = next((item for item, v in vectors.items() if not np.all(np.isfinite(np.asarray(v, dtype=float)))), None)
    if bad is not None:
        raise ValueError(f"{name}: item {bad!r} has a null or non-finite value in {column}")
    return vectors


def item_attributes(spark: SparkSession, config: Config, vocab: list[str]) -> tuple[AttributeSpec, np.ndarray | None]:
    """The attribute vocabulary of the training items and their codes [V + 1, A] (row 0 zeros); no
    codes when the catalogue has no categories or prices, or ``train.model.attributes`` is off."""
    table = tables.read_table(spark, config, ITEMS).select("item_id", "category", "price").toArrow()
    position = {item: i for i, item in enumerate(table.column("item_id").to_pylist())}
    known = [position.get(i) for i in vocab]
    category, price = table.column("category").to_pylist(), table.column("price").to_pylist()
    categories = [None if p is None else category[p] for p in known]
    prices = [None if p is None else price[p] for p in known]
    spec = fit_spec(categories, prices)
    if spec.empty or not config.train.model.attributes:
        return spec, None
    codes = encode(spec, categories, prices)
    return spec, np.vstack([np.zeros((1, codes.shape[1]), dtype=np.int64), codes])
