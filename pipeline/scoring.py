"""What scoring a table with a pushed SavedModel needs, in-process (`pipeline.serving`) and on Beam
workers (`pipeline.beam_scoring`): the SavedModel loaded and its ``score`` / ``log_prob`` signature
applied (`load_saved_model`, `score_rows`), a table's columns matched to the model's by name
(`match_columns`), and the table read in chunks (`plan_chunks`, `read_chunk`, `iter_row_chunks`).

Both scoring paths import it at their top; TensorFlow is imported inside the two functions that
use a SavedModel, so reading and checking a table needs only NumPy.
"""

from __future__ import annotations

import atexit
import csv
import dataclasses
import itertools
import os
import shutil
import tempfile
from typing import Iterator, List, Sequence, Tuple

import numpy as np

from tfflows.components import artifacts
from tfflows.components.errors import DataError

__all__ = ["CHUNK_ROWS", "Columns", "RowChunk", "iter_row_chunks", "load_saved_model", "match_columns", "plan_chunks",
           "read_chunk", "score_outputs", "score_rows"]


CHUNK_ROWS = 65536  # rows held in memory at once while scoring (~11 MB at D=43)


def load_saved_model(model_dir: str):
    """(local folder, loaded SavedModel) of a resolved version folder; an object-store model is
    downloaded to a temporary folder first (removed when the process exits)."""
    import tensorflow as tf

    local_dir = model_dir
    if artifacts.is_object_store(model_dir):
        cache = tempfile.mkdtemp(prefix="tfflows-model-")
        atexit.register(shutil.rmtree, cache, True)
        local_dir = artifacts.local_model_dir(model_dir, cache)
    try:
        return local_dir, tf.saved_model.load(local_dir)
    except (OSError, ValueError, tf.errors.OpError) as error:  # truncated, corrupt or half-copied files
        detail = " ".join(str(error).split())[:120]
        raise DataError(model_dir, "saved_model.pb", f"not a readable SavedModel ({detail})",
                        "point --model at a complete version folder (serving/<version>) or push the model "
                        "again") from error


def score_outputs(loaded) -> Tuple[str, ...]:
    """What `score_rows` returns per row: ``log_prob`` and ``percentile`` by the ``score`` signature of
    a calibrated model; ``log_prob`` alone by the ``log_prob`` signature of one without held-out
    quantiles (pushed before they existed, or fitted to a target)."""
    return ("log_prob", "percentile") if "score" in loaded.signatures else ("log_prob",)


def score_rows(loaded, rows: np.ndarray, batch_size: int) -> np.ndarray:
    """float32 [n, len(score_outputs)] of float32 rows [n, D] by the SavedModel's own signature (the
    serving contract), ``batch_size`` rows a call."""
    import tensorflow as tf

    outputs = score_outputs(loaded)
    signature = loaded.signatures["score" if len(outputs) > 1 else "log_prob"]
    parts = []
    for i in range(0, len(rows), batch_size):
        out = signature(x=tf.constant(rows[i:i + batch_size]))
        parts.append(np.stack([out[name].numpy() for name in outputs], axis=1))
    return np.concatenate(parts) if parts else np.zeros((0, len(outputs)), np.float32)


def _short(names: Sequence[str], limit: int = 8) -> str:
    """Up to ``limit`` names, then how many more: a line stays readable for 784 pixel columns."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"


@dataclasses.dataclass(frozen=True)
class Columns:
    """How the columns of a table map onto the model's inputs (planned once, sent to Beam workers).

    Attributes:
      names: the model's feature names, in its order.
      take: the file's column of each model feature (``rows[:, take]`` is in the model's order).
      width: values per row of the file.
      header: .csv: the first line names the columns (False: a header-less file, by position).
      note: the summary's line on how the columns were matched.
    """

    names: Tuple[str, ...]
    take: Tuple[int, ...]
    width: int
    header: bool
    note: str


def _by_position(path: str, names: Sequence[str], width: int, why: str) -> Columns:
    """Columns matched by position: only a table exactly as wide as the model is taken."""
    if width != len(names):
        raise DataError(path, "columns", f"{width} values per row but the model takes {len(names)} "
                        f"({_short(names)})", "write a header line naming the columns (they are matched by "
                        "name, in any order), or give exactly the model's columns in its order")
    return Columns(tuple(names), tuple(range(width)), width, False,
                   f"columns: {why}: matched by position to the model's {_short(names)}")


def _by_name(path: str, names: Sequence[str], header: List[str]) -> Columns:
    """Columns matched by the header's names; a missing or repeated model column is refused."""
    wanted = set(names)
    repeated = sorted({c for c in header if c in wanted and header.count(c) > 1})
    if repeated:
        raise DataError(path, "line 1 (header)", f"column {_short(repeated)} appears more than once",
                        "keep one column of each name")
    missing = [n for n in names if n not in header]
    if missing:
        raise DataError(path, "line 1 (header)", f"no column {_short(missing)}",
                        f"name the model's columns {_short(names)} in the header (any order; other columns are "
                        f"ignored; it has {_short(header)})")
    extra = [c for c in header if c not in wanted]
    note = f"columns: matched by name ({_short(names)})"
    if extra:
        note += f"; ignored, not in the model: {_short(extra)}"
    return Columns(tuple(names), tuple(header.index(n) for n in names), len(header), True, note)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def match_columns(path: str, names: Sequence[str]) -> Columns:
    """How ``path``'s columns feed a model with feature ``names``: by name for a .csv with a header
    line, by position (said in the note) for a header-less .csv or a .npy, which must then hold
    exactly the model's columns. Raises `DataError` naming missing, repeated or surplus columns."""
    _check_table_path(path)
    if path.endswith(".npy"):
        table = _open_npy(path)
        return _by_position(path, names, int(np.prod(table.shape[1:])), "a .npy has no column names")
    with open(path, "rb") as f:
        first = f.readline().decode("utf-8-sig")  # a spreadsheet's byte-order mark is not part of a name
    if not first.strip():
        raise DataError(path, "rows", "the file is empty",
                        "write a header line (column names), then one row of numbers per line")
    cells = [c.strip() for c in next(csv.reader([first]))]
    if list(cells) != list(names) and all(map(_is_number, cells)):
        return _by_position(path, names, len(cells), "no header line")
    return _by_name(path, names, cells)


def _check_chunk(rows: np.ndarray, path: str, columns: Columns, name_row) -> np.ndarray:
    """float32 [n, D] rows, or a one-line DataError naming the row (``name_row(i)``) and column."""
    rows = np.asarray(rows, dtype=np.float32).reshape(len(rows), -1)
    bad = ~np.isfinite(rows)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(path, f"{name_row(row)}, column {columns.take[col]} ({columns.names[col]})",
                        "NaN or infinite value", "remove or fix that row")
    return rows


def _csv_chunk(lines: list, path: str, numbers: list, columns: Columns) -> np.ndarray:
    """The model's columns, in its order, of non-blank CSV lines; every line as wide as the table."""
    try:
        rows = np.loadtxt(lines, delimiter=",", ndmin=2, dtype=np.float32, usecols=columns.take)
        if all(line.count(",") + 1 == columns.width for line in lines):
            return rows
    except ValueError:
        pass
    # find the first bad line, to name it
    for line, number in zip(lines, numbers):
        where, cells = f"line {number}", line.split(",")
        if len(cells) != columns.width:
            above = "the header names" if columns.header else "line 1 has"
            raise DataError(path, where, f"{len(cells)} values where {above} {columns.width}",
                            "give every row the same number of values")
        try:
            [float(cells[j]) for j in columns.take]
        except ValueError:
            raise DataError(path, where, f"not a numeric row ({line.strip()[:60]!r})",
                            "write numbers only, one row per example") from None
    raise DataError(path, f"lines {numbers[0]}-{numbers[-1]}", "not a numeric table",
                    "write numbers only, one row per example")


@dataclasses.dataclass(frozen=True)
class RowChunk:
    """Where one chunk of a table lies, small enough to send to a Beam worker that reads it.

    Attributes:
      index: position of the chunk in the table (chunk ``k`` holds rows before chunk ``k + 1``'s).
      first: .npy: index of its first row; .csv: number of its first line (1-based; 2 after a header).
      count: .npy: its rows; .csv: its lines (blank lines included, and skipped when read).
      offset: .csv: byte offset of its first line; .npy: 0.
    """

    index: int
    first: int
    count: int
    offset: int = 0


