"""Figures of a training run: the loss curve, a samples figure and a target-fit figure.

Each function returns a `matplotlib.figure.Figure` built without pyplot (no global state, no
backend switch, nothing to close); the trainer logs it with `Tracker.log_figure`.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure

from tfflows.models.targets import density_grid

__all__ = ["loss_curve", "samples_figure", "target_fit_figure", "logit_to_unit"]

DPI = 80  # the saved PNG's resolution


def _figure(width: float, height: float):
    return Figure(figsize=(width, height), dpi=DPI)


def loss_curve(history: List[Dict[str, float]], metric: str = "log_likelihood", best_epoch: Optional[int] = None):
    """Train and validation ``metric`` per epoch (nats; log-likelihood in model space, or ELBO),
    with the best epoch (the weights kept) marked."""
    epochs = [h["epoch"] for h in history]
    fig = _figure(6, 4)
    ax = fig.subplots()
    ax.plot(epochs, [h[f"train_{metric}"] for h in history], "o-", label="train")
    ax.plot(epochs, [h[f"val_{metric}"] for h in history], "s-", label="validation")
    if best_epoch:
        best = next((h[f"val_{metric}"] for h in history if h["epoch"] == best_epoch), None)
        ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label=f"best epoch {best_epoch} (kept)")
        if best is not None:
            ax.plot([best_epoch], [best], "*", color="black", markersize=12)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean log-likelihood (nats, model space)" if metric == "log_likelihood"
                  else "ELBO = E_q[log p~ - log q] (nats)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def logit_to_unit(z: np.ndarray, lam: float) -> np.ndarray:
    """Inverse of the logit preprocessing in [0, 1]: ``(sigmoid(z) - lam) / (1 - 2 lam)``."""
    unit = (1.0 / (1.0 + np.exp(-z)) - lam) / (1.0 - 2.0 * lam)
    return np.clip(unit, 0.0, 1.0)


def _histograms(samples: np.ndarray, data: Optional[np.ndarray], names: Sequence[str], most: int = 16):
    """Per-column histograms of data vs samples (the first ``most`` columns), titled by column name."""
    d = min(samples.shape[1], most)
    cols = int(np.ceil(np.sqrt(d)))
    rows = int(np.ceil(d / cols))
    fig = _figure(2.6 * cols, 2.2 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= d:
            ax.axis("off")
            continue
        both = samples[:, i] if data is None else np.concatenate([samples[:, i], np.asarray(data)[:, i]])
        lo, hi = np.percentile(both, [0.5, 99.5])
        bins = np.linspace(lo, hi, 30)
        if data is not None:
            ax.hist(np.asarray(data)[:, i], bins=bins, density=True, alpha=0.5, label="data")
        ax.hist(samples[:, i], bins=bins, density=True, alpha=0.5, label="samples")
        ax.set_title(names[i], fontsize=9)
        ax.set_yticks([])
    axes.flat[0].legend(fontsize=7)
    return fig


def samples_figure(samples: np.ndarray, *, image_shape: Optional[Sequence[int]] = None,
                   logit_lambda: Optional[float] = None, data: Optional[np.ndarray] = None,
                   log_prob_fn=None, unit_interval: bool = False, names: Optional[Sequence[str]] = None):
    """A figure of model samples (model space ``z``; ``names``: the data's column names):

    - images (``image_shape`` given): a grid of samples mapped to [0, 1] through the inverse
      logit (``logit_lambda``; plain sigmoid when None), or shown as they are with
      ``unit_interval`` (samples already in [0, 1], e.g. a VAE's);
    - D = 2 with ``log_prob_fn``: a heat map of the model density and the samples on top, axes
      named after the columns;
    - D > 2 with ``names``: per-column histograms of data vs samples, titled by column;
    - otherwise: a scatter of the first two dimensions of samples (and of ``data``).
    """
    samples = np.asarray(samples, np.float64)
    names = list(names) if names is not None else None
    if image_shape is None and names is not None and samples.shape[1] > 2:
        fig = _histograms(samples, data, names)
        fig.tight_layout()
        return fig
    if image_shape is not None:
        unit = samples if unit_interval else logit_to_unit(samples, logit_lambda or 0.0)
        images = unit.reshape([-1] + list(image_shape))
        n = len(images)
        cols = int(np.ceil(np.sqrt(n)))
        rows = int(np.ceil(n / cols))
        fig = _figure(cols, rows)
        axes = fig.subplots(rows, cols, squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.axis("off")
            if i < n:
                img = images[i]
                ax.imshow(img if img.ndim == 2 or img.shape[-1] == 3 else img[..., 0],
                          cmap="gray", vmin=0, vmax=1)
    elif samples.shape[1] == 2 and log_prob_fn is not None:
        ref = samples if data is None else np.concatenate([samples, np.asarray(data)], 0)
        lo, hi = np.percentile(ref, 0.5, axis=0), np.percentile(ref, 99.5, axis=0)
        pad = 0.2 * (hi - lo)
        gx, gy = np.meshgrid(np.linspace(lo[0] - pad[0], hi[0] + pad[0], 80),
                             np.linspace(lo[1] - pad[1], hi[1] + pad[1], 80))
        grid = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
        density = np.exp(np.asarray(log_prob_fn(grid), np.float64)).reshape(gx.shape)
        fig = _figure(5, 5)
        ax = fig.subplots()
        ax.pcolormesh(gx, gy, density, shading="auto", cmap="viridis")
        ax.scatter(samples[:, 0], samples[:, 1], s=4, c="white", alpha=0.7, label="samples")
        ax.set_title("model density and samples (model space)")
        ax.legend(loc="upper right")
        if names is not None:
            ax.set_xlabel(f"{names[0]} (transformed)")
            ax.set_ylabel(f"{names[1]} (transformed)")
    else:
        fig = _figure(5, 5)
        ax = fig.subplots()
        if data is not None:
            data = np.asarray(data)
            ax.scatter(data[:, 0], data[:, min(1, data.shape[1] - 1)], s=4, alpha=0.4, label="data")
        ax.scatter(samples[:, 0], samples[:, min(1, samples.shape[1] - 1)], s=4, alpha=0.6,
                   label="samples")
        ax.set_xlabel("z[0]")
        ax.set_ylabel("z[1]")
        ax.legend()
    fig.tight_layout()
    return fig


def target_fit_figure(log_target, log_q, samples: np.ndarray, title: str = "target",
                      limits=(-4.0, 4.0), n: int = 150):
    """Three panels on a 2-D grid: the target exp(log_target), the fitted density exp(log_q) and
    samples of q (each density normalised over the grid)."""
    z1, z2, target = density_grid(log_target, limits, n)
    _, _, fitted = density_grid(log_q, limits, n)
    fig = _figure(10.5, 3.6)
    axes = fig.subplots(1, 3)
    for ax, values, name in ((axes[0], target, title), (axes[1], fitted, "fitted q")):
        ax.pcolormesh(z1, z2, values, shading="auto", cmap="viridis")
        ax.set_title(name)
    axes[2].scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.4)
    axes[2].set_xlim(*limits)
    axes[2].set_ylim(*limits)
    axes[2].set_title(f"{len(samples)} samples of q")
    for ax in axes:
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig
