"""Using a pushed SavedModel from the command line: score new data, flag anomalies, draw samples.

Works on exactly what TF Serving loads (the ``score`` signature of a calibrated model, else
``log_prob``; ``sample``), so it also checks the exported contract. Models are found through
`components.artifacts` (a version folder, or the newest complete version of a serving/ folder,
local or on an object store).

Columns are matched by name: a .csv's header is matched to the model's feature names (the dataset
metadata stored with the model; a conditional model's context columns too, read from the same
file, each row scored given its own context) in any order, other columns are ignored and named in
the summary, missing ones are refused naming them; a header-less .csv or a .npy is taken by position only when
exactly as wide as the model, and the summary says so (`match_columns`).

Scores are calibrated: a pushed model carries the quantiles of its own held-out scores
(``held_out_quantiles``, from evaluate), so each row gets a percentile (the share of held-out rows
scoring lower) and ``--threshold q0.01`` flags rows below the held-out 1% quantile.

Scoring streams: rows are read ``chunk_rows`` at a time (a memory map for .npy, lines for .csv),
scored, summarised and appended to a temporary scores file that is renamed onto ``--scores`` at
the end, so memory stays bounded by one chunk whatever the size of the table, and a failed run
leaves no half-written scores file. With Beam pipeline options the chunks are read and scored by
Beam workers instead (`pipeline.beam_scoring`), with the same scores, summary and atomic output.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import uuid
from typing import Optional, Sequence, Tuple

import numpy as np

from tfflows.components import artifacts
from tfflows.components.artifacts import (categorical_names, context_categorical_names, context_names, feature_names,
                                          input_columns, input_vocabularies, numeric_context_names)
from tfflows.components.errors import DataError
from tfflows.pipeline.scoring import (CHUNK_ROWS, Columns, UnseenCategories, iter_chunks, iter_row_chunks,
                                      load_saved_model, match_columns, open_data, plan_chunks, score_outputs,
                                      score_rows)

__all__ = ["resolve_model_dir", "load_saved_model", "evaluate_saved_model", "sample_saved_model", "score_rows",
           "score_outputs", "parse_threshold", "Columns", "match_columns", "plan_chunks", "iter_row_chunks"]

SCORE_FORMATS = (".npy", ".csv")


def resolve_model_dir(path: str) -> str:
    """A version folder as given, the newest complete version inside a serving/ folder, or a local
    copy of a registered model (``models:/NAME@ALIAS``, `pipeline.registry.registered_model_dir`)."""
    if path.startswith("models:/"):
        from tfflows.pipeline.registry import registered_model_dir  # MLflow: only for a registered model

        return registered_model_dir(path)
    return artifacts.resolve_version(path)


def _load(path: str):
    """(model URI, local folder, loaded SavedModel) of a model as `resolve_model_dir` takes it."""
    model_dir = resolve_model_dir(path)
    return (model_dir, *load_saved_model(model_dir))


def _info(model_dir: str) -> dict:
    """The metadata file the push component stores beside the SavedModel (`components.push.export`)."""
    return artifacts.read_json(os.path.join(model_dir, artifacts.METADATA_FILE)) or {}


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
    """Appends scores to a temporary file beside ``path``; `commit` renames it onto ``path``.

    A .csv gets one line per row: ``row`` (0-based, in input order), then ``columns`` (``log_prob``,
    ``percentile`` when the model is calibrated, ``is_anomaly`` 0/1 with a threshold); a .npy gets
    ``log_prob`` alone, float32 [rows] (a plain array, as before columns existed).
    """

    FORMATS = {"log_prob": "%.9g", "percentile": "%.6g", "is_anomaly": "%d"}

    def __init__(self, path: str, columns: Sequence[str]):
        self.path, self.count, self.columns = path, 0, tuple(columns)
        self.tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
        self.raw = self.tmp + ".f32"
        self.file = open(self.raw if path.endswith(".npy") else self.tmp, "wb")
        if path.endswith(".csv"):
            self.file.write(",".join(("row", *self.columns)).encode() + b"\n")

    def write(self, table: np.ndarray) -> None:
        """``table``: float [n, len(columns)], log_prob first."""
        if self.path.endswith(".csv"):
            rows = np.arange(self.count, self.count + len(table), dtype=np.float64)[:, None]
            np.savetxt(self.file, np.hstack([rows, table]), delimiter=",",
                       fmt=["%d", *(self.FORMATS[c] for c in self.columns)])
        else:
            self.file.write(np.ascontiguousarray(table[:, 0], "<f4").tobytes())
        self.count += len(table)

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


SUMMARY_SAMPLE = 20_000  # finite scores kept for the summary's quantiles (exact up to this many rows)
SUMMARY_LEVELS = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def _mix(index: np.ndarray) -> np.ndarray:
    """splitmix64 of uint64 row indices: a fixed pseudo-random key per row."""
    z = index + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class _QuantileSample:
    """A uniform sample of at most `SUMMARY_SAMPLE` finite scores in bounded memory: the rows whose
    index hashes lowest (`_mix`), so the sample, and the quantiles, do not depend on the chunking or
    on the path (in-process or Beam)."""

    def __init__(self):
        self.keys, self.values, self.seen = np.zeros(0, np.uint64), np.zeros(0, np.float64), 0

    def add(self, scores: np.ndarray) -> None:
        index = np.arange(self.seen, self.seen + len(scores), dtype=np.uint64)
        self.seen += len(scores)
        finite = np.isfinite(scores)
        self.keys = np.concatenate([self.keys, _mix(index[finite])])
        self.values = np.concatenate([self.values, scores[finite].astype(np.float64)])
        if len(self.keys) > SUMMARY_SAMPLE:
            keep = np.argpartition(self.keys, SUMMARY_SAMPLE)[:SUMMARY_SAMPLE]
            self.keys, self.values = self.keys[keep], self.values[keep]

    def line(self) -> str:
        quantiles = np.quantile(self.values, SUMMARY_LEVELS)
        text = ", ".join(f"{'median' if level == 0.5 else f'{level:.0%}'} {v:.4f}"
                         for level, v in zip(SUMMARY_LEVELS, quantiles))
        estimated = f" (from a uniform sample of {SUMMARY_SAMPLE} rows)" if self.seen > SUMMARY_SAMPLE else ""
        return f"log-likelihood quantiles: {text}{estimated}"


def parse_threshold(spec: Optional[str]):
    """``("q", level)`` for ``q0.01`` (a held-out quantile level in (0, 1)), ``("log_prob", value)``
    for a log-density like ``-12.5``, None for None; `DataError` for anything else. Checked before
    the model loads."""
    if spec is None:
        return None
    fix = "give a held-out quantile like q0.01 (1% of held-out rows score lower) or a log-density like -12.5"
    try:
        kind, value = ("q", float(spec[1:])) if spec.startswith("q") else ("log_prob", float(spec))
    except ValueError:
        raise DataError("--threshold", spec, "neither a quantile nor a number", fix) from None
    if kind == "q" and not 0 < value < 1 or not math.isfinite(value):
        raise DataError("--threshold", spec, "a quantile level is between 0 and 1, a log-density finite", fix)
    return kind, value


def _resolve_threshold(parsed, spec: str, calibration: Optional[dict], model_dir: str) -> Tuple[float, str]:
    """(log-density below which a row is flagged, how the summary names it)."""
    kind, value = parsed
    if kind == "log_prob":
        return value, f"log_prob < {value:g}"
    if not calibration:
        raise DataError(model_dir, "--threshold", f"{spec} needs the model's held-out quantiles, and it carries "
                        "none (fitted to a target, or pushed before they existed)",
                        "give a log-density instead, e.g. --threshold -12.5, or push the model again")
    cut = float(np.interp(value, calibration["levels"], calibration["values"]))
    return cut, (f"log_prob < {cut:.4f}, {spec} of the model's {calibration['count']} held-out "
                 f"{calibration['split']} rows")


def _held_out_line(calibration: Optional[dict]) -> str:
    """What the model's own held-out rows scored, to read the table's quantiles against."""
    if not calibration:
        return "percentile: not available (the model carries no held-out quantiles)"
    q = dict(zip(calibration["levels"], calibration["values"]))
    return (f"held-out {calibration['split']} rows of the model ({calibration['count']}): 1% {q[0.01]:.4f}, "
            f"median {q[0.5]:.4f}, 99% {q[0.99]:.4f}")


def _scored_chunks(model_dir, loaded, data, columns, batch_size, chunk_rows, beam_args, scores_path, unseen):
    """Score tables [n, len(score_outputs)] of `data`'s chunks in input order, in-process or by Beam;
    a mixed density's categories are counted into ``unseen`` (`UnseenCategories`) on the way."""
    if beam_args is None:
        def scored():
            for _, rows, categories in iter_chunks(data, columns, chunk_rows):
                unseen.add(categories)
                yield score_rows(loaded, rows, batch_size, categories)
        return scored()
    from tfflows.pipeline.beam_scoring import score_with_beam  # Beam: only with --beam-args

    shards = os.path.dirname(os.path.abspath(scores_path)) if scores_path else None
    return score_with_beam(model_dir, data, columns, plan_chunks(data, columns, chunk_rows), batch_size,
                           beam_args, shards, unseen)


