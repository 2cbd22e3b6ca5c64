"""What the objectives' scorers share (`components.evaluate` drives them): the evaluation points
of a split, per-example scores of a saved flow, finiteness checks and the closed-form references.

Scores are per-example log-likelihoods in nats:

- model space: ``log p_z(z)`` with ``z`` the transformed features (what the trainer optimises);
  for a conditional model ``log p_z(z | c)``, ``c`` each row's own context as the transform
  graph maps it (every score below is then conditional, row by row);
- data space: ``log p_x(x) = log p_z(z) + log_det`` (comparable across preprocessings);
- discrete data: ``x`` are the integer levels dequantised once with a FIXED stateless seed
  (``EvaluateConfig.dequantization_seed``), so repeated evaluations and the baseline see the
  same points; bits/dim ``= -log p_x(x) / (D ln 2)`` on ``[0, L)^D`` (MAF paper, appendix E.2).

Each reported value is a mean ± two standard errors (`conversions.mean_and_two_se`).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np

__all__ = ["QUANTILE_LEVELS", "Points", "conditional_gaussian_log_prob", "data_metrics", "evaluation_points",
           "factorised_log_prob", "finite_problem", "gaussian_log_prob", "held_out_quantiles", "non_finite_weights",
           "score_model"]

# Levels of the held-out quantiles that travel with a pushed model: every percent, and the tails
# finer, where anomaly thresholds sit (q0.001 is read off this grid exactly, not interpolated).
QUANTILE_LEVELS = (0.0, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, *(i / 100 for i in range(1, 100)),
                   0.995, 0.998, 0.999, 0.9995, 0.9998, 0.9999, 1.0)


class Points(NamedTuple):
    """Scored points of a split: model-space rows ``z`` [N, D], ``log_det`` [N], the network's
    context [N, C] (None: scored unconditionally) and the dataset's metadata."""

    z: np.ndarray
    log_det: np.ndarray
    context: Optional[np.ndarray]
    metadata: Any


def evaluation_points(examples_uri: str, transform_graph_uri: str, config, split: Optional[str] = None,
                      conditional: bool = False) -> Points:
    """The `Points` of ``split`` (default: the scored one, ``config.split``), dequantised with the
    fixed seed if discrete; ``conditional``: with each row's context through the graph (the data
    must have context columns, and the graph must be of such data)."""
    import tensorflow as tf

    from tfflows.components.ingest import load_split, read_metadata
    from tfflows.components.ingest.metadata import load_context
    from tfflows.components.transform import dequantize, load_transform

    metadata = read_metadata(examples_uri)
    split = split or config.split
    x = load_split(examples_uri, split)
    raw_context = load_context(examples_uri, split) if conditional else None
    if metadata.discrete:
        # The scored split keeps counter 0 (the points of earlier evaluations); other splits
        # (the reference's train split) take their own noise.
        counter = 0 if split == config.split else 1
        assert metadata.num_levels is not None  # ingest records the levels of discrete data
        x = dequantize(tf.constant(x), metadata.num_levels,
                       [int(config.dequantization_seed), counter]).numpy()
    transform = load_transform(transform_graph_uri)
    parts = []
    for start in range(0, len(x), config.batch_size):
        rows = slice(start, start + config.batch_size)
        inputs = (x[rows],) if raw_context is None else (x[rows], raw_context[rows])
        parts.append([t.numpy() for t in transform(*map(tf.constant, inputs))])
    z, log_det, *context = (np.concatenate(column) for column in zip(*parts))
    return Points(z, log_det, context[0] if context else None, metadata)


def non_finite_weights(model) -> list:
    return [v.name for v in model.weights if not np.all(np.isfinite(v.numpy()))]


def score_model(model_uri: str, z: np.ndarray, batch_size: int = 1000, context: Optional[np.ndarray] = None):
    """(per-example model-space log p_z(z) as float64, or log p_z(z | context) of a conditional
    model with each row's ``context``; names of non-finite weights)."""
    import tensorflow as tf

    from tfflows.components.flow_artifact import load_flow

    model = load_flow(model_uri).frozen()
    out = [model.log_prob(tf.constant(z[s:s + batch_size]),
                          None if context is None else tf.constant(context[s:s + batch_size]), training=False).numpy()
           for s in range(0, len(z), batch_size)]
    return np.concatenate(out).astype(np.float64), non_finite_weights(model)


