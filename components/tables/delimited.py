"""CSV: UTF-8 text (a spreadsheet's byte-order mark is skipped), comma-separated, a header line of
column names (or, where the caller allows it, none: then columns are known by position).

Chunks are byte ranges: a chunk holds the rows whose lines begin inside it, so planning needs only
the file's size (and a sample of its first rows to size chunks of about ``chunk_rows`` rows), and a
worker reads its chunk without the lines before it. A row's line number, for a message, is counted
only when a row is refused.
"""

from __future__ import annotations

import csv
import os
from typing import Callable, List, Optional, Tuple

import numpy as np

from tfflows.components.errors import DataError
from tfflows.components.tables.reader import Block, Chunk, Selection, Table

_HEADER = "line 1 (header)"
_SAMPLE = 1 << 16  # bytes read to estimate a row's length


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _decode(raw: bytes, path: str, where: Callable[[], str]) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(path, where(), f"is not UTF-8 text (byte {raw[err.start:err.start + 1]!r} at column "
                        f"{err.start + 1})", "save the file as UTF-8, e.g. iconv -f latin1 -t utf-8") from None


def _cells(text: str) -> List[str]:
    return next(csv.reader([text]), [])


def open_table(path: str, header: Optional[bool], key: Optional[str]) -> Table:
    with open(path, "rb") as f:
        raw = f.readline()
    if not raw.strip():
        raise DataError(path, _HEADER, "file is empty or has no header line",
                        "write a header line of column names first")
    cells = [c.strip() for c in _cells(_decode(raw, path, lambda: _HEADER).removeprefix("\ufeff"))]
    if header is None:
        header = not all(map(_is_number, cells))
    names = tuple(cells) if header else tuple(f"x{i}" for i in range(len(cells)))
    return Table(path, "csv", names, bool(header), (None,) * len(names), ("text",) * len(names),
                 _HEADER if header else "line 1", data_offset=len(raw) if header else 0)


def plan(table: Table, chunk_rows: int) -> List[Chunk]:
    size = os.path.getsize(table.path)
    with open(table.path, "rb") as f:
        f.seek(table.data_offset)
        sample = f.read(_SAMPLE)
    if not sample.strip():
        return []
    row_bytes = len(sample) / max(1, sample.count(b"\n"))
    step = max(1, int(row_bytes * chunk_rows))
    return [Chunk(i, start, min(start + step, size), "bytes")
            for i, start in enumerate(range(table.data_offset, size, step))]


def _line_number(path: str, offset: int) -> int:
    """The 1-based number of the line that begins at byte ``offset``."""
    count = 0
    with open(path, "rb") as f:
        while offset > 0:
            block = f.read(min(offset, 1 << 16))
            if not block:
                break
            count += block.count(b"\n")
            offset -= len(block)
    return count + 1


def _lines(table: Table, chunk: Chunk) -> Tuple[List[bytes], int]:
    """The raw lines that begin in the chunk's byte range (the one it starts inside of belongs to
    the chunk before), and the offset of the first."""
    with open(table.path, "rb") as f:
        f.seek(max(chunk.start - 1, 0))
        if chunk.start > table.data_offset and f.read(1) != b"\n":
            f.readline()
        else:
            f.seek(chunk.start)
        lines, position = [], f.tell()
        first = position
        while position < chunk.stop and (line := f.readline()):
            lines.append(line)
            position += len(line)
    return lines, first


def read(table: Table, chunk: Chunk, selection: Selection) -> Block:
    lines, offset = _lines(table, chunk)
    first: List[int] = []  # the chunk's first line number, counted once, when a message needs it

    def number(i: int) -> int:
        if not first:
            first.append(_line_number(table.path, offset))
        return first[0] + i

    keep, texts = [], []
    for i, line in enumerate(lines):  # each raw line freed once decoded: one copy of the chunk at a time
        lines[i] = b""
        if line.strip():
            keep.append(i)
            texts.append(_decode(line, table.path, lambda: f"line {number(i)}").rstrip("\r\n"))
    del lines
    if offset == 0 and texts:
        texts[0] = texts[0].removeprefix("\ufeff")

    def label(k: int) -> str:
        shown = texts[k] if len(texts[k]) <= 40 else texts[k][:37] + "..."
        return f"line {number(keep[k])} row {shown!r}"

    numeric, strings = selection.numeric, selection.strings
    width = len(table.columns)
    if texts and not strings and not any('"' in t for t in texts) and all(t.count(",") + 1 == width for t in texts):
        try:  # the common case in C; any failure is found and named by the loop below
            numbers = np.loadtxt(texts, delimiter=",", ndmin=2, dtype=np.float64, comments=None,
                                 usecols=[j for j, _ in numeric]) if numeric else np.zeros((len(texts), 0))
            return Block(numbers.reshape(len(texts), len(numeric)), np.zeros((len(texts), 0), object), label)
        except ValueError:
            pass
    numbers = np.empty((len(texts), len(numeric)), np.float64)
    text = np.empty((len(texts), len(strings)), object)
    for k, text_line in enumerate(texts):
        cells = _cells(text_line)
        if len(cells) != width:
            above = "the header has" if table.named else "line 1 has"
            raise DataError(table.path, label(k), f"has {len(cells)} fields, {above} {width}",
                            "make every row as long as the header" if table.named else "give every row the same "
                            "number of values")
        for i, (j, name) in enumerate(numeric):
            try:
                numbers[k, i] = float(cells[j])
            except ValueError:
                raise DataError(table.path, f"{label(k)}, column {j} ({name})", f"value {cells[j]!r} is not a number",
                                "fix the cell, remove the row, or declare the column's values categories: "
                                f"--set ingest.categorical_columns=[{name}]") from None
        for i, (j, _) in enumerate(strings):
            text[k, i] = cells[j].strip()
    return Block(numbers, text, label)
