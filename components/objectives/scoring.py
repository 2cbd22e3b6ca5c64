"""What the objectives' scorers share (`components.evaluate` drives them): the evaluation points
of a split, per-example scores of a saved flow, finiteness checks and the closed-form references.

Scores are per-example log-likelihoods in nats:

- model space: ``log p_z(z)`` with ``z`` the transformed features (what the trainer optimises);
  for a conditional model ``log p_z(z | c)``, ``c`` each row's own context as the transform
  graph maps it (every score below is then conditional, row by row); for a mixed density
  (modelled categorical columns, codes ``s``) ``log P(s) + log p_z(z | s)``: a log-probability of
  the categories plus a log-density of the numeric columns, the exact log-density of the row with
  respect to counting measure on the categories times Lebesgue measure (`models.MixedDensity`);
- data space: ``log p_x(x) = log p_z(z) + log_det`` (comparable across preprocessings);
- discrete data: ``x`` are the integer levels dequantised once with a FIXED stateless seed
  (``EvaluateConfig.dequantization_seed``), so repeated evaluations and the baseline see the
  same points; bits/dim ``= -log p_x(x) / (D ln 2)`` on ``[0, L)^D`` (MAF paper, appendix E.2).

Each reported value is a mean ± two standard errors (`conversions.mean_and_two_se`).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Optional

import numpy as np
import tensorflow as tf

from tfflows.components.flow_artifact import load_flow
from tfflows.components.ingest import load_split, read_metadata
from tfflows.components.ingest.metadata import load_categorical, load_context, load_context_categorical
from tfflows.components.transform import conversions, dequantize, load_transform

__all__ = ["QUANTILE_LEVELS", "Points", "category_frequencies_log_prob", "conditional_gaussian_log_prob", "data_metrics", "evaluation_points",
           "factorised_log_prob", "finite_problem", "gaussian_log_prob", "held_out_quantiles", "non_finite_weights",
           "score_model"]

# Levels of the held-out quantiles that travel with a pushed model: every percent, and the tails
# finer, where anomaly thresholds sit (q0.001 is read off this grid exactly, not interpolated).
QUANTILE_LEVELS = (0.0, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, *(i / 100 for i in range(1, 100)),
                   0.995, 0.998, 0.999, 0.9995, 0.9998, 0.9999, 1.0)


class Points(NamedTuple):
    """Scored points of a split: model-space rows ``z`` [N, D], ``log_det`` [N], the network's
    context [N, C] (None: scored unconditionally), the dataset's metadata and the categories'
    codes [N, S] (int32; None: no categorical columns)."""

    z: np.ndarray
    log_det: np.ndarray
    context: Optional[np.ndarray]
    metadata: Any
    codes: Optional[np.ndarray] = None


def evaluation_points(examples_uri: str, transform_graph_uri: str, config, split: Optional[str] = None,
                      conditional: bool = False) -> Points:
    """The `Points` of ``split`` (default: the scored one, ``config.split``), dequantised with the
    fixed seed if discrete; ``conditional``: with each row's context through the graph (the data
    must have context columns, and the graph must be of such data; the network's context, categorical
    context columns one-hot). Modelled categorical columns always go
    through the graph: their codes are part of every row's score."""
    metadata = read_metadata(examples_uri)
    split = split or config.split
    x = load_split(examples_uri, split)
    raw_context = load_context(examples_uri, split) if conditional else None
    context_categorical = load_context_categorical(examples_uri, split) if conditional else None
    categorical = load_categorical(examples_uri, split)
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
        given = [None if v is None else tf.constant(v[rows]) for v in (raw_context, categorical, context_categorical)]
        parts.append([t.numpy() for t in transform(tf.constant(x[rows]), *given)])
    z, log_det, *others = (np.concatenate(column) for column in zip(*parts))
    codes = others.pop().astype(np.int32) if categorical is not None else None
    return Points(z, log_det, others[0] if others else None, metadata, codes)


def non_finite_weights(model) -> list:
    return [v.name for v in model.weights if not np.all(np.isfinite(v.numpy()))]


def score_model(model_uri: str, z: np.ndarray, batch_size: int = 1000, context: Optional[np.ndarray] = None,
                codes: Optional[np.ndarray] = None):
    """(per-example model-space log p_z(z) as float64, or log p_z(z | context) of a conditional
    model with each row's ``context``, or a mixed density's log P(codes[ | context]) +
    log p_z(z | codes[, context]) with each row's ``codes``; names of non-finite weights)."""
    model = load_flow(model_uri).frozen()
    log_prob = functools.partial(model.log_prob, training=False)
    given = [v for v in (codes, context) if v is not None]  # log_prob's arguments after z, in order
    out = [log_prob(*(tf.constant(v[s:s + batch_size]) for v in (z, *given))).numpy()
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


def category_frequencies_log_prob(train_codes: np.ndarray, codes: np.ndarray, num_categories) -> np.ndarray:
    """log P(codes) per row under independent columns with Laplace-smoothed train frequencies,
    P(s_i = k) = (n_ik + 1) / (N + K_i), every one of the K_i codes (the out-of-vocabulary bucket
    too) with a positive probability: the categorical half of a mixed density's reference."""
    total = np.zeros(len(codes))
    for i, k in enumerate(num_categories):
        counts = np.bincount(np.asarray(train_codes[:, i], np.int64), minlength=k)[:k]
        total += np.log((counts + 1.0) / (len(train_codes) + k))[np.asarray(codes[:, i], np.int64)]
    return total


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
