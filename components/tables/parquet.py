"""Parquet (pyarrow): columns by name from the file's schema, numeric types checked before any row
is read (integers, floats, decimals and booleans are numbers; a null is read as NaN, which the
finiteness check refuses). Chunks follow row groups, Parquet's own unit of reading: a chunk holds
at most ``chunk_rows`` rows of one row group, and reads that row group's columns it needs.
"""

from __future__ import annotations

import os
from typing import List, Optional

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from tfflows.components.errors import DataError
from tfflows.components.tables.reader import Block, Chunk, Selection, Table


def _file(path: str) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        reason = " ".join(str(err).split())[:120]
        raise DataError(path, "", f"cannot read as Parquet ({reason})",
                        "write the file again (it looks truncated, or it is not Parquet)") from None


def _is_number(kind: pa.DataType) -> bool:
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
                or pa.types.is_boolean(kind))


def open_table(path: str, header: Optional[bool], key: Optional[str]) -> Table:
    if os.path.getsize(path) == 0:
        raise DataError(path, "", "file is empty", "re-create the file")
    parquet = _file(path)
    schema = parquet.schema_arrow
    kinds = [schema.field(i).type for i in range(len(schema))]
    return Table(path, "parquet", tuple(schema.names), True, tuple(_is_number(k) for k in kinds),
                 tuple(str(k) for k in kinds), "columns", rows=parquet.metadata.num_rows)


def plan(table: Table, chunk_rows: int) -> List[Chunk]:
    metadata, first = _file(table.path).metadata, 0
    chunks: List[Chunk] = []
    for group in range(metadata.num_row_groups):
        rows = metadata.row_group(group).num_rows
        for start in range(0, rows, chunk_rows):
            chunks.append(Chunk(len(chunks), first + start, first + min(start + chunk_rows, rows), group=group))
        first += rows
    return chunks


def read(table: Table, chunk: Chunk, selection: Selection) -> Block:
    metadata = _file(table.path).metadata
    group_start = sum(metadata.row_group(g).num_rows for g in range(chunk.group))
    names = [table.columns[j] for j in selection.take]
    try:
        data = _file(table.path).read_row_group(chunk.group, columns=sorted(set(names), key=names.index))
    except (pa.ArrowException, OSError) as err:
        raise DataError(table.path, f"row group {chunk.group}", f"cannot read ({' '.join(str(err).split())[:120]})",
                        "write the file again (it looks truncated)") from None
    data = data.slice(chunk.start - group_start, chunk.stop - chunk.start)
    n = chunk.stop - chunk.start
    numbers = np.empty((n, len(selection.numeric)), np.float64)
    for i, (_, name) in enumerate(selection.numeric):
        numbers[:, i] = data.column(name).cast(pa.float64()).to_numpy(zero_copy_only=False)
    text = np.empty((n, len(selection.strings)), object)
    for i, (j, name) in enumerate(selection.strings):
        values = data.column(name).cast(pa.string()).to_pylist()
        if None in values:
            raise DataError(table.path, f"row {chunk.start + values.index(None)}, column {j} ({name})",
                            "value is missing (null)", "fill the cell or remove the row")
        text[:, i] = values
    return Block(numbers, text, lambda i: f"row {chunk.start + i}")
