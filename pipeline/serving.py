"""Using a pushed SavedModel from the command line: score new data, draw samples.

Works on exactly what TF Serving loads (the `log_prob` and `sample` signatures), so it also checks
the exported contract.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

from tfflows.components.errors import DataError

__all__ = ["resolve_model_dir", "evaluate_saved_model", "sample_saved_model", "read_rows"]


def resolve_model_dir(path: str) -> str:
    """A version folder as given, or the newest integer version inside a serving/ folder."""
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    names = os.listdir(path) if os.path.isdir(path) else []  # skips in-flight `.tmp-*` pushes
    versions = [int(n) for n in names if n.isdigit() and os.path.exists(os.path.join(path, n, "saved_model.pb"))]
    if not versions:
        raise FileNotFoundError(f"{path}: no SavedModel here; pass serving/<version> or the serving/ folder of a run")
    return os.path.join(path, str(max(versions)))


def _load(path: str):
    import tensorflow as tf

    model_dir = resolve_model_dir(path)
    return model_dir, tf.saved_model.load(model_dir)


def _metadata(model_dir: str) -> dict:
    """The dataset metadata the push component stores beside the SavedModel."""
    path = os.path.join(model_dir, "assets.extra", "tfflows.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f).get("dataset") or {}


def read_rows(path: str, dim: int | None = None) -> np.ndarray:
    """Raw rows [N, D] from a .npy (no pickles) or a .csv with a header line."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        if path.endswith(".npy"):
            rows = np.load(path, allow_pickle=False)
        elif path.endswith(".csv"):
            rows = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
        else:
            raise DataError(path, "file name", "unsupported format", "give a .npy or a .csv with a header line")
    except ValueError as error:
        raise DataError(path, "contents", f"not a numeric table ({str(error).splitlines()[0]})",
                        "write numbers only, one row per example") from error
    rows = np.asarray(rows, dtype=np.float32).reshape(len(rows), -1)
    if len(rows) == 0:
        raise DataError(path, "rows", "the file holds no rows", "give at least one row")
    if dim is not None and rows.shape[1] != dim:
        raise DataError(path, "columns", f"{rows.shape[1]} values per row but the model takes {dim}",
                        "pass rows of the data the model was trained on")
    bad = ~np.isfinite(rows)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(path, f"row {row}, column {col}", "NaN or infinite value", "remove or fix that row")
    return rows


def evaluate_saved_model(model: str, data: str, scores_path: str | None = None, batch_size: int = 1000) -> str:
    """Mean log-likelihood ± 2 s.e. (nats, raw data space) of `data`, and bits/dim for discrete data."""
    import tensorflow as tf

    model_dir, loaded = _load(model)
    signature = loaded.signatures["log_prob"]
    dim = int(signature.structured_input_signature[1]["x"].shape[-1])
    rows = read_rows(data, dim)
    scores = np.concatenate([
        signature(x=tf.constant(rows[i : i + batch_size]))["log_prob"].numpy()
        for i in range(0, len(rows), batch_size)])
    mean = float(np.mean(scores))
    two_se = float(2 * np.std(scores, ddof=1) / math.sqrt(len(scores))) if len(scores) > 1 else float("nan")
    lines = [f"model: {model_dir}", f"rows: {len(rows)} from {data}",
             f"log-likelihood: {mean:.4f} ± {two_se:.4f} nats (mean ± 2 s.e.)"]
    meta = _metadata(model_dir)
    if meta.get("discrete"):
        lines.append(f"bits/dim: {-mean / (dim * math.log(2)):.4f} (dequantised data in [0, {meta['num_levels']}))")
    if scores_path:
        if scores_path.endswith(".csv"):
            np.savetxt(scores_path, scores[:, None], delimiter=",", header="log_prob", comments="")
        else:
            np.save(scores_path, scores)
        lines.append(f"per-row scores: {scores_path}")
    return "\n".join(lines)


def sample_saved_model(model: str, n: int, seed: int, out: str) -> str:
    """Draws `n` samples with the `sample` signature and writes them to `out`."""
    import tensorflow as tf

    if n < 1:
        raise DataError("-n", "number of samples", f"must be >= 1, got {n}", "pass a positive -n")
    model_dir, loaded = _load(model)
    samples = loaded.signatures["sample"](num_samples=tf.constant(n, tf.int32),
                                          seed=tf.constant([seed, 0], tf.int32))["samples"].numpy()
    if out.endswith(".png"):
        meta = _metadata(model_dir)
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