def evaluate_saved_model(model: str, data: str, scores_path: Optional[str] = None, batch_size: int = 4096,
                         chunk_rows: int = CHUNK_ROWS, beam_args: Optional[Sequence[str]] = None,
                         threshold: Optional[str] = None) -> str:
    """Scores `data` with a pushed model: mean log-likelihood ± 2 s.e. (nats, raw data space),
    quantiles, bits/dim for discrete data and, with `threshold`, the rows flagged as anomalies.

    A .csv's columns are matched to the model's feature names by its header (any order; other
    columns ignored and named), a header-less .csv or a .npy by position (`match_columns`). Streams
    `data` ``chunk_rows`` rows at a time; with `scores_path` (.csv: ``row, log_prob, percentile,
    is_anomaly``; .npy: log_prob; never the input file) writes per-row results in input order to
    exactly that path. ``percentile`` is the share of the model's held-out rows scoring lower (the
    SavedModel's ``score`` signature); `threshold` (``q0.01``: the held-out 1% quantile, or a
    log-density) flags rows scoring below it. With `beam_args` (Beam pipeline options) the chunks
    are read and scored by a Beam pipeline (`pipeline.beam_scoring`); the result is the same.
    """
    parsed = parse_threshold(threshold)
    if scores_path:
        _check_scores_path(scores_path, data)
    open_data(data)  # a readable table (its header only), before the model loads
    model_dir, local_dir, loaded = _load(model)  # imports TensorFlow: after the checks, which take well under a second
    dim = int(loaded.signatures["log_prob"].structured_input_signature[1]["x"].shape[-1])
    info = _info(local_dir)
    calibration = info.get("held_out_quantiles") if "score" in loaded.signatures else None
    columns = match_columns(data, *input_columns(info, dim))
    cut, cut_text = _resolve_threshold(parsed, threshold, calibration, model_dir) if parsed else (None, None)
    outputs = score_outputs(loaded) + (("is_anomaly",) if parsed else ())
    unseen = UnseenCategories(input_vocabularies(info))
    chunk_scores = _scored_chunks(model_dir, loaded, data, columns, batch_size, chunk_rows, beam_args, scores_path,
                                  unseen)
    stats, sample, flagged = _RunningStats(), _QuantileSample(), 0
    writer = _ScoresWriter(scores_path, outputs) if scores_path else None
    try:
        with contextlib.closing(chunk_scores):
            for table in chunk_scores:
                stats.add(table[:, 0])
                sample.add(table[:, 0])
                if parsed:
                    flags = table[:, 0] < cut
                    flagged += int(flags.sum())
                    table = np.column_stack([table, flags])
                if writer:
                    writer.write(table)
        if writer:
            writer.commit()
    except BaseException:
        if writer:
            writer.discard()
        raise
    total = stats.n + stats.non_finite
    lines = [f"model: {model_dir}", columns.note, f"rows: {total} from {data}"]
    if stats.non_finite:
        lines.append(f"rows scored -inf or NaN (outside the model's support, excluded below): {stats.non_finite}")
    if unseen.line():
        lines.append(unseen.line())
    if stats.n:
        lines += [f"log-likelihood: {stats.mean:.4f} ± {stats.two_se():.4f} nats (mean ± 2 s.e.)", sample.line()]
    lines.append(_held_out_line(calibration))
    meta = info.get("dataset") or {}
    if meta.get("discrete") and stats.n:
        lines.append(f"bits/dim: {-stats.mean / (dim * math.log(2)):.4f} (dequantised data in [0, {meta['num_levels']}))")
    if parsed:
        lines.append(f"anomalies ({cut_text}): {flagged} of {total} rows ({flagged / max(total, 1):.2%})")
    if scores_path:
        lines.append(f"per-row scores: {scores_path}"
                     + (f" ({', '.join(('row',) + outputs)})" if scores_path.endswith(".csv") else " (log_prob)"))
    return "\n".join(lines)


