"""The item side on the driver: the catalogue every scorer works on, and per-item matrices (text
vectors, extra vector columns, attribute codes) in its row order or a training vocabulary's.

Per-item state is what the driver holds (items x dim); per-event and per-user work stays in Spark.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
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

# About the Arrow a part of the text vectors brings to the driver (text_parts). Measured at 102k items:
# the process keeps about three parts' worth after the towers are built (Arrow's allocator holds on to
# freed blocks), so 4 MiB parts leave it 45 MiB smaller than 16 MiB ones, for 8 s more of Spark jobs.
COLLECT_BYTES = 4 << 20


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
    spark: SparkSession,
    config: Config,
    model: str,
    item_ids: list[str],
    dim: int | None = None,
    padded: bool = False,
    collect_bytes: int | None = None,
) -> np.ndarray:
    """The stored text vectors of text model ``model`` for ``item_ids``, in order, as float32 [n, dim]
    (zeros for items without one). ``dim``: what a trained model expects (checked); None: the stored
    vectors' size, and there must be some. ``padded``: [n + 1, dim], under a zero row (index 0 is a
    model's padding), written in place rather than stacked on a copy.

    The vectors come to the driver in parts (``text_parts``), copied into the result one after
    another: at its peak the driver holds the result and one part, not two whole matrices.

    Raises:
        tables.TableMissingError: ``dim`` is None and no item has a vector of ``model``.
    """
    first = 1 if padded else 0
    out: np.ndarray | None = None
    for rows, vectors, found in text_parts(spark, config, model, item_ids, dim, collect_bytes):
        if out is None:
            out = np.zeros((first + len(item_ids), found), dtype=np.float32)
        out[rows + first] = vectors
    assert out is not None  # text_parts yields at least its first, empty part
    return out


def save_text_matrix(
    spark: SparkSession,
    config: Config,
    model: str,
    item_ids: list[str],
    path: Path,
    padded: bool = False,
    collect_bytes: int | None = None,
) -> Path:
    """``text_matrix`` (``dim``: the stored vectors' size) written to the .npy file ``path`` rather than
    held: the file is made at its full size (zeros, not written) and each part (``text_parts``) goes in
    through a mapping of the file for that part alone, so the driver never holds the matrix (1.5 KB an
    item). Read it back with ``np.load(path, mmap_mode="r")``.

    Raises:
        tables.TableMissingError: no item has a vector of ``model``.
    """
    first = 1 if padded else 0
    made = False
    for rows, vectors, found in text_parts(spark, config, model, item_ids, None, collect_bytes):
        if not made:  # the first part, which may be empty, carries the size
            shape = (first + len(item_ids), found)
            np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape).flush()  # then unmapped
            made = True
        if len(rows):
            mapped = np.load(path, mmap_mode="r+")
            mapped[rows + first] = vectors
            mapped.flush()
            del mapped  # unmapped: its pages leave the process
    return path


def text_parts(
    spark: SparkSession,
    config: Config,
    model: str,
    item_ids: list[str],
    dim: int | None = None,
    collect_bytes: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """The stored text vectors of ``item_ids`` (model ``model``) a part at a time: (rows, vectors [len(rows),
    dim], dim), ``rows`` the positions in ``item_ids``; an item without a vector is in no part. The first
    part may be empty (it carries ``dim`` when nothing is stored).

    Items are split by a hash of their id into parts of about ``collect_bytes`` of Arrow (None:
    ``COLLECT_BYTES``), read from Spark's cache of the model's vectors when there are several. ``dim`` as
    for ``text_matrix``.

    Raises:
        tables.TableMissingError: ``dim`` is None and no item has a vector of ``model``.
    """
    # Arrow, not Rows: a million 384-d vectors stay one float array, never 384 million Python floats.
    source = (
        tables.read_table(spark, config, ITEM_EMBEDDINGS)
        .where((F.col("model") == model) & F.col("embedding").isNotNull())
        .select("item_id", "embedding", "dim")
    )
    sizes = source.agg(F.count(F.lit(1)).alias("n"), F.max("dim").alias("dim")).first()
    stored, stored_dim = (int(sizes["n"]), sizes["dim"]) if sizes else (0, None)
    if dim is None:
        if stored == 0:
            raise tables.TableMissingError(
                f"item_embeddings holds no vectors of model {model!r}; run the embed stage first"
            )
        dim = int(stored_dim or 0)
    yield np.zeros(0, dtype=np.int64), np.zeros((0, dim), dtype=np.float32), dim
    position = {item: i for i, item in enumerate(item_ids)}
    budget = collect_bytes or COLLECT_BYTES
    parts = max(1, min(stored, -(-stored * int(stored_dim or dim) * 4 // budget)))
    # Several parts read the vectors from Spark's cache, not from the table once a part.
    held = source.select("item_id", "embedding")
    if parts > 1:
        held = held.persist()
    try:
        for part in range(parts):
            chunk = held if parts == 1 else held.where(F.pmod(F.xxhash64("item_id"), F.lit(parts)) == part)
            table = chunk.toArrow()
            for batch in table.to_batches(max_chunksize=_COPY_BLOCK):  # slices, no copies
                ids = batch.column(0).to_pylist()
                vectors = arrow_matrix(batch.column(1))  # a view of Arrow's buffer
                if vectors is None or (len(vectors) and vectors.shape[1] != dim):  # another size: say which
                    wanted = [i for i in ids if i in position]
                    found = vector_matrix(dict(zip(ids, batch.column(1).to_pylist(), strict=True)), wanted, dim)
                    yield np.array([position[i] for i in wanted], dtype=np.int64), found, dim
                    continue
                rows = np.fromiter((position.get(i, -1) for i in ids), np.int64, batch.num_rows)
                kept = rows >= 0
                yield rows[kept], vectors[kept], dim
            del table
    finally:
        if parts > 1:
            held.unpersist()


_COPY_BLOCK = 65_536  # rows copied at a time into a per-item matrix


def arrow_matrix(column: pa.ChunkedArray | pa.ListArray) -> np.ndarray | None:
    """An Arrow column of float lists as one float32 matrix [rows, dim], never a Python float per
    value; None when the lists differ in length (nulls must be filtered out before).

    One chunk of float32 values comes as a read-only view of Arrow's buffer; several are copied once,
    chunk by chunk, into a new matrix (never combined first). Copy a read-only one to change it."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    lengths = [chunk.value_lengths().to_numpy(zero_copy_only=False) for chunk in chunks]
    rows = sum(len(n) for n in lengths)
    if rows == 0:
        return np.zeros((0, 0), dtype=np.float32)
    dim = int(next(n[0] for n in lengths if len(n)))
    if any((n != dim).any() for n in lengths):
        return None
    views = [c.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False) for c in chunks if len(c)]
    if len(views) == 1:
        return views[0].reshape(rows, dim)
    out = np.empty((rows, dim), dtype=np.float32)
    start = 0
    for view in views:
        block = view.reshape(-1, dim)
        out[start : start + len(block)] = block
        start += len(block)
    return out


def unit_rows(matrix: np.ndarray, copy: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``matrix``'s rows scaled to length 1, as float32 (in place, unless ``copy``, another dtype or a
    read-only view ask for a copy), and which rows have a direction: a zero row stays zero."""
    unit = matrix.astype(np.float32, copy=copy or not matrix.flags.writeable)
    norms = np.sqrt(np.einsum("ij,ij->i", unit, unit))  # no squared copy of the matrix, as np.linalg.norm makes
    directed = norms > 0
    unit[directed] /= norms[directed, None]
    return unit, directed


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
