"""Reading a table, whatever its format: `open_table` (the header only), `select` (columns by name),
`plan` (chunks small enough to send to a Beam worker), `read_chunk` (a chunk's rows, checked) and
`iter_blocks` / `read_all` on top of them.

Every format's module (registered in `components.tables`) reads cells; the checks live here, once:
a missing or repeated column, a column of the wrong type, a file with no rows, and `check_finite`
(NaN, +-inf and values beyond float32's range, where examples are stored). A format reports a cell
that is not a number, a ragged row, bad encoding or a truncated file itself, because only it sees
them, with the same words (``<file>: <line or row>, column <i> (<name>): <problem>; fix: ...``).

A column may be declared string-valued (``select(..., text=names)``): it comes back as ``str``
values (`Block.text`), not refused as non-numeric.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from tfflows.components.errors import DataError
from tfflows.components.tables import FORMATS, format_of

__all__ = ["CHUNK_ROWS", "Block", "Chunk", "Selection", "Table", "check_finite", "iter_blocks", "open_table",
           "plan", "read_all", "read_chunk", "refuse_first", "select", "short"]

CHUNK_ROWS = 65536  # rows a chunk holds (~11 MB of float32 at D=43); a CSV chunk is that many rows' bytes


@dataclasses.dataclass(frozen=True)
class Table:
    """An opened table file: what its header says; no row is read (picklable, for Beam workers).

    Attributes:
      path: the file.
      format: its `components.tables.FORMATS` name.
      columns: the columns' names, the file's own (e.g. a CSV header's); ``x0, x1, ...`` for a file without
        names (a header-less CSV, an array).
      named: whether the names are the file's own (False: columns are known by position only).
      numeric: per column: True when its type is numeric, False when it is not, None when only its
        cells will tell (CSV).
      types: per column, the format's name of its type (for messages).
      names_at: where a message places the column names (``line 1 (header)``, ``columns``).
      rows: the number of rows when the header says it (e.g. an array's), else None.
      shape: an array's example shape when it has more than 2 axes (an image), else None.
      data_offset: CSV: byte offset of the first row; 0 otherwise.
      key: ``.npz``: the array read.
    """

    path: str
    format: str
    columns: Tuple[str, ...]
    named: bool
    numeric: Tuple[Optional[bool], ...]
    types: Tuple[str, ...]
    names_at: str
    rows: Optional[int] = None
    shape: Optional[Tuple[int, ...]] = None
    data_offset: int = 0
    key: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Selection:
    """The columns read, in order: ``take[i]`` is the table's column of ``names[i]``; the names in
    ``text`` are read as strings (categorical), the others as numbers."""

    take: Tuple[int, ...]
    names: Tuple[str, ...]
    text: Tuple[str, ...] = ()

    @property
    def numeric(self) -> Tuple[Tuple[int, str], ...]:
        """(table column, name) of each numeric column, in order."""
        return tuple((j, n) for j, n in zip(self.take, self.names) if n not in self.text)

    @property
    def strings(self) -> Tuple[Tuple[int, str], ...]:
        """(table column, name) of each string-valued column, in order."""
        return tuple((j, n) for j, n in zip(self.take, self.names) if n in self.text)


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Where one chunk of a table lies: rows ``[start, stop)`` (``unit`` "rows"; ``group``: a part of
    the file, where its format has them) or the rows whose lines begin in bytes ``[start, stop)``
    (``unit`` "bytes", CSV)."""

    index: int
    start: int
    stop: int
    unit: str = "rows"
    group: int = 0

    def describe(self) -> str:
        return f"chunk {self.index} ({self.unit} {self.start}-{self.stop - 1})"


@dataclasses.dataclass
class Block:
    """The rows of one chunk: ``numbers`` float64 [n, numeric columns], ``text`` object [n, string
    columns] of ``str`` (`Selection.numeric` / `Selection.strings` order); ``label(i)`` names row
    ``i`` in messages (``row 17``, ``line 3 row '3,4'``)."""

    numbers: np.ndarray
    text: np.ndarray
    label: Callable[[int], str]

    def __len__(self) -> int:
        return len(self.numbers)


def short(names: Sequence[str], limit: int = 8) -> str:
    """Up to ``limit`` names, then how many more: a line stays readable for 784 pixel columns."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"


def _module(table_format: str):
    return importlib.import_module(f"tfflows.components.tables.{FORMATS[table_format].module}")


def open_table(path: str, header: Optional[bool] = True, key: Optional[str] = None) -> Table:
    """The `Table` of ``path``, its format from its name; reads the header only.

    ``header`` (CSV): True, the first line names the columns; None, it does unless it holds only
    numbers. ``key`` (``.npz``): the array (default: the only one, or ``x``). Raises `DataError`
    for an unknown ending, a missing, empty or unreadable file or a missing header.
    """
    found = format_of(path)
    if found is None:
        endings = ", ".join(e for f in FORMATS.values() for e in f.endings)
        raise DataError(path, "file name", "unsupported format", f"give a table file: {endings}")
    if not os.path.isfile(path):
        raise DataError(path, "", "file not found", "check the path")
    return _module(found.name).open_table(path, header, key)


def select(table: Table, names: Optional[Sequence[str]] = None, text: Sequence[str] = (),
           fix: str = "") -> Selection:
    """The columns ``names`` of ``table`` (None: all), ``text`` among them read as strings.

    Raises `DataError` at the table's column names for a name it lacks (``fix``: what to do; the
    names it has are added) or holds twice, and for a numeric column whose type is not numeric.
    """
    columns = list(table.columns)
    wanted = list(columns if names is None else names)
    unknown = [n for n in text if n not in wanted]
    if unknown:
        raise ValueError(f"string-valued columns {unknown} are not among the columns read {wanted}")
    repeated = sorted({c for c in columns if c in wanted and columns.count(c) > 1})
    if repeated and names is not None:
        raise DataError(table.path, table.names_at, f"column {short(repeated)} appears more than once",
                        "keep one column of each name")
    missing = [n for n in wanted if n not in columns]
    if missing:
        raise DataError(table.path, table.names_at, f"no column {short(missing)}",
                        f"{fix or 'name the columns in the file'} (it has {short(columns)})")
    take = tuple(columns.index(n) for n in wanted) if names is not None else tuple(range(len(columns)))
    selection = Selection(take, tuple(wanted), tuple(text))
    for j, name in selection.numeric:
        if table.numeric[j] is False:
            raise DataError(table.path, f"column {j} ({name})", f"type {table.types[j]} is not numeric",
                            "store the column as numbers (int or float), leave it out, or declare a column of "
                            f"categories: --set ingest.categorical_columns=[{name}]")
    return selection


def plan(table: Table, chunk_rows: int = CHUNK_ROWS) -> List[Chunk]:
    """The chunks of ``table``, in order, each about ``chunk_rows`` rows; reads no more than the
    header (and, for a CSV, a sample of its first rows to size the chunks in bytes). Raises
    `DataError` for a table with no rows."""
    chunks = _module(table.format).plan(table, max(1, int(chunk_rows)))
    if not chunks:
        raise DataError(table.path, "rows", "has no data rows (only a header, or nothing)",
                        "add rows of values below the header")
    return chunks


def read_chunk(table: Table, chunk: Chunk, selection: Selection) -> Block:
    """The checked rows of one chunk of `plan`: no row may hold a cell that is not a number (in a
    numeric column), NaN, +-inf or a value beyond float32's range. Raises `DataError` naming the
    first bad row and column."""
    block = _module(table.format).read(table, chunk, selection)
    numeric = selection.numeric
    check_finite(block.numbers, table.path, [n for _, n in numeric], block.label, [j for j, _ in numeric])
    return block


def iter_blocks(table: Table, selection: Selection, chunk_rows: int = CHUNK_ROWS) -> Iterator[Block]:
    """The checked blocks of ``table``, chunk by chunk (one chunk in memory at a time)."""
    for chunk in plan(table, chunk_rows):
        yield read_chunk(table, chunk, selection)


def read_all(table: Table, selection: Selection) -> Block:
    """The whole table, checked, as one block (for the sources read in memory)."""
    blocks = list(iter_blocks(table, selection))
    starts = np.cumsum([0] + [len(b) for b in blocks])

    def label(i: int) -> str:
        k = int(np.searchsorted(starts, i, side="right")) - 1
        return blocks[k].label(i - int(starts[k]))

    return Block(np.concatenate([b.numbers for b in blocks]), np.concatenate([b.text for b in blocks]), label)


# --------------------------------------------------------------------------- value checks


def _row(row: int) -> str:
    return f"row {row}"


def refuse_first(bad: np.ndarray, x: np.ndarray, source: str, names: Optional[Sequence[str]],
                 row_label: Callable[[int], str], problem: str, fix: str,
                 positions: Optional[Sequence[int]] = None) -> None:
    """Raises `DataError` at the first True of ``bad`` (same shape as ``x``), naming the value, its
    row (``row_label``) and its column (``positions``: the file's column of each of ``x``'s)."""
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        name = names[col] if names is not None else str(col)
        at = positions[col] if positions is not None else col
        raise DataError(source, f"{row_label(row)}, column {at} ({name})",
                        f"value {float(x[row, col])!r} {problem}", fix)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def check_finite(x: np.ndarray, source: str, names: Optional[Sequence[str]] = None,
                 row_label: Callable[[int], str] = _row, positions: Optional[Sequence[int]] = None) -> None:
    """Raises `DataError` naming the first row and column of ``x`` ([N, D]) holding NaN or +-inf,
    or a value beyond float32's range: examples are stored (and models score) in float32, where it
    would become inf (and fail later, e.g. in the transform's statistics, without naming the row)."""
    refuse_first(~np.isfinite(x), x, source, names, row_label, "is not finite",
                 "remove or impute NaN/inf values", positions)
    refuse_first(np.abs(x) > _FLOAT32_MAX, x, source, names, row_label,
                 f"is too large for float32 (|x| > {_FLOAT32_MAX:.3g})",
                 "rescale that column (divide it by a power of ten)", positions)
