"""Variational inference: the planar bijector, reverse-KL fitting, and the VAE with IAF posterior."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tfflows.models import build_flow, targets
from tfflows.models.bijectors.planar import PlanarFlow
from tfflows.models.vae import IAFVAE
from tfflows.models.vi import (effective_sample_size, fit_unnormalized, importance_diagnostics,
                       sample_and_log_prob)
from tests.flow_testing import jacobian_and_log_det, perturb, slogdet

DT = "float64"


# ----- planar bijector: the shared checks of tests/test_bijectors.py ------------------------------
def _planar(dim, seed, scale=1.5):
    layer = PlanarFlow(dim, dtype=DT, seed=seed)
    rng = np.random.default_rng(seed)
    # Large, "trained-looking" parameters: strongly non-linear, and wᵀu often < -1 (constraint active).
    layer.w.assign(rng.normal(0.0, scale, dim))
    layer.u.assign(rng.normal(0.0, scale, dim))
    layer.b.assign(rng.normal(0.0, 1.0))
    x = tf.constant(rng.normal(size=(32, dim)) * 2.0, tf.float64)
    return layer, x


PLANAR = [(dim, seed) for dim in (1, 2, 5) for seed in (0, 1, 2)]


@pytest.mark.parametrize("dim,seed", PLANAR)
def test_planar_round_trips(dim, seed):
    layer, x = _planar(dim, seed)
    u, _ = layer.inverse_and_log_det(x)
    np.testing.assert_allclose(layer.forward_and_log_det(u)[0], x, atol=1e-10)
    y, _ = layer.forward_and_log_det(x)
    np.testing.assert_allclose(layer.inverse_and_log_det(y)[0], x, atol=1e-10)
    assert not np.allclose(u, x), "a perturbed layer should not be the identity"


@pytest.mark.parametrize("dim,seed", PLANAR)
def test_planar_log_det_equals_autodiff_jacobian(dim, seed):
    layer, x = _planar(dim, seed)
    jac, log_det = jacobian_and_log_det(layer.inverse_and_log_det, x)  # through the root finder
    np.testing.assert_allclose(log_det, slogdet(jac), atol=1e-9)
    u = layer.inverse_and_log_det(x)[0]
    jac_f, log_det_f = jacobian_and_log_det(layer.forward_and_log_det, u)
    np.testing.assert_allclose(log_det_f, slogdet(jac_f), atol=1e-9)
    np.testing.assert_allclose(log_det_f, -log_det, atol=1e-9)
    assert np.all(np.linalg.det(np.asarray(jac_f)) > 0), "the constraint keeps the map orientation-preserving"


def test_planar_constraint_and_tfp_interface():
    layer, x = _planar(3, 0)
    layer.u.assign(-10.0 * layer.w)  # wᵀu << -1: the unconstrained map would not be invertible
    assert float(tf.reduce_sum(layer.w * layer.u_hat())) > -1.0
    u, ildj = layer.inverse_and_log_det(x)
    np.testing.assert_allclose(layer.forward(tf.identity(u)), x, atol=1e-10)
    np.testing.assert_allclose(layer.inverse(tf.identity(x)), u, atol=1e-12)
    np.testing.assert_allclose(layer.inverse_log_det_jacobian(tf.identity(x), event_ndims=1), ildj, atol=1e-12)
    # The inverse is differentiable w.r.t. the parameters too (implicit-function gradient).
    for direction in (layer.forward_and_log_det, layer.inverse_and_log_det):
        with tf.GradientTape() as tape:
            y, log_det = direction(x)
            loss = tf.reduce_sum(tf.sin(y)) + tf.reduce_sum(log_det)
        grads = tape.gradient(loss, layer.trainable_variables)
        assert len(grads) == 3 and all(g is not None and np.any(np.asarray(g) != 0) for g in grads)


def test_planar_parameter_gradient_of_inverse_matches_finite_differences():
    layer, x = _planar(2, 4)

    def loss():
        z, ld = layer.inverse_and_log_det(x)
        return tf.reduce_sum(tf.sin(z)) + tf.reduce_sum(ld)

    with tf.GradientTape() as tape:
        value = loss()
    grad_b = float(tape.gradient(value, layer.b))
    b0, h = float(layer.b), 1e-6
    layer.b.assign(b0 + h)
    up = float(loss())
    layer.b.assign(b0 - h)
    down = float(loss())
    np.testing.assert_allclose(grad_b, (up - down) / (2 * h), rtol=1e-5)


def test_planar_flow_model_density_matches_one_pass_density():
    flow = build_flow("planar", 2, num_layers=4, planar_init_scale=1.0, dtype=DT, seed=3)
    x, log_q = sample_and_log_prob(flow, 64, seed=5)
    np.testing.assert_allclose(flow.log_prob(x), log_q, atol=1e-9)  # root-finding direction


# ----- targets and diagnostics ---------------------------------------------------------------------
def test_targets_match_table_3_1():
    z = tf.constant([[2.0, 0.0], [0.3, -1.2]], tf.float64)
    np.testing.assert_allclose(targets.U1(z)[0], math.log(1 + math.exp(-0.5 * (4 / 0.6) ** 2)), atol=1e-12)
    z1, z2 = 0.3, -1.2
    w1 = math.sin(2 * math.pi * z1 / 4)
    w2 = 3 * math.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
    w3 = 3 / (1 + math.exp(-(z1 - 1) / 0.3))
    np.testing.assert_allclose(targets.U2(z)[1], -0.5 * ((z2 - w1) / 0.4) ** 2)
    np.testing.assert_allclose(targets.U3(z)[1], np.logaddexp(-0.5 * ((z2 - w1) / 0.35) ** 2,
                                                              -0.5 * ((z2 - w1 + w2) / 0.35) ** 2))
    np.testing.assert_allclose(targets.U4(z)[1], np.logaddexp(-0.5 * ((z2 - w1) / 0.4) ** 2,
                                                              -0.5 * ((z2 - w1 + w3) / 0.35) ** 2))
    np.testing.assert_allclose(targets.potential("U2", z), -targets.U2(z))


def test_effective_sample_size():
    assert effective_sample_size(np.zeros(10)) == pytest.approx(1.0)
    assert effective_sample_size(np.array([0.0] + [-np.inf] * 9)) == pytest.approx(0.1)


def test_reverse_kl_on_u1_lowers_kl_and_raises_ess():
    flow = build_flow("planar", 2, num_layers=8, seed=0)
    before = importance_diagnostics(targets.U1, flow, n=4000, seed=7)
    history = fit_unnormalized(targets.U1, flow, steps=300, batch=128, lr=1e-2, seed=0, log_every=100)
    after = importance_diagnostics(targets.U1, flow, n=4000, seed=7)
    assert history["loss"][-1] < history["loss"][0]
    assert after["kl_minus_log_z"] < before["kl_minus_log_z"] - 0.5
    assert after["ess"] > before["ess"] + 0.1


@pytest.mark.parametrize("kind", ["iaf", "realnvp"])
def test_one_pass_log_prob_equals_flow_log_prob(kind):
    flow = build_flow(kind, 2, num_layers=2, hidden_units=[8], batch_norm=False, dtype=DT)
    perturb(flow, seed=1)
    x, log_q = sample_and_log_prob(flow, 16, seed=2)
    np.testing.assert_allclose(flow.log_prob(x), log_q, atol=1e-8)  # IAF: the sequential direction


# ----- VAE with IAF posterior ----------------------------------------------------------------------
def _vae(num_steps, **kw):
    opts = dict(hidden_units=[16], iaf_hidden_units=[12, 12], context_dim=4, seed=0)
    opts.update(kw)
    return IAFVAE(12, 3, num_iaf_steps=num_steps, **opts)


def test_iaf_posterior_log_q_equals_autodiff():
    vae = _vae(3, dtype=DT)
    perturb(vae, seed=2)
    x = tf.constant((np.random.default_rng(0).random((8, 12)) > 0.5).astype(DT))
    mu, log_sigma, h = vae.encode(x)
    eps = tf.constant(np.random.default_rng(1).normal(size=(8, 3)))
    z, log_q = vae.transform_noise(eps, mu, log_sigma, h)
    jac, _ = jacobian_and_log_det(lambda e: vae.transform_noise(e, mu, log_sigma, h), eps)
    log_normal = -0.5 * np.sum(eps.numpy() ** 2, axis=1) - 1.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(log_q, log_normal - slogdet(jac), atol=1e-9)
    # The flow steps matter: dropping them changes log q.
    assert not np.allclose(z, mu + tf.exp(log_sigma) * eps)


def test_importance_bound_above_elbo_on_average():
    vae = _vae(2)
    x = tf.constant((np.random.default_rng(0).random((32, 12)) > 0.5).astype("float32"))
    elbo = float(tf.reduce_mean(vae.elbo(x, k=20, seed=1)))  # k=1 bound, averaged over 20 draws
    is20 = float(tf.reduce_mean(vae.importance_log_likelihood(x, 20, seed=2)))
    assert is20 > elbo
    shapes = vae.log_weights(x, 5).shape
    assert shapes == (5, 32)


def test_train_step_runs_with_dynamic_binarization():
    vae = _vae(1, dynamic_binarization=True)
    vae.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
    data = tf.data.Dataset.from_tensor_slices(np.random.default_rng(0).random((40, 12)).astype("float32")).batch(20)
    history = vae.fit(data, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["elbo"]))
    for likelihood in ("gaussian", "logistic"):
        v = _vae(1, likelihood=likelihood)
        assert np.all(np.isfinite(v.elbo(tf.random.normal([4, 12]))))


def test_iaf_posterior_beats_diagonal_on_a_fixed_decoder():
    """With the generative model frozen, ELBO = log p(x) - KL(q || p(z|x)): a better posterior family
    gives a higher ELBO. A random, strongly non-linear decoder makes p(z | x) non-Gaussian."""
    dim, latent = 16, 2

    def make(t):
        return IAFVAE(dim, latent, [32], num_iaf_steps=t, iaf_hidden_units=[32, 32], context_dim=8, seed=0)

    diag, iaf = make(0), make(4)
    perturb(diag.decoder, seed=3, scale=4.0)
    iaf.decoder.set_weights(diag.decoder.get_weights())
    probs = tf.sigmoid(diag.decoder(tf.random.stateless_normal([32, latent], [1, 2])))
    x = tf.cast(tf.random.stateless_uniform(probs.shape, [3, 4]) < probs, tf.float32)
    results = {}
    for vae in (diag, iaf):
        vae.decoder.trainable = False
        optimizer = tf_keras.optimizers.Adam(5e-3)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = -tf.reduce_mean(vae.elbo(x))
            grads = tape.gradient(loss, vae.trainable_variables)
            optimizer.apply_gradients(zip(grads, vae.trainable_variables))

        for _ in range(600):
            step()
        results[vae.num_iaf_steps] = (float(tf.reduce_mean(vae.elbo(x, k=100, seed=1))),
                                      float(tf.reduce_mean(vae.importance_log_likelihood(x, 500, seed=2))))
    (elbo_diag, ll_diag), (elbo_iaf, ll_iaf) = results[0], results[4]
    assert abs(ll_diag - ll_iaf) < 0.2, "same generative model, same log p(x)"
    assert elbo_iaf > elbo_diag + 0.25
