"""Shared helpers for the flow tests: weight perturbation and autodiff Jacobians."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def perturb(module: tf.Module, seed: int, scale: float = 0.5) -> None:
    """Overwrites every variable with random values ("trained-looking" weights).

    Kernels get N(0, scale^2 / fan_in) entries, so activations stay O(1) while every weight, masked
    entries included, moves away from its initialisation. Batch-norm statistics get random means
    and positive variances. Biases lean positive so that few relu units are dead on every row (a
    dead unit would hide a dependency the masks allow).
    """
    rng = np.random.default_rng(seed)
    for v in module.variables:
        if not v.dtype.is_floating:  # flags such as ActNorm's `initialised` are not weights
            continue
        shape = v.shape.as_list()
        name = v.name
        if "variance" in name:
            value = rng.uniform(0.5, 2.0, shape)
        elif len(shape) == 2:
            value = rng.normal(0.0, scale / np.sqrt(shape[0]), shape)
        elif "bias" in name:
            value = rng.uniform(0.0, 0.5, shape)
        else:
            value = rng.normal(0.0, 0.3, shape)
        v.assign(value.astype(v.dtype.as_numpy_dtype))


def jacobian_and_log_det(fn, x):
    """(J [batch, D, D], log_det [batch]) where y, log_det = fn(x) and J = dy/dx per row."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y, log_det = fn(x)
    return tape.batch_jacobian(y, x), log_det


def slogdet(jacobian):
    return np.linalg.slogdet(np.asarray(jacobian))[1]


def dependency_pattern(jacobian, tol=1e-12):
    """Boolean [D, D]: True where output i depends on input j for some row of the batch."""
    return np.any(np.abs(np.asarray(jacobian)) > tol, axis=0)


def assert_log_dets_match_autodiff(layer, x, atol=1e-9):
    """Both directions' log-dets equal log|det| of the autodiff Jacobian, and fldj(u) = -ildj(x);
    returns ildj(x)."""
    jac, log_det = jacobian_and_log_det(layer.inverse_and_log_det, x)
    np.testing.assert_allclose(log_det, slogdet(jac), atol=atol)
    u = layer.inverse_and_log_det(x)[0]
    jac_f, log_det_f = jacobian_and_log_det(layer.forward_and_log_det, u)
    np.testing.assert_allclose(log_det_f, slogdet(jac_f), atol=atol)
    np.testing.assert_allclose(log_det_f, -log_det, atol=atol)
    return log_det
