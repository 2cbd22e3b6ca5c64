""".npy and .npz: a numeric array of rows (an example per index of the first axis; more axes are an
example's shape, e.g. an image, flattened). Always read with ``allow_pickle=False``; columns are
known by position (``x0, x1, ...``). A .npy is memory-mapped, so a chunk reads only its rows; an
.npz member is compressed, so it is one chunk.
"""

from __future__ import annotations

import os
import zipfile
from typing import List, Optional

import numpy as np

from tfflows.components.errors import DataError
from tfflows.components.tables.reader import Block, Chunk, Selection, Table


def _unreadable(path: str, err: BaseException) -> DataError:
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return DataError(path, "", f"cannot read as .npy/.npz ({reason})",
                     "re-save it with numpy.save of a numeric array (truncated or pickled object arrays are refused)")


def _npz_key(path: str, key: Optional[str]) -> str:
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise _unreadable(path, err) from None
    key = key if key is not None else (names[0] if len(names) == 1 else "x")
    if key not in names:
        raise DataError(path, f"array {key!r}", f"not in the archive (has {names})",
                        "set IngestConfig.feature_key to one of the array names")
    return key


def _array(path: str, key: Optional[str]) -> np.ndarray:
    """The array (memory-mapped for a .npy); `DataError` for one that cannot be read."""
    try:
        if key is None:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        with np.load(path, allow_pickle=False) as archive:
            return archive[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise _unreadable(path, err) from None


def open_table(path: str, header: Optional[bool], key: Optional[str]) -> Table:
    if os.path.getsize(path) == 0:
        raise DataError(path, "", "file is empty", "re-create the file")
    key = _npz_key(path, key) if path.lower().endswith(".npz") else None
    x = _array(path, key)
    if x.dtype.kind not in "biuf":
        raise DataError(path, "", f"array dtype {x.dtype} is not numeric", "save a numeric (int or float) array")
    if x.ndim == 0:
        raise DataError(path, "", f"no rows (array shape {x.shape})", "pass a file holding at least one example")
    width = int(np.prod(x.shape[1:]))
    columns = tuple(f"x{i}" for i in range(width))
    return Table(path, "npz" if key else "npy", columns, False, (True,) * width, (str(x.dtype),) * width, "columns",
                 rows=int(x.shape[0]), shape=tuple(int(s) for s in x.shape[1:]) if x.ndim > 2 else None, key=key)


def plan(table: Table, chunk_rows: int) -> List[Chunk]:
    rows = int(table.rows or 0)
    step = chunk_rows if table.key is None else max(rows, 1)
    return [Chunk(i, start, min(start + step, rows)) for i, start in enumerate(range(0, rows, step))]


def read(table: Table, chunk: Chunk, selection: Selection) -> Block:
    if selection.text:
        raise DataError(table.path, f"columns {list(selection.text)}", "an array holds numbers only",
                        "store string-valued columns in a table file with named columns (e.g. .csv)")
    rows = np.asarray(_array(table.path, table.key)[chunk.start:chunk.stop])
    numbers = rows.reshape(len(rows), -1)[:, list(selection.take)].astype(np.float64)
    return Block(numbers, np.zeros((len(rows), 0), object), lambda i: f"row {chunk.start + i}")
