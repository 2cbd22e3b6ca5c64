"""Using a pushed SavedModel from the command line: score new data, draw samples.

Works on exactly what TF Serving loads (the `log_prob` and `sample` signatures), so it also checks
the exported contract. Models are found through `components.artifacts` (a version folder, or the
newest complete version of a serving/ folder, local or on an object store).

Scoring streams: rows are read ``chunk_rows`` at a time (a memory map for .npy, lines for .csv),
scored, summarised and appended to a temporary scores file that is renamed onto ``--scores`` at
the end, so memory stays bounded by one chunk whatever the size of the table, and a failed run
leaves no half-written scores file. With Beam pipeline options the chunks are read and scored by
Beam workers instead (`pipeline.beam_scoring`), with the same scores, summary and atomic output.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import itertools
import math
import os
import shutil
import tempfile
import uuid
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np

from tfflows.components import artifacts
from tfflows.components.errors import DataError

__all__ = ["resolve_model_dir", "load_saved_model", "evaluate_saved_model", "sample_saved_model", "score_rows",
           "RowChunk", "plan_chunks", "read_chunk", "iter_row_chunks"]

SCORE_FORMATS = (".npy", ".csv")
CHUNK_ROWS = 65536  # rows held in memory at once while scoring (~11 MB at D=43)


def resolve_model_dir(path: str) -> str:
    """A version folder as given, the newest complete version inside a serving/ folder, or a local
    copy of a registered model (``models:/NAME@ALIAS``, `pipeline.registry.registered_model_dir`)."""
    if path.startswith("models:/"):
        from tfflows.pipeline.registry import registered_model_dir

        return registered_model_dir(path)
    return artifacts.resolve_version(path)


def load_saved_model(model_dir: str):
    """(local folder, loaded SavedModel) of a resolved version folder; an object-store model is
    downloaded to a temporary folder first (removed when the process exits)."""
    import tensorflow as tf

    local_dir = model_dir
    if artifacts.is_object_store(model_dir):
        cache = tempfile.mkdtemp(prefix="tfflows-model-")
        atexit.register(shutil.rmtree, cache, True)
        local_dir = artifacts.local_model_dir(model_dir, cache)
    return local_dir, tf.saved_model.load(local_dir)


def _load(path: str):
    """(model URI, local folder, loaded SavedModel) of a model as `resolve_model_dir` takes it."""
    model_dir = resolve_model_dir(path)
    return (model_dir, *load_saved_model(model_dir))


def score_rows(loaded, rows: np.ndarray, batch_size: int) -> np.ndarray:
    """log p(x) [n] of float32 rows [n, D] by the SavedModel's `log_prob` signature, `batch_size` rows a call."""
    import tensorflow as tf

    signature = loaded.signatures["log_prob"]
    scores = [signature(x=tf.constant(rows[i:i + batch_size]))["log_prob"].numpy()
              for i in range(0, len(rows), batch_size)]
    return np.concatenate(scores) if scores else np.zeros(0, np.float32)


def _metadata(model_dir: str) -> dict:
    """The dataset metadata the push component stores beside the SavedModel."""
    info = artifacts.read_json(os.path.join(model_dir, artifacts.METADATA_FILE)) or {}
    return info.get("dataset") or {}


def _check_chunk(rows: np.ndarray, path: str, dim: Optional[int], name_row) -> np.ndarray:
    """float32 [n, D] rows, or a one-line DataError naming the row via ``name_row(i)``."""
    rows = np.asarray(rows, dtype=np.float32).reshape(len(rows), -1)
    if dim is not None and rows.shape[1] != dim:
        raise DataError(path, "columns", f"{rows.shape[1]} values per row but the model takes {dim}",
                        "pass rows of the data the model was trained on")
    bad = ~np.isfinite(rows)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(path, f"{name_row(row)}, column {col}", "NaN or infinite value", "remove or fix that row")
    return rows


