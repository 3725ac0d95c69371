"""Spark DataFrame to torch DataLoader, petastorm's converter contract on ``pyarrow.dataset``.

petastorm 0.13 cannot run beside pyspark 4.2 (it calls pyarrow APIs removed before pyarrow 18), so
this keeps its contract: ``make_converter`` materialises a DataFrame to Parquet once (keyed by its
plan, so an identical frame is not written twice); each training rank then calls
``converter.make_torch_dataloader(batch_size, cur_shard, shard_count)`` and reads only its shard.
Every rank gets the same number of batches (the remainder rows are dropped), because DDP ranks
that stop at different times hang.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import torch
from pyspark.sql import DataFrame


@dataclass(frozen=True)
class ParquetConverter:
    """A materialised DataFrame: a folder of Parquet files and its row count."""

    path: str
    num_rows: int

    def make_torch_dataloader(
        self,
        batch_size: int,
        cur_shard: int = 0,
        shard_count: int = 1,
        shuffle_seed: int | None = None,
        epoch: int = 0,
        columns: list[str] | None = None,
    ) -> ShardLoader:
        """An iterable of dicts of tensors over this rank's shard."""
        return ShardLoader(self.path, batch_size, cur_shard, shard_count, shuffle_seed, epoch, columns)

    def to_json(self) -> str:
        return json.dumps({"path": self.path, "num_rows": self.num_rows})

    @staticmethod
    def from_json(text: str) -> ParquetConverter:
        return ParquetConverter(**json.loads(text))


def make_converter(df: DataFrame, cache_dir: str) -> ParquetConverter:
    """Write ``df`` to Parquet under ``cache_dir`` once; later calls with the same plan reuse it."""
    plan = df._jdf.queryExecution().analyzed().toString()  # noqa: SLF001 - petastorm keys the cache the same way
    key = hashlib.sha256(plan.encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, key)
    marker = os.path.join(path, "_converter.json")
    if os.path.exists(marker):
        return ParquetConverter.from_json(Path(marker).read_text())
    df.write.mode("overwrite").parquet(path)
    num_rows = pads.dataset(path, format="parquet").count_rows()
    converter = ParquetConverter(path=path, num_rows=num_rows)
    Path(marker).write_text(converter.to_json())
    return converter


class ShardLoader:
    """Batches of one shard: rows [shard * n, (shard + 1) * n) with n = rows // shard_count.

    Only the Parquet fragments that overlap the shard are read, once: the first pass decodes each
    column to one numpy array (a list column of equal-length lists to a matrix), and every batch of
    every pass indexes those. Taking a batch from the Arrow table instead cost time that grew with
    the shard: ``take`` on a list column of many chunks concatenates the chunks first, at every batch.
    """

    def __init__(
        self,
        path: str,
        batch_size: int,
        cur_shard: int,
        shard_count: int,
        shuffle_seed: int | None,
        epoch: int,
        columns: list[str] | None,
    ) -> None:
        if not 0 <= cur_shard < shard_count:
            raise ValueError(f"cur_shard {cur_shard} outside 0..{shard_count - 1}")
        self.dataset = pads.dataset(path, format="parquet")
        self.batch_size = batch_size
        self.shuffle_seed = shuffle_seed
        self.epoch = epoch
        self.columns = columns
        total = self.dataset.count_rows()
        self.shard_rows = total // shard_count
        self.start = cur_shard * self.shard_rows
        self._columns: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.shard_rows // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _read_shard(self) -> pa.Table:
        end = self.start + self.shard_rows
        pieces, offset = [], 0
        for fragment in sorted(self.dataset.get_fragments(), key=lambda f: f.path):
            rows = fragment.count_rows()
            lo, hi = max(self.start, offset), min(end, offset + rows)
            if lo < hi:
                table = fragment.to_table(columns=self.columns)
                pieces.append(table.slice(lo - offset, hi - lo))
            offset += rows
        if not pieces:
            return self.dataset.schema.empty_table()
        return pa.concat_tables(pieces)

    def _decoded(self) -> dict[str, np.ndarray]:
        if self._columns is None:
            table, columns = self._read_shard(), {}
            for name in table.column_names:  # each column's Arrow buffers go as soon as it is decoded
                columns[name] = _to_numpy(table.column(name))
                table = table.drop_columns([name])
            self._columns = columns
        return self._columns

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        columns = self._decoded()
        order = np.arange(self.shard_rows)
        if self.shuffle_seed is not None:
            np.random.default_rng(self.shuffle_seed + self.epoch).shuffle(order)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            rows = order[start : start + self.batch_size]
            yield {name: torch.from_numpy(values[rows]) for name, values in columns.items()}


def _to_numpy(column: pa.ChunkedArray) -> np.ndarray:
    """One column as numpy: a list column whose lists all have one length as a [rows, length] matrix."""
    array = column.combine_chunks()
    if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
        return array.to_numpy(zero_copy_only=False)
    lengths = np.diff(array.offsets.to_numpy())
    if array.null_count or (len(lengths) and (lengths != lengths[0]).any()):
        raise ValueError(
            f"column of type {array.type}: lists of different lengths or nulls; training needs padded lists"
        )
    width = int(lengths[0]) if len(lengths) else 0
    return array.flatten().to_numpy(zero_copy_only=False).reshape(len(array), width)
