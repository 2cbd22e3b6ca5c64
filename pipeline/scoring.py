"""What scoring a table with a pushed SavedModel needs, in-process (`pipeline.serving`) and on Beam
workers (`pipeline.beam_scoring`): the SavedModel loaded and its ``score`` / ``log_prob`` signature
applied (`load_saved_model`, `score_rows`), a table's columns matched to the model's by name
(`match_columns`), and its rows in the model's order, chunk by chunk (`plan_chunks`, `read_rows`,
`iter_row_chunks`), read and checked by the one table reader (`components.tables.reader`); a mixed
density's categories its vocabularies lack, counted per chunk and merged in input order
(`UnseenCategories`).

Both scoring paths import it at their top; TensorFlow is imported inside the two functions that
use a SavedModel, so reading and checking a table needs only NumPy.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import tempfile
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from tfflows.components import artifacts
from tfflows.components.errors import DataError
from tfflows.components.tables.reader import (CHUNK_ROWS, Chunk, Selection, Table, open_table, plan,
                                              read_chunk, select, short)

__all__ = ["CHUNK_ROWS", "Columns", "UnseenCategories", "iter_chunks", "iter_row_chunks", "load_saved_model", "match_columns",
           "open_data", "plan_chunks", "read_rows", "score_outputs", "score_rows"]


def load_saved_model(model_dir: str):
    """(local folder, loaded SavedModel) of a resolved version folder; an object-store model is
    downloaded to a temporary folder first (removed when the process exits)."""
    import tensorflow as tf  # here, not at the top: reading and checking a table needs only NumPy

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


def score_rows(loaded, rows: np.ndarray, batch_size: int, categories: Optional[np.ndarray] = None) -> np.ndarray:
    """float32 [n, len(score_outputs)] of float32 rows [n, D] by the SavedModel's own signature (the
    serving contract), ``batch_size`` rows a call. A conditional model's rows are [n, D + C], the
    features and then the numeric context (`match_columns` of both groups of names): each row is
    scored given its own context. Its categorical context columns' strings [n, Sc] and a mixed
    density's categories [n, S] come in ``categories``, in that order (`components.artifacts.input_columns`; the
    SavedModel looks them up in its vocabularies)."""
    import tensorflow as tf  # here, not at the top: reading and checking a table needs only NumPy

    outputs = score_outputs(loaded)
    signature = loaded.signatures["score" if len(outputs) > 1 else "log_prob"]
    inputs = signature.structured_input_signature[1]
    d = int(inputs["x"].shape[-1])
    parts = []
    for i in range(0, len(rows), batch_size):
        batch = rows[i:i + batch_size]
        given = {"context": tf.constant(batch[:, d:])} if "context" in inputs else {}
        strings = np.asarray(categories[i:i + batch_size], object).astype(bytes) if categories is not None else None
        start = 0
        for key in ("context_categorical", "categorical"):
            if key in inputs:
                width = int(inputs[key].shape[-1])
                given[key] = tf.constant(strings[:, start:start + width])
                start += width
        out = signature(x=tf.constant(batch[:, :d]), **given)
        parts.append(np.stack([out[name].numpy() for name in outputs], axis=1))
    return np.concatenate(parts) if parts else np.zeros((0, len(outputs)), np.float32)


@dataclasses.dataclass(frozen=True)
class Columns:
    """How the columns of a table feed the model (planned once, sent to Beam workers).

    Attributes:
      selection: the model's feature names, in its order, and the table's column of each.
      header: a .csv's first line names the columns (False: a header-less file, by position).
      note: the summary's line on how the columns were matched.
    """

    selection: Selection
    header: bool
    note: str


def _by_position(table: Table, names: Sequence[str], why: str) -> Columns:
    """Columns matched by position: only a table exactly as wide as the model is taken."""
    width = len(table.columns)
    if width != len(names):
        raise DataError(table.path, "columns", f"{width} values per row but the model takes {len(names)} "
                        f"({short(names)})", "write a header line naming the columns (they are matched by "
                        "name, in any order), or give exactly the model's columns in its order")
    return Columns(Selection(tuple(range(width)), tuple(names)), False,
                   f"columns: {why}: matched by position to the model's {short(names)}")


def match_columns(path: str, names: Sequence[str], categorical: Sequence[str] = ()) -> Columns:
    """How the columns of the table ``path`` feed a model with feature ``names`` (and a mixed
    density's ``categorical`` columns, read as strings): by name where the file names its columns
    (a .csv's header line, ...), other columns ignored and named in the note; by position (said in
    the note) for a header-less .csv (its first line holds only numbers) or an array, which must
    then hold exactly the model's columns, all numeric. Raises `DataError` naming missing,
    repeated or surplus columns, and for a file that cannot be read as a table."""
    table = open_data(path, None)
    if not table.named and categorical:
        raise DataError(path, "columns", f"the model reads its categorical columns {short(categorical)} by name, but "
                        "the file names no column", "write a header line naming the columns (any order)")
    if not table.named:
        why = "no header line" if table.format == "csv" else f"a .{table.format} has no column names"
        return _by_position(table, names, why)
    names = [*names, *categorical]
    selection = select(table, names, text=categorical, fix=f"name the model's columns {short(names)} in the header "
                       "(any order; other columns are ignored)")
    extra = [c for c in table.columns if c not in selection.names]
    note = f"columns: matched by name ({short(names)})"
    if extra:
        note += f"; ignored, not in the model: {short(extra)}"
    return Columns(selection, True, note)


def open_data(path: str, header: Optional[bool] = None) -> Table:
    """The `Table` of a file to score (its header only): `FileNotFoundError` for a missing one,
    `DataError` for one that is not a readable table."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    return open_table(path, header=header)


def plan_chunks(path: str, columns: Columns, chunk_rows: int = CHUNK_ROWS) -> List[Chunk]:
    """The chunks of about ``chunk_rows`` rows of the table (`components.tables.reader.plan`), in
    order; reads no row. Raises `DataError` for a table with no rows."""
    return plan(open_data(path, columns.header), chunk_rows)


def read_rows(path: str, columns: Columns, chunk: Chunk) -> Tuple[np.ndarray, np.ndarray]:
    """(float32 rows [n, D] in the model's column order, the categorical columns' strings [n, S]) of
    one chunk of `plan_chunks` (n = 0 for a .csv chunk of blank lines; S = 0 for a model of numeric
    columns only); `DataError` (one line: file, row or line, column, problem, fix) for a bad row."""
    return _chunk_rows(open_data(path, columns.header), chunk, columns)


def iter_chunks(path: str, columns: Columns, chunk_rows: int = CHUNK_ROWS
                ) -> Iterator[Tuple[int, np.ndarray, np.ndarray]]:
    """(index of the first row, float32 rows [n <= chunk_rows, D] in the model's column order, the
    categorical columns' strings [n, S]) of the table ``path``; ``columns``: its `match_columns`.
    Never holds more than one chunk (arrays are memory-mapped, a .csv is read a byte range at a
    time)."""
    table, start = open_data(path, columns.header), 0
    for chunk in plan(table, chunk_rows):
        rows, categories = _chunk_rows(table, chunk, columns)
        if len(rows):
            yield start, rows, categories
            start += len(rows)


def _chunk_rows(table: Table, chunk: Chunk, columns: Columns) -> Tuple[np.ndarray, np.ndarray]:
    """float32 rows and the categories' strings of one chunk; the float64 block read goes on return,
    so a generator holds one chunk's rows, not two copies."""
    block = read_chunk(table, chunk, columns.selection)
    return block.numbers.astype(np.float32), block.text


def iter_row_chunks(path: str, columns: Columns, chunk_rows: int = CHUNK_ROWS) -> Iterator[Tuple[int, np.ndarray]]:
    """`iter_chunks` of a table of numeric columns only: (index of the first row, float32 rows)."""
    for start, rows, _ in iter_chunks(path, columns, chunk_rows):
        yield start, rows


class UnseenCategories:
    """Per categorical column of a mixed density: how many scored rows hold a category its
    vocabulary lacks (the model scores them as its out-of-vocabulary bucket), and the first one.
    In-process, `add` each chunk's categories in input order; on Beam, each worker counts its chunk
    (`add`, `state`) and the driver `merge`s the chunks' states in chunk order: the same line."""

    def __init__(self, vocabularies: dict):
        self.vocabularies = {name: frozenset(values) for name, values in vocabularies.items()}
        self.counts = {name: 0 for name in vocabularies}
        self.examples: dict = {}

    def add(self, categories: np.ndarray) -> None:
        for i, (name, known) in enumerate(self.vocabularies.items()):
            unseen = [value for value in categories[:, i] if value not in known]
            self.counts[name] += len(unseen)
            if unseen:
                self.examples.setdefault(name, unseen[0])

    def state(self) -> dict:
        """The counts and first examples, as JSON (a Beam worker's count of its chunk)."""
        return {"counts": self.counts, "examples": self.examples}

    def merge(self, state: dict) -> None:
        """Adds a later chunk's `state`: counts summed, the first example kept."""
        for name, count in state["counts"].items():
            self.counts[name] += count
        for name, example in state["examples"].items():
            self.examples.setdefault(name, example)

    def line(self, done: str = "scored") -> Optional[str]:
        """One line naming each column with unseen categories (``done``: what the rows were, scored or
        sampled), or None when every category was known."""
        found = [f"{name}: {count} row(s), e.g. {self.examples[name]!r}" for name, count in self.counts.items() if count]
        return (f"unseen categories, {done} as the out-of-vocabulary bucket (categories absent from training; a "
                f"modelled column's bucket has probability 1/(train rows + 2), a context's is its own one-hot): {'; '.join(found)}"
                ) if found else None