def _csv_chunk(lines: list, path: str, numbers: list) -> np.ndarray:
    try:
        return np.loadtxt(lines, delimiter=",", ndmin=2, dtype=np.float32)
    except ValueError:
        pass
    width = None  # find the first bad line, to name it
    for line, number in zip(lines, numbers):
        where = f"line {number}"
        try:
            values = [float(v) for v in line.split(",")]
        except ValueError:
            raise DataError(path, where, f"not a numeric row ({line.strip()[:60]!r})",
                            "write numbers only, one row per example") from None
        if width is not None and len(values) != width:
            raise DataError(path, where, f"{len(values)} values where the rows above have {width}",
                            "give every row the same number of values")
        width = len(values)
    raise DataError(path, f"lines {numbers[0]}-{numbers[-1]}", "not a numeric table",
                    "write numbers only, one row per example")


@dataclasses.dataclass(frozen=True)
class RowChunk:
    """Where one chunk of a table lies, small enough to send to a Beam worker that reads it.

    Attributes:
      index: position of the chunk in the table (chunk ``k`` holds rows before chunk ``k + 1``'s).
      first: .npy: index of its first row; .csv: number of its first line (1-based, header = 1).
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


def _csv_line_chunks(path: str, chunk_rows: int) -> Iterator[Tuple[RowChunk, list]]:
    """(chunk, its raw lines) of a .csv after its header line; DataError if it holds no rows."""
    with open(path, "rb") as f:
        header = f.readline()
        index, line_no, offset, any_rows = 0, 2, len(header), False
        while lines := list(itertools.islice(f, chunk_rows)):
            any_rows = any_rows or any(line.strip() for line in lines)
            yield RowChunk(index, line_no, len(lines), offset), lines
            index, line_no, offset = index + 1, line_no + len(lines), offset + sum(map(len, lines))
    if not any_rows:
        if not header.strip():
            raise DataError(path, "rows", "the file is empty",
                            "write a header line (column names), then one row of numbers per line")
        raise DataError(path, "rows", "only a header line, no rows",
                        "add rows below the header (the first line is always read as the header, "
                        "so a file without one loses its first row)")


def _csv_rows(lines: list, chunk: RowChunk, path: str, dim: Optional[int]) -> np.ndarray:
    """The checked rows of a chunk's raw lines (blank lines skipped; may be empty)."""
    numbers = [chunk.first + i for i, line in enumerate(lines) if line.strip()]
    if not numbers:
        return np.zeros((0, dim or 0), np.float32)
    text = [lines[n - chunk.first].decode("utf-8", "replace") for n in numbers]
    return _check_chunk(_csv_chunk(text, path, numbers), path, dim, lambda i: f"line {numbers[i]}")


def _check_table_path(path: str) -> None:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if not path.endswith((".npy", ".csv")):
        raise DataError(path, "file name", "unsupported format", "give a .npy or a .csv with a header line")


def plan_chunks(path: str, chunk_rows: int = CHUNK_ROWS) -> Iterator[RowChunk]:
    """The chunks of ``chunk_rows`` rows (.npy) or lines (.csv, after the header) of a table, in order.

    Reads only the .npy header, or scans the .csv once for line offsets (one chunk at a time).
    Raises `DataError` for a file that cannot hold rows (empty, header only, not numeric).
    """
    _check_table_path(path)
    if path.endswith(".npy"):
        rows = len(_open_npy(path))
        for index, start in enumerate(range(0, rows, chunk_rows)):
            yield RowChunk(index, start, min(chunk_rows, rows - start))
    else:
        for chunk, _ in _csv_line_chunks(path, chunk_rows):
            yield chunk


def read_chunk(path: str, chunk: RowChunk, dim: Optional[int] = None) -> np.ndarray:
    """float32 rows [n, D] of one chunk of `plan_chunks` (n = 0 for a .csv chunk of blank lines).

    Raises `DataError` (one line: file, row or line, problem, fix) for a bad row.
    """
    if path.endswith(".npy"):
        rows = _open_npy(path)[chunk.first:chunk.first + chunk.count]
        return _check_chunk(rows, path, dim, lambda i: f"row {chunk.first + i}")
    with open(path, "rb") as f:
        f.seek(chunk.offset)
        return _csv_rows(list(itertools.islice(f, chunk.count)), chunk, path, dim)