def _contexts(spec: Optional[str], info: dict, model_dir: str) -> Optional[dict]:
    """The raw contexts of ``--context`` (``"machine=m7,load=0.3"``, or a .csv / .npy file of
    contexts, read like `evaluate`'s tables: by name, or by position) as the ``sample`` signature's
    inputs: ``context`` float32 [K, C] (the numeric context columns) and ``context_categorical``
    strings [K, Sc] (the categorical ones), each only where the model has such columns; None for an
    unconditional model. A missing, surplus or unknown context, or a numeric one that is not a
    number, is one `DataError` line."""
    names, numeric, categorical = context_names(info), numeric_context_names(info), context_categorical_names(info)
    given = ",".join(f"{name}=VALUE" for name in names)
    if not names:
        if spec is not None:
            raise DataError(model_dir, "--context", "the model is unconditional: it takes no context",
                            "leave --context out")
        return None
    if spec is None:
        raise DataError(model_dir, "--context", f"the model is conditioned on {', '.join(names)} and no context "
                        "was given", f"pass --context '{given}' or --context contexts.csv")
    if "=" not in spec:
        columns = match_columns(spec, numeric, categorical)
        chunks = list(iter_chunks(spec, columns))  # a table without rows is refused by its reader
        rows, text = (np.concatenate([chunk[i] for chunk in chunks]) for i in (1, 2))
    else:
        values: dict = {}
        for part in spec.split(","):
            name, _, value = (p.strip() for p in part.partition("="))
            if name not in names:
                raise DataError("--context", name or part, f"is not a context of the model ({', '.join(names)})",
                                f"pass --context '{given}'")
            values[name] = value if name in categorical else _context_number(name, value, given)
        if missing := [name for name in names if name not in values]:
            raise DataError("--context", ", ".join(missing), "not given", f"pass --context '{given}'")
        rows = np.array([[values[name] for name in numeric]], np.float32)
        text = np.array([[values[name] for name in categorical]], object)
    return {**({"context": rows} if numeric else {}), **({"context_categorical": text} if categorical else {})}