def gaussian_log_prob(train: np.ndarray, points: np.ndarray) -> np.ndarray:
    """log N(points; m, S) per row, (m, S) the maximum-likelihood full-covariance Gaussian of
    ``train`` (float64; a 1e-6 ridge keeps a degenerate covariance, e.g. a constant column,
    invertible)."""
    train, points = np.asarray(train, np.float64), np.asarray(points, np.float64)
    mean = train.mean(axis=0)
    centred = train - mean
    cov = centred.T @ centred / len(train) + 1e-6 * np.eye(train.shape[1])
    chol = np.linalg.cholesky(cov)
    white = np.linalg.solve(chol, (points - mean).T)
    return (-0.5 * np.sum(white ** 2, axis=0) - np.sum(np.log(np.diag(chol)))
            - 0.5 * train.shape[1] * np.log(2 * np.pi))


def conditional_gaussian_log_prob(train: np.ndarray, train_context: np.ndarray, points: np.ndarray,
                                  context: np.ndarray) -> np.ndarray:
    """log N(points; A c + b, S) per row: the maximum-likelihood linear-Gaussian model of ``train``
    given ``train_context`` (the full-covariance Gaussian's conditional, the reference of a
    conditional flow), as the joint Gaussian of (x, c) divided by the Gaussian of c."""
    joint = gaussian_log_prob(np.hstack([train, train_context]), np.hstack([points, context]))
    return joint - gaussian_log_prob(train_context, context)


def factorised_log_prob(train: np.ndarray, points: np.ndarray, binary: bool) -> np.ndarray:
    """Independent dimensions fitted to ``train``: Bernoulli with Laplace-smoothed frequencies
    (binary data), else a diagonal Gaussian (1e-6 variance floor)."""
    train, points = np.asarray(train, np.float64), np.asarray(points, np.float64)
    if binary:
        p = (train.sum(axis=0) + 1.0) / (len(train) + 2.0)
        return np.sum(points * np.log(p) + (1.0 - points) * np.log1p(-p), axis=1)
    mean, var = train.mean(axis=0), train.var(axis=0) + 1e-6
    return np.sum(-0.5 * ((points - mean) ** 2 / var + np.log(2 * np.pi * var)), axis=1)


def data_metrics(model_ll: np.ndarray, log_det: np.ndarray, metadata) -> dict:
    """Model- and data-space log-likelihoods (and bits/dim for discrete data), mean and 2 s.e."""
    from tfflows.components.transform import conversions

    data_ll = conversions.data_log_prob(model_ll, log_det)
    m_mean, m_se = conversions.mean_and_two_se(model_ll)
    d_mean, d_se = conversions.mean_and_two_se(data_ll)
    out = {"model_log_likelihood": m_mean, "model_log_likelihood_2se": m_se,
           "data_log_likelihood": d_mean, "data_log_likelihood_2se": d_se}
    if metadata.discrete:
        b_mean, b_se = conversions.mean_and_two_se(
            conversions.bits_per_dim(data_ll, metadata.event_dim))
        out.update(bits_per_dim=b_mean, bits_per_dim_2se=b_se)
    return out


def held_out_quantiles(scores: np.ndarray, split: str) -> dict:
    """The calibration a pushed model carries: quantiles of its per-example data-space log-densities
    on held-out rows (the scored ``split``) at `QUANTILE_LEVELS`.

    A new row's percentile is then the share of held-out rows scoring lower (linear between the
    levels; `components.push.export` computes it inside the SavedModel), and ``q0.01`` names the
    log-density below which 1% of held-out rows fall. ``count`` says how far to trust the tails:
    a level below ``1 / count`` is the held-out minimum.
    """
    scores = np.asarray(scores, np.float64)
    return {"split": split, "count": int(len(scores)), "levels": list(QUANTILE_LEVELS),
            "values": [float(v) for v in np.quantile(scores, QUANTILE_LEVELS)]}


def finite_problem(ll: np.ndarray, bad_weights: list, what: str) -> Optional[str]:
    """Why ``what`` is not finite (weights or per-example scores), or None."""
    if bad_weights:
        return f"{what} has non-finite weights ({', '.join(bad_weights[:3])})"
    bad = ~np.isfinite(ll)
    if bad.any():
        return (f"{what} gives non-finite log-likelihoods on {int(bad.sum())} of {ll.size} "
                f"examples (first at row {int(np.argmax(bad))})")
    return None
