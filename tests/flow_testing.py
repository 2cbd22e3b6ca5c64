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
    """(J [batch, D, D], log_det [batch]) where y, log_det = fn(x) and J = dy/dx per row (in
    general J is [batch, *y.shape[1:], *x.shape[1:]]).

    What `tape.batch_jacobian` computes (row i of J is the gradient of y[:, i], rows independent),
    one backward pass per output coordinate: eagerly that is 5-25x faster for the small D of these
    tests than `batch_jacobian`'s pfor, which converts and traces the gradient anew on every call."""
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y, log_det = fn(x)
        flat = tf.reshape(y, [tf.shape(y)[0], -1])
        outputs = [flat[:, i] for i in range(flat.shape[1])]
    rows = [tape.gradient(out, x, unconnected_gradients=tf.UnconnectedGradients.ZERO) for out in outputs]
    del tape
    jac = tf.reshape(tf.stack(rows, axis=1), [-1, *y.shape[1:], *x.shape[1:]])
    return jac, log_det


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