def _context_number(name: str, text: str, given: str) -> float:
    """The value of the numeric context column ``name`` given inline as ``text``: a finite number,
    else one `DataError` line."""
    try:
        value = float(text)
    except ValueError:
        raise DataError("--context", name, f"value {text!r} is not a number", f"pass --context '{given}'") from None
    if not math.isfinite(value):
        raise DataError("--context", name, f"value {text!r} is not finite", f"pass --context '{given}'")
    return value


def sample_saved_model(model: str, n: int, seed: int, out: str, context: Optional[str] = None) -> str:
    """Draws `n` samples with the `sample` signature and writes them to `out`: a .csv with the
    model's feature names as its header and float32-exact values (`evaluate` reads it back by
    name), a .npy, or a .png image grid (image data).

    A conditional model samples given `context` (`_contexts`: one context, or a file of K): `n`
    samples per context, K x n rows, the first `n` at the first context; a .csv has the context
    columns after the features, the numeric ones then the categorical ones (so `evaluate` scores
    each sample given its context), a .npy the samples alone; a categorical context its vocabulary
    lacks is sampled at its out-of-vocabulary one-hot and said in one line. A mixed density's
    samples come with their categories (strings), the .csv's last columns (a .npy holds the numeric
    columns only)."""
    if n < 1:
        raise DataError("-n", "number of samples", f"must be >= 1, got {n}", "pass a positive -n")
    import tensorflow as tf  # after the argument check, as in `_load`: a bad argument fails in well under a second

    model_dir, local_dir, loaded = _load(model)
    info = _info(local_dir)
    contexts = _contexts(context, info, model_dir)
    count = 1 if contexts is None else len(next(iter(contexts.values())))
    given = {key: tf.constant(np.repeat(value if key == "context" else value.astype(bytes), n, axis=0))
             for key, value in (contexts or {}).items()}
    total = n * count
    drawn = loaded.signatures["sample"](num_samples=tf.constant(total, tf.int32),
                                        seed=tf.constant([seed, 0], tf.int32), **given)
    samples = drawn["samples"].numpy()
    if out.endswith(".png"):
        meta = info.get("dataset") or {}
        if not meta.get("image_shape"):
            raise DataError(out, "format", "an image grid needs image data", "write .npy or .csv instead")
        _image_grid(samples, meta["image_shape"], meta.get("num_levels") or 256, out)
    elif out.endswith(".csv"):
        # %.9g: the shortest decimal that reads back as the same float32 (scores round-trip exactly)
        names = (feature_names(info, samples.shape[1]) + numeric_context_names(info) + context_categorical_names(info)
                 + categorical_names(info))
        # Contexts as the user gave them: float32's shortest decimal (0.3, not 0.300000012), which
        # reads back as the same float32; categories as their strings.
        fmt = ["%.9g"] * samples.shape[1] + ["%s"] * (len(names) - samples.shape[1])
        others = [[[str(value) for value in row] for row in given["context"].numpy()]] if "context" in given else []
        others += [strings.numpy().astype(str) for strings in (given.get("context_categorical"), drawn.get("categories"))
                   if strings is not None]
        table = np.hstack([samples.astype(object), *others]) if others else samples
        np.savetxt(out, table, delimiter=",", fmt=fmt, header=",".join(names), comments="")
    else:
        np.save(out, samples)
    per_context = "" if contexts is None else f" ({n} per context, {count} context(s))"
    lines = [f"wrote {total} samples{per_context} from {model_dir} to {out}"]
    if contexts and "context_categorical" in contexts:
        unseen = UnseenCategories(info.get("context_categories") or {})
        unseen.add(contexts["context_categorical"])
        lines += [unseen.line("sampled")] if unseen.line() else []
    return "\n".join(lines)


def _image_grid(samples, shape, levels, out):
    import matplotlib  # only for a .png; the Agg backend must be chosen before pyplot is imported

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