def iter_row_chunks(path: str, dim: Optional[int] = None,
                    chunk_rows: int = CHUNK_ROWS) -> Iterator[Tuple[int, np.ndarray]]:
    """(index of the first row, float32 rows [n <= chunk_rows, D]) of a .npy or a .csv with a header.

    Never holds more than one chunk: .npy files are memory-mapped, .csv files read line by line
    (once: `plan_chunks`'s scan and the parsing share the lines). Raises `DataError` (one line:
    file, row or line, problem, fix) for bad files.
    """
    _check_table_path(path)
    if path.endswith(".npy"):
        pairs = ((chunk, None) for chunk in plan_chunks(path, chunk_rows))
    else:
        pairs = _csv_line_chunks(path, chunk_rows)
    start = 0
    for chunk, lines in pairs:
        rows = read_chunk(path, chunk, dim) if lines is None else _csv_rows(lines, chunk, path, dim)
        if len(rows):
            yield start, rows
            start += len(rows)


def _check_scores_path(scores_path: str, data: str) -> None:
    if not scores_path.endswith(SCORE_FORMATS):
        raise DataError(scores_path, "--scores", "unknown file extension",
                        "name the scores file .npy or .csv")
    if os.path.exists(scores_path) and os.path.exists(data) and os.path.samefile(scores_path, data):
        raise DataError(scores_path, "--scores", "is the input file given to --data",
                        "write the scores to a new file (the input is never overwritten)")
    parent = os.path.dirname(os.path.abspath(scores_path))
    if not os.path.isdir(parent):
        raise DataError(scores_path, "--scores", f"folder {parent} does not exist", "create it first")


class _ScoresWriter:
    """Appends scores to a temporary file beside ``path``; `commit` renames it onto ``path``."""

    def __init__(self, path: str):
        self.path, self.count = path, 0
        self.tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
        self.raw = self.tmp + ".f32"
        self.file = open(self.raw if path.endswith(".npy") else self.tmp, "wb")
        if path.endswith(".csv"):
            self.file.write(b"log_prob\n")

    def write(self, scores: np.ndarray) -> None:
        if self.path.endswith(".csv"):
            np.savetxt(self.file, scores[:, None], fmt="%.9g")
        else:
            self.file.write(np.ascontiguousarray(scores, "<f4").tobytes())
        self.count += len(scores)

    def commit(self) -> None:
        self.file.close()
        if self.path.endswith(".npy"):  # the header needs the row count: prepend it, copy in blocks
            with open(self.tmp, "wb") as out, open(self.raw, "rb") as raw:
                np.lib.format.write_array_header_1_0(
                    out, {"descr": "<f4", "fortran_order": False, "shape": (self.count,)})
                shutil.copyfileobj(raw, out, 1 << 20)  # 1 MB blocks
            os.remove(self.raw)
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.file.close()
        for path in (self.tmp, self.raw):
            if os.path.exists(path):
                os.remove(path)


class _RunningStats:
    """Count, mean and sum of squared deviations of the finite scores, merged chunk by chunk (Chan et al.)."""

    def __init__(self):
        self.n, self.mean, self.m2, self.non_finite = 0, 0.0, 0.0, 0

    def add(self, scores: np.ndarray) -> None:
        finite = scores[np.isfinite(scores)].astype(np.float64)
        self.non_finite += len(scores) - len(finite)
        if not len(finite):
            return
        n, mean = len(finite), float(finite.mean())
        m2 = float(((finite - mean) ** 2).sum())
        total = self.n + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.n * n / total
        self.n = total

    def two_se(self) -> float:
        return 2 * math.sqrt(self.m2 / (self.n - 1) / self.n) if self.n > 1 else float("nan")


