"""The rational-quadratic spline transformer and the spline flows built on it, in float64:

the spline against TFP's independent `RationalQuadraticSpline`, round trips, log-derivatives
against autodiff, monotonicity, exact identity tails outside [-B, B], the identity at zero
parameters, the fast O(D·H) loop against the naive one for spline MAF sampling and spline IAF
density, and flows built with transformer="spline" / permutation="lu" (normalisation, samples
against log_prob). The bijector-level checks (Jacobian structure, log-det, gradients) of the
spline layers run in tests/test_bijectors.py with every other bijector.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfflows.models import build_flow
from tfflows.models.bijectors import (
    InverseAutoregressiveFlow,
    LULinear,
    MaskedAutoregressiveFlow,
    RationalQuadraticSpline,
)
from tfflows.models.made import MADE
from tests.flow_testing import perturb
from tests.test_flows import grid
from tests.test_made import naive_loop

BOUND = 2.5


def _params_and_values(num_bins=5, n=400, scale=2.0, seed=0):
    rng = np.random.default_rng(seed)
    params = tf.constant(rng.normal(0.0, scale, size=(n, 3 * num_bins - 1)))
    values = tf.constant(rng.uniform(-1.5 * BOUND, 1.5 * BOUND, size=n))  # about a third in the tails
    return params, values


def test_spline_equals_tfp_rational_quadratic_spline():
    spline = RationalQuadraticSpline(5, BOUND)
    params, x = _params_and_values()
    widths, heights, slopes = spline.bins(params)
    reference = tfp.bijectors.RationalQuadraticSpline(widths, heights, slopes, range_min=-BOUND)
    u, log_derivative = spline.to_base(params, x)
    np.testing.assert_allclose(u, reference.forward(x), atol=1e-12)
    np.testing.assert_allclose(log_derivative, reference.forward_log_det_jacobian(x, event_ndims=0), atol=1e-10)
    y = tf.identity(u)
    np.testing.assert_allclose(spline.to_data(params, y)[0], reference.inverse(y), atol=1e-12)


def test_spline_round_trips_and_log_derivative_equals_autodiff():
    spline = RationalQuadraticSpline(6, BOUND)
    params, x = _params_and_values(6, seed=1)
    with tf.GradientTape() as tape:
        tape.watch(x)
        u, log_derivative = spline.to_base(params, x)
    np.testing.assert_allclose(log_derivative, np.log(tape.gradient(u, x)), atol=1e-10)
    back, inverse_log_derivative = spline.to_data(params, u)
    np.testing.assert_allclose(back, x, atol=1e-11)
    np.testing.assert_allclose(inverse_log_derivative, -log_derivative, atol=1e-10)
    with tf.GradientTape() as tape:
        tape.watch(u)
        x_again, log_derivative_data = spline.to_data(params, u)
    np.testing.assert_allclose(log_derivative_data, np.log(tape.gradient(x_again, u)), atol=1e-9)


def test_spline_is_increasing_and_maps_the_interval_onto_itself():
    spline = RationalQuadraticSpline(4, BOUND)
    params = tf.constant(np.random.default_rng(2).normal(0.0, 3.0, size=(1, 11)))
    x = tf.constant(np.linspace(-BOUND, BOUND, 2001))
    u, _ = spline.to_base(tf.repeat(params, 2001, axis=0), x)
    assert np.all(np.diff(u.numpy()) > 0)
    np.testing.assert_allclose([u[0], u[-1]], [-BOUND, BOUND], atol=1e-12)


def test_tails_are_exactly_the_identity():
    spline = RationalQuadraticSpline(5, BOUND)
    params, _ = _params_and_values(n=6)
    x = tf.constant([-1e6, -BOUND - 1e-9, -3.0, 2.50001, 4.0, 1e6], tf.float64)
    for direction in (spline.to_base, spline.to_data):
        value, log_derivative = direction(params, x)
        np.testing.assert_array_equal(value, x)
        np.testing.assert_array_equal(log_derivative, np.zeros(6))
    with tf.GradientTape() as tape:  # no NaN leaks from the masked-out spline branch
        tape.watch(x)
        u, _ = spline.to_base(params, x)
    np.testing.assert_array_equal(tape.gradient(u, x), np.ones(6))


def test_zero_parameters_give_the_identity():
    spline = RationalQuadraticSpline(8, 3.0)
    x = tf.constant(np.linspace(-2.9, 2.9, 7))
    u, log_derivative = spline.to_base(tf.zeros([7, 23], tf.float64), x)
    np.testing.assert_allclose(u, x, atol=1e-12)
    np.testing.assert_allclose(log_derivative, np.zeros(7), atol=1e-12)


@pytest.mark.parametrize("bad,match", [(dict(num_bins=0), "num_bins"), (dict(tail_bound=-1.0), "tail_bound")])
def test_spline_refuses_bad_arguments(bad, match):
    with pytest.raises(ValueError, match=match):
        RationalQuadraticSpline(**bad)


@pytest.mark.parametrize("hidden", [[9], [9, 7], []])
@pytest.mark.parametrize("context", [False, True])
def test_fast_loop_equals_naive_loop_for_spline_maf_sampling_and_iaf_density(hidden, context):
    spline = RationalQuadraticSpline(4, BOUND)
    made = MADE(5, hidden, num_params=spline.num_params, order="random", context_dim=2 if context else None,
                dtype="float64")
    rng = np.random.default_rng(4)
    noise = tf.constant(rng.normal(size=(16, 5)) * 1.5)
    ctx = tf.constant(rng.normal(size=(16, 2))) if context else None
    made(noise, context=ctx)
    perturb(made, seed=5)
    slow_x, slow_log_det = naive_loop(made, spline.to_data, noise, context=ctx)
    maf, iaf = MaskedAutoregressiveFlow(made, transformer=spline), InverseAutoregressiveFlow(made, transformer=spline)
    for fast_x, fast_log_det in (maf.forward_and_log_det(noise, context=ctx),
                                 iaf.inverse_and_log_det(noise, context=ctx)):
        np.testing.assert_allclose(fast_x, slow_x, atol=1e-12)
        np.testing.assert_allclose(fast_log_det, slow_log_det, atol=1e-12)
    assert not np.allclose(slow_x, noise)


def test_lu_linear_starts_as_its_permutation_and_stays_invertible():
    layer = LULinear(4, seed=3, dtype="float64")
    x = tf.constant(np.random.default_rng(0).normal(size=(3, 4)))
    np.testing.assert_allclose(layer.forward(x), tf.gather(x, layer.permutation, axis=-1), atol=1e-12)
    layer.unconstrained_diagonal.assign(-50.0 * tf.ones(4, tf.float64))  # softplus ~ 0: the floor keeps det > 0
    u, log_det = layer.inverse_and_log_det(x)
    assert np.all(np.isfinite(u)) and np.all(np.isfinite(log_det))


SPLINE_FLOWS = {
    "maf": dict(num_layers=2),
    "iaf": dict(num_layers=2),
    "realnvp": dict(num_layers=3),
    "haf": dict(num_layers=2),
    "maf_lu": dict(num_layers=2, permutation="lu"),
}


def spline_flow(name, dim, seed=0, **extra):
    kind = name.split("_")[0]
    model = build_flow(kind, dim, hidden_units=[8], dtype="float64", transformer="spline", num_bins=4,
                       tail_bound=BOUND, **SPLINE_FLOWS[name], **extra)
    perturb(model, seed=seed, scale=0.4)
    return model


@pytest.mark.parametrize("name", list(SPLINE_FLOWS))
def test_spline_flow_density_integrates_to_one_in_two_dimensions(name):
    model = spline_flow(name, 2)
    reach = np.percentile(np.abs(model.sample(5000, seed=0).numpy()), 99.9)
    points, cell = grid(limit=2.0 * reach, n=801)
    total = np.exp(model.log_prob(points).numpy()).sum() * cell
    assert abs(total - 1.0) < 0.02, total


@pytest.mark.parametrize("kind", ["maf", "iaf"])
def test_spline_flow_density_integrates_to_one_in_one_dimension(kind):
    model = build_flow(kind, 1, num_layers=2, hidden_units=[8], dtype="float64", transformer="spline",
                       num_bins=4, tail_bound=BOUND, batch_norm=False)
    perturb(model, seed=1, scale=1.0)
    axis = np.linspace(-15, 15, 30001)[:, None]
    density = np.exp(model.log_prob(axis).numpy())
    assert abs(density.sum() * (axis[1, 0] - axis[0, 0]) - 1.0) < 1e-4
    standard = np.exp(-0.5 * axis[:, 0] ** 2) / np.sqrt(2 * np.pi)
    assert np.abs(density - standard).max() > 0.01, "a perturbed spline flow should not be the base density"


@pytest.mark.parametrize("name", ["maf", "realnvp", "maf_lu"])
def test_spline_flow_samples_follow_log_prob(name):
    model = spline_flow(name, 2)
    samples = model.sample(20000, seed=7).numpy()
    edges = np.linspace(-4, 4, 17)
    hist, _, _ = np.histogram2d(samples[:, 0], samples[:, 1], bins=[edges, edges])
    points, cell = grid(4.0, 321)
    density = np.exp(model.log_prob(points).numpy()).reshape(321, 321) * cell
    bins = np.clip(np.searchsorted(edges, np.linspace(-4, 4, 321)) - 1, 0, 15)
    expected = np.zeros((16, 16))
    np.add.at(expected, (bins[None, :].repeat(321, 0), bins[:, None].repeat(321, 1)), density)
    assert 0.5 * np.abs(hist / 20000 - expected).sum() < 0.05


@pytest.mark.parametrize("name", list(SPLINE_FLOWS))
def test_spline_flow_frozen_copy_and_tfp_views_agree(name):
    model = spline_flow(name, 4, batch_norm=True, seed=2)
    x = tf.constant(np.random.default_rng(3).normal(size=(6, 4)))
    np.testing.assert_allclose(model.frozen().log_prob(x), model.log_prob(x), atol=1e-12)
    np.testing.assert_allclose(model.distribution.log_prob(x), model.log_prob(x), atol=1e-9)
    seed = tf.constant([1, 0])
    plain = tf.function(lambda: model.sample(5, seed=seed))()  # the XLA fast path equals the plain graph
    np.testing.assert_allclose(model.sample(5, seed=seed), plain, atol=1e-9)


def test_spline_flow_options_are_checked():
    with pytest.raises(ValueError, match="transformer"):
        build_flow("maf", 2, transformer="cubic")
    with pytest.raises(ValueError, match="permutation"):
        build_flow("realnvp", 2, permutation="random")
    with pytest.raises(ValueError, match="gated"):
        build_flow("iaf", 2, gated=True, transformer="spline")
    with pytest.raises(ValueError, match="belong to kind"):
        build_flow("planar", 2, transformer="spline")