def _open_npy(path: str) -> np.ndarray:
    """The memory-mapped table of a .npy, or a one-line DataError for one that holds no numeric rows."""
    try:
        table = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as error:
        raise DataError(path, "contents", f"not a numeric array ({str(error).splitlines()[0]})",
                        "save a float array with numpy.save") from error
    if table.ndim == 0 or len(table) == 0:
        raise DataError(path, "rows", "the array holds no rows", "save an array of shape [rows, D]")
    if table.dtype.kind not in "fiub":
        raise DataError(path, "dtype", f"{table.dtype} is not numeric", "save a float array")
    return table


def _csv_line_chunks(path: str, columns: Columns, chunk_rows: int) -> Iterator[Tuple[RowChunk, list]]:
    """(chunk, its raw lines) of a .csv after its header line, if any; DataError if it holds no rows."""
    with open(path, "rb") as f:
        header = f.readline() if columns.header else b""
        index, line_no, offset, any_rows = 0, 1 + columns.header, len(header), False
        while lines := list(itertools.islice(f, chunk_rows)):
            any_rows = any_rows or any(line.strip() for line in lines)
            yield RowChunk(index, line_no, len(lines), offset), lines
            index, line_no, offset = index + 1, line_no + len(lines), offset + sum(map(len, lines))
    if not any_rows:
        raise DataError(path, "rows", "only a header line, no rows", "add rows below the header")


def _csv_rows(lines: list, chunk: RowChunk, path: str, columns: Columns) -> np.ndarray:
    """The checked rows of a chunk's raw lines (blank lines skipped; may be empty)."""
    numbers = [chunk.first + i for i, line in enumerate(lines) if line.strip()]
    if not numbers:
        return np.zeros((0, len(columns.names)), np.float32)
    text = [lines[n - chunk.first].decode("utf-8", "replace") for n in numbers]
    return _check_chunk(_csv_chunk(text, path, numbers, columns), path, columns, lambda i: f"line {numbers[i]}")


def _check_table_path(path: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if not path.endswith((".npy", ".csv")):
        raise DataError(path, "file name", "unsupported format", "give a .npy or a .csv with a header line")


def plan_chunks(path: str, columns: Columns, chunk_rows: int = CHUNK_ROWS) -> Iterator[RowChunk]:
    """The chunks of ``chunk_rows`` rows (.npy) or lines (.csv, after the header) of a table, in order.

    ``columns``: `match_columns` of the table. Reads only the .npy header, or scans the .csv once
    for line offsets (one chunk at a time). Raises `DataError` for a file that holds no rows.
    """
    if path.endswith(".npy"):
        rows = len(_open_npy(path))
        for index, start in enumerate(range(0, rows, chunk_rows)):
            yield RowChunk(index, start, min(chunk_rows, rows - start))
    else:
        for chunk, _ in _csv_line_chunks(path, columns, chunk_rows):
            yield chunk


def read_chunk(path: str, chunk: RowChunk, columns: Columns) -> np.ndarray:
    """float32 rows [n, D] in the model's column order of one chunk of `plan_chunks` (n = 0 for a
    .csv chunk of blank lines).

    Raises `DataError` (one line: file, row or line, column, problem, fix) for a bad row.
    """
    if path.endswith(".npy"):
        rows = _open_npy(path)[chunk.first:chunk.first + chunk.count]
        return _check_chunk(rows, path, columns, lambda i: f"row {chunk.first + i}")
    with open(path, "rb") as f:
        f.seek(chunk.offset)
        return _csv_rows(list(itertools.islice(f, chunk.count)), chunk, path, columns)


def iter_row_chunks(path: str, columns: Columns,
                    chunk_rows: int = CHUNK_ROWS) -> Iterator[Tuple[int, np.ndarray]]:
    """(index of the first row, float32 rows [n <= chunk_rows, D] in the model's column order) of a
    .npy or a .csv; ``columns``: `match_columns` of the table.

    Never holds more than one chunk: .npy files are memory-mapped, .csv files read line by line
    (once: `plan_chunks`'s scan and the parsing share the lines). Raises `DataError` (one line:
    file, row or line, problem, fix) for bad files.
    """
    if path.endswith(".npy"):
        pairs = ((chunk, None) for chunk in plan_chunks(path, columns, chunk_rows))
    else:
        pairs = _csv_line_chunks(path, columns, chunk_rows)
    start = 0
    for chunk, lines in pairs:
        rows = read_chunk(path, chunk, columns) if lines is None else _csv_rows(lines, chunk, path, columns)
        if len(rows):
            yield start, rows
            start += len(rows)