def evaluate_saved_model(model: str, data: str, scores_path: Optional[str] = None, batch_size: int = 4096,
                         chunk_rows: int = CHUNK_ROWS, beam_args: Optional[Sequence[str]] = None) -> str:
    """Mean log-likelihood ± 2 s.e. (nats, raw data space) of `data`, and bits/dim for discrete data.

    Streams `data` ``chunk_rows`` rows at a time; with `scores_path` (.npy or .csv, never the input
    file) writes the per-row log-likelihoods in input order to exactly that path. With `beam_args`
    (Beam pipeline options, e.g. ``["--runner=PortableRunner", ...]``) the chunks are read and
    scored by a Beam pipeline on that runner (`pipeline.beam_scoring`); the result is the same.
    """
    if scores_path:
        _check_scores_path(scores_path, data)
    if not os.path.exists(data):
        raise FileNotFoundError(f"{data}: no such file")
    model_dir, local_dir, loaded = _load(model)  # imports TensorFlow: after the checks, which take well under a second
    dim = int(loaded.signatures["log_prob"].structured_input_signature[1]["x"].shape[-1])
    if beam_args is None:
        chunk_scores = (score_rows(loaded, rows, batch_size) for _, rows in iter_row_chunks(data, dim, chunk_rows))
    else:
        from tfflows.pipeline.beam_scoring import score_with_beam

        shards = os.path.dirname(os.path.abspath(scores_path)) if scores_path else None
        chunk_scores = score_with_beam(model_dir, data, dim, list(plan_chunks(data, chunk_rows)), batch_size,
                                       beam_args, shards)
    stats, writer = _RunningStats(), _ScoresWriter(scores_path) if scores_path else None
    try:
        with contextlib.closing(chunk_scores):
            for scores in chunk_scores:
                stats.add(scores)
                if writer:
                    writer.write(scores)
        if writer:
            writer.commit()
    except BaseException:
        if writer:
            writer.discard()
        raise
    total = stats.n + stats.non_finite
    lines = [f"model: {model_dir}", f"rows: {total} from {data}"]
    if stats.non_finite:
        lines.append(f"rows scored -inf or NaN (outside the model's support, excluded below): {stats.non_finite}")
    if stats.n:
        lines.append(f"log-likelihood: {stats.mean:.4f} ± {stats.two_se():.4f} nats (mean ± 2 s.e.)")
    meta = _metadata(local_dir)
    if meta.get("discrete") and stats.n:
        lines.append(f"bits/dim: {-stats.mean / (dim * math.log(2)):.4f} (dequantised data in [0, {meta['num_levels']}))")
    if scores_path:
        lines.append(f"per-row scores: {scores_path}")
    return "\n".join(lines)


def sample_saved_model(model: str, n: int, seed: int, out: str) -> str:
    """Draws `n` samples with the `sample` signature and writes them to `out`."""
    import tensorflow as tf

    if n < 1:
        raise DataError("-n", "number of samples", f"must be >= 1, got {n}", "pass a positive -n")
    model_dir, local_dir, loaded = _load(model)
    samples = loaded.signatures["sample"](num_samples=tf.constant(n, tf.int32),
                                          seed=tf.constant([seed, 0], tf.int32))["samples"].numpy()
    if out.endswith(".png"):
        meta = _metadata(local_dir)
        if not meta.get("image_shape"):
            raise DataError(out, "format", "an image grid needs image data", "write .npy or .csv instead")
        _image_grid(samples, meta["image_shape"], meta.get("num_levels") or 256, out)
    elif out.endswith(".csv"):
        np.savetxt(out, samples, delimiter=",")
    else:
        np.save(out, samples)
    return f"wrote {n} samples from {model_dir} to {out}"


def _image_grid(samples, shape, levels, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = int(math.ceil(math.sqrt(len(samples))))
    rows = int(math.ceil(len(samples) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols, rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image in zip(axes.ravel(), samples):
        ax.imshow(np.clip(image.reshape(shape) / levels, 0, 1), cmap="gray" if len(shape) == 2 else None)
    fig.savefig(out, dpi=80, bbox_inches="tight")
    plt.close(fig)
