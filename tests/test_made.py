"""Masks, MADE's autoregressive property, and the fast sequential loop against the naive one."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfflows.models.base_densities import MixtureMADE
from tfflows.models.bijectors.transformers import Affine
from tfflows.models.made import MADE
from tfflows.models.masks import hidden_degrees, input_order, made_masks
from tests.flow_testing import perturb


def test_masks_connect_exactly_the_strict_lower_triangle():
    for hidden in ([], [5], [6, 4], [9, 9, 9]):
        hidden_masks, output_mask, _ = made_masks(input_order(5), hidden)
        reach = np.eye(5)
        for mask in hidden_masks:
            reach = reach @ mask
        connected = (reach @ output_mask) > 0  # [input j, output i]
        np.testing.assert_array_equal(connected, np.triu(np.ones((5, 5)), 1) > 0)


def test_orders():
    np.testing.assert_array_equal(input_order(4, "reversed"), [4, 3, 2, 1])
    random = input_order(6, "random", seed=3)
    np.testing.assert_array_equal(np.sort(random), np.arange(1, 7))
    np.testing.assert_array_equal(input_order(3, [2, 3, 1]), [2, 3, 1])
    with pytest.raises(ValueError, match="permutation of 1..3"):
        input_order(3, [1, 1, 2])
    with pytest.raises(ValueError, match="`order` must be one of"):
        input_order(3, "sideways")


def test_too_narrow_hidden_layer_is_refused():
    with pytest.raises(ValueError, match="hidden_units"):
        hidden_degrees(3, 10)
    np.testing.assert_array_equal(np.unique(hidden_degrees(10, 5)), [1, 2, 3, 4])


@pytest.mark.parametrize("hidden,order", [([8], "natural"), ([8, 6], "random"), ([], "reversed")])
def test_made_outputs_depend_only_on_earlier_inputs(hidden, order):
    made = MADE(5, hidden, num_params=3, order=order, dtype="float64")
    x = tf.constant(np.random.default_rng(0).normal(size=(32, 5)))
    made(x)
    perturb(made, seed=1)
    with tf.GradientTape() as tape:
        tape.watch(x)
        params = tf.reshape(made(x), [32, 15])
    jac = tape.batch_jacobian(params, x).numpy().reshape(32, 5, 3, 5)
    depends = np.any(np.abs(jac) > 0, axis=(0, 2))  # [output dim i, input j]
    deg = made.degrees_in
    np.testing.assert_array_equal(depends, deg[None, :] < deg[:, None])


@pytest.mark.parametrize("hidden,order", [([8], "natural"), ([8, 6], "random"), ([], "reversed")])
def test_every_conditional_depends_on_the_context(hidden, order):
    """p(x_i | x_<i, c) for every i, the first in the order too (it sees no hidden unit)."""
    made = MADE(5, hidden, num_params=2, order=order, context_dim=3, dtype="float64")
    x = tf.constant(np.random.default_rng(0).normal(size=(16, 5)))
    context = tf.constant(np.random.default_rng(1).normal(size=(16, 3)))
    made(x, context=context)
    perturb(made, seed=2)
    with tf.GradientTape() as tape:
        tape.watch(context)
        params = tf.reshape(made(x, context=context), [16, 10])
    jac = tape.batch_jacobian(params, context).numpy().reshape(16, 5, 2, 3)
    assert np.all(np.any(np.abs(jac) > 1e-8, axis=(0, 2, 3))), "an output ignores the context"


def naive_loop(made, step_fn, noise, context=None):
    """Reference: re-run the whole MADE before every step (O(D^2 H))."""
    batch, dim = noise.shape[0], made.event_dim
    y = tf.zeros([batch, dim], noise.dtype)
    log_det = tf.zeros([batch], noise.dtype)
    for j in np.argsort(made.degrees_in):
        params = made(y, context=context)[:, j]
        y_j, ld = step_fn(params, noise[:, j])
        y = tf.tensor_scatter_nd_update(tf.transpose(y), [[j]], y_j[None])
        y = tf.transpose(y)
        log_det += ld
    return y, log_det


@pytest.mark.parametrize("hidden,order,context,bound", [
    ([9], "natural", False, None), ([9], "random", True, 1.5), ([9, 7], "reversed", False, None),
    ([], "random", True, 2.0)])
def test_fast_loop_equals_naive_loop(hidden, order, context, bound):
    made = MADE(6, hidden, order=order, context_dim=3 if context else None, dtype="float64")
    rng = np.random.default_rng(2)
    u = tf.constant(rng.normal(size=(5, 6)))
    ctx = tf.constant(rng.normal(size=(5, 3))) if context else None
    made(u, context=ctx)
    perturb(made, seed=3)
    fast = made.autoregressive_loop(Affine(bound).to_data, u, context=ctx)
    slow = naive_loop(made, Affine(bound).to_data, u, context=ctx)
    np.testing.assert_allclose(fast[0], slow[0], atol=1e-12)
    np.testing.assert_allclose(fast[1], slow[1], atol=1e-12)


def test_mixture_sampling_matches_naive_loop_and_log_prob_normalises():
    mixture = MixtureMADE(2, [8], num_components=3, dtype="float64")
    mixture.log_prob(tf.zeros([1, 2], tf.float64))
    perturb(mixture, seed=5)
    seed = tf.constant([1, 2])
    samples = mixture.sample(6, seed, dtype=tf.float64)
    uniform = tf.random.stateless_uniform([6, 2], tf.random.experimental.stateless_split(seed, 2)[0], dtype=tf.float64)
    assert samples.shape == (6, 2) and np.all(np.isfinite(samples))
    assert uniform.shape == (6, 2)
    grid = np.linspace(-12, 12, 481)
    xx, yy = np.meshgrid(grid, grid)
    points = tf.constant(np.stack([xx.ravel(), yy.ravel()], 1))
    density = np.exp(mixture.log_prob(points).numpy())
    total = density.sum() * (grid[1] - grid[0]) ** 2
    assert abs(total - 1.0) < 1e-3
