"""One shared check, run on every bijector at perturbed ("trained-looking") weights, in float64:

round trips both ways, log-det equal to log|det| of the autodiff Jacobian in both directions,
ildj(x) = -fldj(f^-1(x)), the Jacobian's zero pattern equal to the structure the layer promises,
TFP's interface agreeing with the one-pass methods, and a gradient for every variable.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfflows.models.bijectors import (
    Additive,
    AffineCoupling,
    BatchNormalization,
    Coupling,
    DiagonalScaling,
    GatedInverseAutoregressiveFlow,
    HybridAutoregressive,
    InverseAutoregressiveFlow,
    LULinear,
    MaskedAutoregressiveFlow,
    Permutation,
    RationalQuadraticSpline,
    split_indices,
)
from tfflows.models.made import MADE
from tests.flow_testing import (
    assert_log_dets_match_autodiff,
    dependency_pattern,
    jacobian_and_log_det,
    perturb,
    slogdet,
)

DT = "float64"
CONTEXT_DIM = 2


def _triangular(degrees):
    """Allowed dependencies of an autoregressive map: output i on input j iff deg_j <= deg_i."""
    d = np.asarray(degrees)
    return d[None, :] <= d[:, None]


def _made(dim, order="natural", context=False, hidden=(7,), num_params=2):
    return MADE(dim, list(hidden), num_params=num_params, order=order, context_dim=CONTEXT_DIM if context else None,
                dtype=DT)


# Tail bound 2: a fair share of the N(0, 1) test rows lies in the identity tails.
SPLINE = RationalQuadraticSpline(num_bins=5, tail_bound=2.0)


def make_maf(dim, context=False, order="natural", hidden=(7,), bound=1.5, transformer=None):
    made = _made(dim, order, context, hidden, num_params=transformer.num_params if transformer else 2)
    return MaskedAutoregressiveFlow(made, max_log_scale=bound, transformer=transformer), _triangular(made.degrees_in)


def make_iaf(dim, context=False, order="reversed", transformer=None):
    made = _made(dim, order, context, num_params=transformer.num_params if transformer else 2)
    return InverseAutoregressiveFlow(made, max_log_scale=1.5, transformer=transformer), _triangular(made.degrees_in)


def make_gated_iaf(dim, context=False):
    made = _made(dim, "random", context)
    return GatedInverseAutoregressiveFlow(made, forget_bias=1.0), _triangular(made.degrees_in)


def _coupling_pattern(dim, cond, trans):
    allowed = np.eye(dim, dtype=bool)
    for i in trans:
        allowed[i, cond] = True
    return allowed


def make_coupling(dim, context=False, flip=False):
    cond, trans = split_indices(dim, "halves", flip)
    layer = AffineCoupling(dim, [6], cond, trans, CONTEXT_DIM if context else None,
                           max_log_scale=None if flip else 1.5, dtype=DT)
    return layer, _coupling_pattern(dim, cond, trans)


def make_transformer_coupling(dim, context=False, transformer=SPLINE, split="halves"):
    """A `Coupling` with any transformer: the coupling spline flow's layer, or NICE's (Additive)."""
    cond, trans = split_indices(dim, split, False)
    layer = Coupling(dim, [6], cond, trans, transformer, CONTEXT_DIM if context else None, dtype=DT)
    return layer, _coupling_pattern(dim, cond, trans)


def make_haf(dim, context=False, flip=False, order="natural", transformer=None):
    made_idx, coupling_idx = split_indices(dim, "parity", flip)
    layer = HybridAutoregressive(dim, made_idx, coupling_idx, [7], [6], made_order=order,
                                 context_dim=CONTEXT_DIM if context else None,
                                 max_log_scale=None if flip else 1.5, dtype=DT, transformer=transformer)
    allowed = _coupling_pattern(dim, made_idx, coupling_idx)
    degrees = layer.made.degrees_in
    for a, i in enumerate(made_idx):
        allowed[i, made_idx] = degrees <= degrees[a]  # the MADE block (thesis fig. 6.2)
    return layer, allowed


def make_batch_norm(dim, context=False):
    return BatchNormalization(dim), np.eye(dim, dtype=bool)


def make_permutation(dim, context=False):
    perm = np.random.default_rng(dim).permutation(dim)
    forward = np.zeros((dim, dim), dtype=bool)
    forward[np.arange(dim), perm] = True
    return Permutation(perm), (forward.T, forward)  # (inverse, forward) Jacobian patterns


CASES = {
    "maf": (make_maf, [1, 2, 3, 5]),
    "maf_two_hidden": (lambda d, context=False: make_maf(d, context, "random", hidden=(7, 9), bound=None), [3, 5]),
    "maf_no_hidden": (lambda d, context=False: make_maf(d, context, hidden=(), bound=None), [2, 4]),
    "iaf": (make_iaf, [1, 3, 5]),
    "gated_iaf": (make_gated_iaf, [2, 5]),
    "coupling": (make_coupling, [2, 3, 5]),
    "coupling_flipped": (lambda d, context=False: make_coupling(d, context, flip=True), [3, 4]),
    "haf": (make_haf, [2, 3, 5]),
    "haf_flipped_reversed": (lambda d, context=False: make_haf(d, context, True, "reversed"), [3, 6]),
    "batch_norm": (make_batch_norm, [1, 4]),
    "permutation": (make_permutation, [4]),
    "spline_maf": (lambda d, context=False: make_maf(d, context, "random", transformer=SPLINE), [1, 3, 5]),
    "spline_maf_no_hidden": (lambda d, context=False: make_maf(d, context, hidden=(), transformer=SPLINE), [3]),
    "spline_iaf": (lambda d, context=False: make_iaf(d, context, transformer=SPLINE), [1, 4]),
    "spline_coupling": (make_transformer_coupling, [2, 5]),
    "spline_haf": (lambda d, context=False: make_haf(d, context, transformer=SPLINE), [3, 5]),
    "nice_coupling": (lambda d, context=False: make_transformer_coupling(d, context, Additive(), "parity"), [2, 5]),
    "lu_linear": (lambda d, context=False: (LULinear(d, seed=d, dtype=DT), np.ones((d, d), bool)), [1, 4]),
    "diagonal_scaling": (lambda d, context=False: (DiagonalScaling(d, dtype=DT), np.eye(d, dtype=bool)), [3]),
}
PARAMS = [(name, dim) for name, (_, dims) in CASES.items() for dim in dims]
CONDITIONAL = ["maf", "iaf", "gated_iaf", "coupling", "haf", "spline_maf", "spline_iaf", "spline_coupling",
               "spline_haf", "nice_coupling"]


def build(name, dim, context=False, seed=0):
    layer, allowed = CASES[name][0](dim, context=context)
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.normal(size=(32, dim)), tf.float64)
    ctx = tf.constant(rng.normal(size=(32, CONTEXT_DIM)), tf.float64) if context else None
    layer.inverse_and_log_det(x, context=ctx)  # creates the variables
    perturb(layer, seed=seed + 1)
    return layer, allowed, x, ctx


@pytest.mark.parametrize("name,dim", PARAMS)
def test_round_trips(name, dim):
    layer, _, x, _ = build(name, dim)
    u, _ = layer.inverse_and_log_det(x)
    np.testing.assert_allclose(layer.forward_and_log_det(u)[0], x, atol=1e-10)
    y, _ = layer.forward_and_log_det(x)
    np.testing.assert_allclose(layer.inverse_and_log_det(y)[0], x, atol=1e-10)
    assert not np.allclose(u, x), "a perturbed layer should not be the identity"


@pytest.mark.parametrize("name,dim", PARAMS)
def test_log_det_equals_autodiff_jacobian(name, dim):
    layer, _, x, _ = build(name, dim)
    assert_log_dets_match_autodiff(layer, x)


@pytest.mark.parametrize("name,dim", PARAMS)
def test_jacobian_structure(name, dim):
    layer, allowed, x, _ = build(name, dim)
    inverse_pattern, forward_pattern = allowed if isinstance(allowed, tuple) else (allowed, allowed)
    jac, _ = jacobian_and_log_det(layer.inverse_and_log_det, x)
    np.testing.assert_array_equal(dependency_pattern(jac), inverse_pattern)
    jac_f, _ = jacobian_and_log_det(layer.forward_and_log_det, x)
    np.testing.assert_array_equal(dependency_pattern(jac_f), forward_pattern)


@pytest.mark.parametrize("name,dim", PARAMS)
def test_tfp_interface_agrees(name, dim):
    layer, _, x, _ = build(name, dim)
    u, ildj = layer.inverse_and_log_det(x)
    np.testing.assert_allclose(layer.inverse(tf.identity(x)), u, atol=1e-12)
    np.testing.assert_allclose(layer.inverse_log_det_jacobian(tf.identity(x), event_ndims=1), ildj, atol=1e-12)
    np.testing.assert_allclose(layer.forward(tf.identity(u)), x, atol=1e-10)
    np.testing.assert_allclose(layer.forward_log_det_jacobian(tf.identity(u), event_ndims=1), -ildj, atol=1e-9)


@pytest.mark.parametrize("name", [name for name in CASES if name != "permutation"])
def test_every_variable_gets_a_gradient(name):
    # D = 5 so that every MADE (HAF's included) has >= 2 inputs: a 1-D MADE's hidden layers
    # cannot reach its output, by construction.
    layer, _, x, _ = build(name, 5)
    for direction in (layer.inverse_and_log_det, layer.forward_and_log_det):
        with tf.GradientTape() as tape:
            y, log_det = direction(x, training=True) if name == "batch_norm" else direction(x)
            loss = tf.reduce_sum(tf.sin(y)) + tf.reduce_sum(log_det)
        grads = tape.gradient(loss, layer.trainable_variables)
        assert layer.trainable_variables
        for v, g in zip(layer.trainable_variables, grads):
            if name == "batch_norm" and direction == layer.forward_and_log_det:
                continue  # sampling uses stored statistics; checked in the inverse direction
            assert g is not None and np.any(np.asarray(g) != 0), f"no gradient for {v.name}"


@pytest.mark.parametrize("name", CONDITIONAL)
def test_conditional_layers(name):
    layer, allowed, x, ctx = build(name, 4, context=True)
    u, log_det = layer.inverse_and_log_det(x, context=ctx)
    np.testing.assert_allclose(layer.forward_and_log_det(u, context=ctx)[0], x, atol=1e-10)
    jac, log_det = jacobian_and_log_det(lambda v: layer.inverse_and_log_det(v, context=ctx), x)
    np.testing.assert_allclose(log_det, slogdet(jac), atol=1e-9)
    np.testing.assert_array_equal(dependency_pattern(jac), allowed)
    other = layer.inverse_and_log_det(x, context=ctx + 1.0)[0]
    assert not np.allclose(other, u), "the context must change the transformation"
    with pytest.raises(ValueError, match="context"):
        layer.inverse_and_log_det(x)


def test_maf_and_iaf_with_the_same_made_are_inverses():
    """MAF paper, appendix A: MAF's u -> x and IAF's x -> u (same MADE) undo each other."""
    made = _made(5, "random")
    maf, iaf = MaskedAutoregressiveFlow(made, 2.0), InverseAutoregressiveFlow(made, 2.0)
    x = tf.constant(np.random.default_rng(3).normal(size=(8, 5)))
    made(x)
    perturb(made, seed=4)
    np.testing.assert_allclose(iaf.forward(maf.forward(x)), x, atol=1e-10)
    np.testing.assert_allclose(maf.forward(iaf.forward(x)), x, atol=1e-10)
    np.testing.assert_allclose(iaf.inverse_and_log_det(x)[0], maf.forward_and_log_det(x)[0], atol=1e-12)


class TestBatchNormalization:
    def setup_method(self):
        self.layer = BatchNormalization(3, epsilon=1e-5, momentum=0.9)
        rng = np.random.default_rng(0)
        self.x = tf.constant(rng.normal(2.0, 3.0, size=(200, 3)))
        perturb(self.layer, seed=1)

    def test_training_mode_uses_minibatch_statistics(self):
        mean, var = np.mean(self.x, 0), np.var(self.x, 0)
        u, log_det = self.layer.inverse_and_log_det(self.x, training=True)
        gamma, beta = self.layer.log_gamma.numpy(), self.layer.beta.numpy()
        expected = (self.x - mean) / np.sqrt(var + 1e-5) * np.exp(gamma) + beta  # eq. 12
        np.testing.assert_allclose(u, expected, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(log_det, np.sum(gamma - 0.5 * np.log(var + 1e-5)) * np.ones(200), rtol=1e-6)

    def test_training_updates_running_averages_and_evaluation_uses_them(self):
        old_mean = self.layer.mean.numpy()
        self.layer.inverse_and_log_det(self.x, training=True)
        expected = 0.9 * old_mean + 0.1 * np.mean(self.x, 0)
        np.testing.assert_allclose(self.layer.mean.numpy(), expected, rtol=1e-5)
        u, _ = self.layer.inverse_and_log_det(self.x, training=False)
        stored = (self.x - self.layer.mean.numpy()) / np.sqrt(self.layer.variance.numpy() + 1e-5)
        np.testing.assert_allclose(u, stored * np.exp(self.layer.log_gamma.numpy()) + self.layer.beta.numpy(),
                                   rtol=1e-5)

    def test_evaluation_does_not_update_statistics(self):
        before = self.layer.mean.numpy().copy()
        self.layer.inverse_and_log_det(self.x, training=False)
        np.testing.assert_array_equal(self.layer.mean.numpy(), before)

    def test_invalid_arguments(self):
        with pytest.raises(ValueError, match="momentum"):
            BatchNormalization(2, momentum=1.5)
        with pytest.raises(ValueError, match="epsilon"):
            BatchNormalization(2, epsilon=0.0)


def test_invalid_permutation_and_split():
    with pytest.raises(ValueError, match="permutation"):
        Permutation([0, 0, 1])
    with pytest.raises(ValueError, match="event_dim >= 2"):
        split_indices(1, "halves", False)
