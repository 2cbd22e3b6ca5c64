"""Using a pushed SavedModel from the command line: score new data, draw samples.

Works on exactly what TF Serving loads (the `log_prob` and `sample` signatures), so it also checks
the exported contract. Models are found through `components.artifacts` (a version folder, or the
newest complete version of a serving/ folder, local or on an object store).

Scoring streams: rows are read ``chunk_rows`` at a time (a memory map for .npy, lines for .csv),
scored, summarised and appended to a temporary scores file that is renamed onto ``--scores`` at
the end, so memory stays bounded by one chunk whatever the size of the table, and a failed run
leaves no half-written scores file.
"""

from __future__ import annotations

import atexit
import itertools
import math
import os
import shutil
import tempfile
import uuid
from typing import Iterator, Optional, Tuple

import numpy as np

from tfflows.components import artifacts
from tfflows.components.errors import DataError

__all__ = ["resolve_model_dir", "evaluate_saved_model", "sample_saved_model", "iter_row_chunks"]

SCORE_FORMATS = (".npy", ".csv")
CHUNK_ROWS = 65536  # rows held in memory at once while scoring (~11 MB at D=43)


def resolve_model_dir(path: str) -> str:
    """A version folder as given, the newest complete version inside a serving/ folder, or a local
    copy of a registered model (``models:/NAME@ALIAS``, `pipeline.registry.registered_model_dir`)."""
    if path.startswith("models:/"):
        from tfflows.pipeline.registry import registered_model_dir

        return registered_model_dir(path)
    return artifacts.resolve_version(path)


def _load(path: str):
    """(model URI, local folder, loaded SavedModel); object-store models are downloaded first."""
    import tensorflow as tf

    model_dir = resolve_model_dir(path)
    local_dir = model_dir
    if artifacts.is_object_store(model_dir):
        cache = tempfile.mkdtemp(prefix="tfflows-model-")
        atexit.register(shutil.rmtree, cache, True)
        local_dir = artifacts.local_model_dir(model_dir, cache)
    return model_dir, local_dir, tf.saved_model.load(local_dir)


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


def iter_row_chunks(path: str, dim: Optional[int] = None,
                    chunk_rows: int = CHUNK_ROWS) -> Iterator[Tuple[int, np.ndarray]]:
    """(index of the first row, float32 rows [n <= chunk_rows, D]) of a .npy or a .csv with a header.

    Never holds more than one chunk: .npy files are memory-mapped, .csv files read line by line.
    Raises `DataError` (one line: file, row or line, problem, fix) for bad files.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if path.endswith(".npy"):
        try:
            table = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as error:
            raise DataError(path, "contents", f"not a numeric array ({str(error).splitlines()[0]})",
                            "save a float array with numpy.save") from error
        if table.ndim == 0 or len(table) == 0:
            raise DataError(path, "rows", "the array holds no rows", "save an array of shape [rows, D]")
        if table.dtype.kind not in "fiub":
            raise DataError(path, "dtype", f"{table.dtype} is not numeric", "save a float array")
        for start in range(0, len(table), chunk_rows):
            yield start, _check_chunk(table[start:start + chunk_rows], path, dim, lambda i, s=start: f"row {s + i}")
    elif path.endswith(".csv"):
        with open(path, encoding="utf-8", errors="replace") as f:
            header = f.readline()
            start, line_no = 0, 2  # line numbers are 1-based; line 1 is the header
            while True:
                lines = list(itertools.islice(f, chunk_rows))
                if not lines:
                    break
                numbers = [line_no + i for i, ln in enumerate(lines) if ln.strip()]  # blank lines skipped
                if numbers:
                    data = [lines[n - line_no] for n in numbers]
                    rows = _check_chunk(_csv_chunk(data, path, numbers), path, dim,
                                        lambda i, n=numbers: f"line {n[i]}")
                    yield start, rows
                    start += len(rows)
                line_no += len(lines)
            if start == 0:
                if not header.strip():
                    raise DataError(path, "rows", "the file is empty",
                                    "write a header line (column names), then one row of numbers per line")
                raise DataError(path, "rows", "only a header line, no rows",
                                "add rows below the header (the first line is always read as the header, "
                                "so a file without one loses its first row)")
    else:
        raise DataError(path, "file name", "unsupported format", "give a .npy or a .csv with a header line")


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
                         chunk_rows: int = CHUNK_ROWS) -> str:
    """Mean log-likelihood ± 2 s.e. (nats, raw data space) of `data`, and bits/dim for discrete data.

    Streams `data` ``chunk_rows`` rows at a time; with `scores_path` (.npy or .csv, never the input
    file) writes the per-row log-likelihoods in input order to exactly that path.
    """
    if scores_path:
        _check_scores_path(scores_path, data)
    if not os.path.exists(data):
        raise FileNotFoundError(f"{data}: no such file")
    import tensorflow as tf  # after the checks: a wrong path is reported in well under a second

    model_dir, local_dir, loaded = _load(model)
    signature = loaded.signatures["log_prob"]
    dim = int(signature.structured_input_signature[1]["x"].shape[-1])
    stats, writer = _RunningStats(), _ScoresWriter(scores_path) if scores_path else None
    try:
        for _, rows in iter_row_chunks(data, dim, chunk_rows):
            for i in range(0, len(rows), batch_size):
                scores = signature(x=tf.constant(rows[i:i + batch_size]))["log_prob"].numpy()
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
