"""The image bijectors and the image flows ("glow", "realnvp_image"), in float64 on tiny images:

round trips both ways, log-dets equal to log|det| of the autodiff Jacobian at perturbed weights
(ActNorm after its data initialisation), squeeze and factor-out being permutations, the coupling's
block structure on the Jacobian (Glow's learnt prior's too, which starts as the identity), ActNorm's data initialisation (once, saved with the weights),
the whole flows' normalisation (importance-sampled normaliser ~ 1) and samples consistent with
log_prob, `build_flow`'s one-line refusals, training, the frozen copy and the saved artifact.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tfflows.models import build_flow
from tfflows.models.bijectors import (
    ActNorm,
    Affine,
    FactorOut,
    ImageCoupling,
    InvertibleConv1x1,
    LearntPrior,
    Squeeze,
    channel_mask,
    checkerboard_mask,
)
from tfflows.models.kinds import data_options
from tests.flow_testing import (
    assert_log_dets_match_autodiff,
    dependency_pattern,
    jacobian_and_log_det,
    perturb,
    slogdet,
)

SHAPE = [4, 4, 2]
IMAGE = 32
EXTRA = 3  # entries after the image (factored out earlier): passed through untouched
D = IMAGE + EXTRA


def _coupling(mask, blocks, bound):
    return ImageCoupling(D, SHAPE, mask, Affine(bound), hidden_channels=4, residual_blocks=blocks, dtype="float64")


CASES = {
    "squeeze": lambda: Squeeze(D, SHAPE),
    "factor_out": lambda: FactorOut(D, SHAPE),
    "actnorm": lambda: ActNorm(D, SHAPE, dtype="float64"),
    "conv1x1": lambda: InvertibleConv1x1(D, SHAPE, seed=1, dtype="float64"),
    "checkerboard_coupling": lambda: _coupling(checkerboard_mask(SHAPE), 1, 1.5),
    "checkerboard_coupling_flipped": lambda: _coupling(checkerboard_mask(SHAPE, flip=True), 0, None),
    "channel_coupling": lambda: _coupling(channel_mask(SHAPE), 0, 1.5),
    "channel_coupling_flipped": lambda: _coupling(channel_mask(SHAPE, flip=True), 2, 1.5),
    "learnt_prior": lambda: LearntPrior(D, SHAPE, 1.5, dtype="float64"),
}
PERMUTATIONS = ["squeeze", "factor_out"]
COUPLINGS = [name for name in CASES if "coupling" in name] + ["learnt_prior"]


def build(name, seed=0):
    layer = CASES[name]()
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.normal(1.0, 2.0, size=(16, D)))
    layer.inverse_and_log_det(x)  # creates the variables (the weights are random just below)
    perturb(layer, seed=seed + 1)
    return layer, x


@pytest.mark.parametrize("name", list(CASES))
def test_round_trips_both_ways_and_pass_the_rest_through(name):
    layer, x = build(name)
    u, _ = layer.inverse_and_log_det(x)
    np.testing.assert_allclose(layer.forward_and_log_det(u)[0], x, atol=1e-10)
    y, _ = layer.forward_and_log_det(x)
    np.testing.assert_allclose(layer.inverse_and_log_det(y)[0], x, atol=1e-10)
    np.testing.assert_array_equal(u[:, IMAGE:], x[:, IMAGE:])
    np.testing.assert_array_equal(y[:, IMAGE:], x[:, IMAGE:])
    assert not np.allclose(u[:, :IMAGE], x[:, :IMAGE]), "a perturbed layer should not be the identity"


@pytest.mark.parametrize("name", list(CASES))
def test_log_det_equals_autodiff_jacobian(name):
    layer, x = build(name)
    log_det = assert_log_dets_match_autodiff(layer, x)
    assert name in PERMUTATIONS or np.abs(log_det).max() > 1e-3, "perturbed weights should change the volume"


@pytest.mark.parametrize("name", PERMUTATIONS)
def test_squeeze_and_factor_out_are_permutations(name):
    layer, x = build(name)
    jac, log_det = jacobian_and_log_det(layer.inverse_and_log_det, x)
    for matrix in np.asarray(jac):
        np.testing.assert_array_equal(np.sort(matrix, axis=1)[:, -1], np.ones(D))  # one 1 per row ...
        np.testing.assert_array_equal(np.abs(matrix).sum(axis=1), np.ones(D))  # ... and nothing else
        np.testing.assert_array_equal(np.abs(matrix).sum(axis=0), np.ones(D))  # every input used once
    np.testing.assert_array_equal(log_det, np.zeros(16))


def test_squeeze_moves_each_2x2_block_into_the_channels():
    x = np.random.default_rng(0).normal(size=(3, *SHAPE))
    u = Squeeze(IMAGE, SHAPE).inverse(tf.constant(x.reshape(3, IMAGE))).numpy().reshape(3, 2, 2, 8)
    h, w, c = SHAPE
    for i, j, a, b, k in np.ndindex(h // 2, w // 2, 2, 2, c):
        assert u[:, i, j, (2 * a + b) * c + k].tolist() == x[:, 2 * i + a, 2 * j + b, k].tolist()


def test_factor_out_keeps_the_first_half_of_the_channels_in_front():
    x = np.random.default_rng(0).normal(size=(3, *SHAPE))
    u = FactorOut(IMAGE, SHAPE).inverse(tf.constant(x.reshape(3, IMAGE))).numpy()
    np.testing.assert_array_equal(u[:, :16], x[..., :1].reshape(3, 16))
    np.testing.assert_array_equal(u[:, 16:], x[..., 1:].reshape(3, 16))


@pytest.mark.parametrize("name", COUPLINGS)
def test_coupling_jacobian_has_the_block_structure(name):
    layer, x = build(name)
    kept = np.concatenate([layer.kept.reshape(-1), np.ones(EXTRA, bool)])
    for direction in (layer.inverse_and_log_det, layer.forward_and_log_det):
        jac, _ = jacobian_and_log_det(direction, x)
        pattern = dependency_pattern(jac)
        np.testing.assert_array_equal(np.asarray(jac)[:, kept], np.broadcast_to(np.eye(D)[kept], (16, kept.sum(), D)))
        changed = ~kept
        # a transformed entry depends on itself and on kept entries, never on another transformed one
        np.testing.assert_array_equal(pattern[np.ix_(changed, changed)], np.eye(changed.sum(), dtype=bool))
        assert pattern[np.ix_(changed, kept[:IMAGE].nonzero()[0])].any(axis=1).all()
        assert not pattern[:, IMAGE:][changed].any(), "the passed-through entries condition nothing"


def test_learnt_prior_starts_as_the_identity_and_transforms_what_factor_out_sends_to_the_base():
    layer = LearntPrior(D, SHAPE, dtype="float64")
    x = tf.constant(np.random.default_rng(0).normal(size=(4, D)))
    for direction in (layer.inverse_and_log_det, layer.forward_and_log_det):
        jac, log_det = jacobian_and_log_det(direction, x)  # the zero-initialised convolution: N(0, 1)
        np.testing.assert_array_equal(np.asarray(jac), np.broadcast_to(np.eye(D), (4, D, D)))
        np.testing.assert_array_equal(log_det, np.zeros(4))
    kept = tf.constant(layer.kept.reshape(1, IMAGE).astype("float64"))
    split = FactorOut(IMAGE, SHAPE).inverse(kept).numpy()[0]  # the kept entries lead, the rest go to the base
    np.testing.assert_array_equal(split, np.repeat([1.0, 0.0], IMAGE // 2))


def test_masks():
    board = checkerboard_mask([2, 4, 3])
    assert board[0, 0].all() and not board[0, 1].any() and board[1, 1].all()
    np.testing.assert_array_equal(checkerboard_mask([2, 4, 3], flip=True), ~board)
    channels = channel_mask([2, 2, 4])
    np.testing.assert_array_equal(channels[1, 0], [False, False, True, True])
    np.testing.assert_array_equal(channel_mask([2, 2, 4], flip=True), ~channels)
    with pytest.raises(ValueError, match="at least 2 channels"):
        channel_mask([2, 2, 1])


def test_actnorm_data_initialisation_happens_once_and_is_saved(tmp_path):
    layer = ActNorm(IMAGE, SHAPE, dtype="float64")
    rng = np.random.default_rng(0)
    first = tf.constant(rng.normal(3.0, 5.0, size=(64, IMAGE)) * np.tile([1.0, 0.1], 16))
    u, _ = layer.inverse_and_log_det(first, training=True)  # a training pass does not initialise: the identity
    np.testing.assert_array_equal(u.numpy(), first.numpy())
    assert layer.initialise(first) and bool(layer.initialised.numpy())
    u, _ = layer.inverse_and_log_det(first)
    channels = u.numpy().reshape(64, 4, 4, 2)
    np.testing.assert_allclose(channels.mean(axis=(0, 1, 2)), [0.0, 0.0], atol=1e-10)
    np.testing.assert_allclose(channels.var(axis=(0, 1, 2)), [1.0, 1.0], rtol=1e-5)  # var / (var + 1e-6)
    location = layer.location.numpy().copy()
    assert not layer.initialise(first * 7.0 + 1.0)  # a second batch changes nothing
    np.testing.assert_array_equal(layer.location.numpy(), location)
    tf.train.Checkpoint(layer=layer).write(str(tmp_path / "ckpt"))
    restored = ActNorm(IMAGE, SHAPE, dtype="float64")
    tf.train.Checkpoint(layer=restored).read(str(tmp_path / "ckpt")).assert_consumed()
    assert not restored.initialise(first * 3.0)
    np.testing.assert_array_equal(restored.location.numpy(), location)


def test_initialise_from_data_normalises_every_actnorm_input_in_order_and_fit_runs_it():
    model = build_flow("glow", 64, image_shape=[4, 4, 4], levels=2, steps_per_level=2, hidden_channels=4)
    perturb(model, seed=3, scale=0.5)  # couplings and 1x1 convolutions that change the data
    x = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, size=(128, 64)), tf.float32)
    assert model.needs_data_initialisation and model.initialise_from_data(x)
    assert not model.needs_data_initialisation
    actnorms = 0
    h = x
    for layer in model.flow_layers:  # each ActNorm's output on its own input: zero mean, unit variance
        h, _ = layer.inverse_and_log_det(h)
        if isinstance(layer, ActNorm):
            actnorms += 1
            image = h.numpy()[:, :layer.size].reshape(-1, layer.data_shape[-1])
            np.testing.assert_allclose(image.mean(0), 0.0, atol=1e-4)
            np.testing.assert_allclose(image.std(0), 1.0, atol=1e-3)
    assert actnorms == 4 and not model.initialise_from_data(x * 5.0)

    fresh = build_flow("glow", 64, image_shape=[4, 4, 4], levels=2, steps_per_level=2, hidden_channels=4)
    fresh.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
    fresh.fit(x.numpy(), batch_size=32, epochs=1, verbose=0)
    assert all(bool(layer.initialised.numpy()) for layer in fresh.flow_layers if isinstance(layer, ActNorm))


# ----- whole flows ------------------------------------------------------------------------------

FLOWS = {
    "glow": dict(kind="glow", levels=2, steps_per_level=1),
    "glow_prior": dict(kind="glow", levels=2, steps_per_level=1, learnt_prior=True),
    "realnvp_image": dict(kind="realnvp_image", levels=2, couplings_per_level=1, residual_blocks=1),
}


def image_flow(name, image_shape, seed=0, scale=0.5, **extra):
    options = {**FLOWS[name], **extra}
    dim = int(np.prod(image_shape))
    model = build_flow(options.pop("kind"), dim, image_shape=list(image_shape), hidden_channels=4, dtype="float64",
                       seed=seed, **options)
    rng = np.random.default_rng(seed)
    model.initialise_from_data(rng.normal(size=(64, dim)))
    perturb(model, seed=seed + 1, scale=scale)
    return model


@pytest.mark.parametrize("name,image_shape", [("glow", [4, 4, 2]), ("glow_prior", [4, 4, 2]), ("realnvp_image", [4, 4])])
def test_flow_round_trips_and_log_det_equals_autodiff(name, image_shape):
    model = image_flow(name, image_shape)
    dim = int(np.prod(image_shape))
    x = tf.constant(np.random.default_rng(1).normal(size=(6, dim)))
    jac, log_det = jacobian_and_log_det(lambda v: model.inverse_and_log_det(v), x)
    np.testing.assert_allclose(log_det, slogdet(jac), atol=1e-9)
    u = model.inverse_and_log_det(x)[0]
    np.testing.assert_allclose(model.bijector.forward(u), x, atol=1e-9)
    np.testing.assert_allclose(model.distribution.log_prob(x), model.log_prob(x), atol=1e-9)
    base = -0.5 * (np.square(u).sum(1) + dim * np.log(2 * np.pi))
    np.testing.assert_allclose(model.log_prob(x), base + log_det, atol=1e-9)


def _student(mean, cov, dof=4):
    from scipy import stats

    return stats.multivariate_t(loc=mean, shape=cov, df=dof, seed=0)


def assert_normalised_and_samples_follow_log_prob(model):
    """An importance-sampled normaliser (heavy-tailed proposal) is 1, and the flow's own samples
    give E_q[r / q] = 1 for a narrower density r."""
    samples = model.sample(40000, seed=3).numpy()
    mean, cov = samples.mean(0), np.cov(samples, rowvar=False)
    proposal = _student(mean, 2.0 * cov)
    points = proposal.rvs(size=100000)
    weights = np.exp(model.log_prob(points).numpy() - proposal.logpdf(points))
    normaliser, se = weights.mean(), weights.std() / np.sqrt(len(weights))
    assert abs(normaliser - 1.0) < max(4 * se, 0.01), (normaliser, se)
    narrow = _student(mean, 0.5 * cov, dof=30)
    ratio = np.exp(narrow.logpdf(samples) - model.log_prob(samples).numpy())
    assert abs(ratio.mean() - 1.0) < max(4 * ratio.std() / np.sqrt(len(ratio)), 0.01), ratio.mean()
    assert np.abs(cov - np.eye(len(cov))).max() > 0.1, "a perturbed flow should not be the base density"


@pytest.mark.parametrize("name", ["glow", "realnvp_image"])
def test_flow_normalises_and_samples_follow_log_prob(name):
    """A 2x2 grey-image flow (D = 4)."""
    assert_normalised_and_samples_follow_log_prob(image_flow(name, [2, 2], levels=1, scale=0.4))


@pytest.mark.parametrize("seed", [0, 1])
def test_glow_with_a_learnt_prior_normalises_and_samples_follow_log_prob(seed):
    """The prior sits between two levels, so the smallest image is 4x4 (D = 16). Only the priors
    are perturbed (the other layers, whose normalisation the test above checks, stay as initialised)
    and their log-scales bounded by 0.5: a freely perturbed 16-D flow is too far from any Student
    proposal for importance sampling to converge."""
    model = build_flow("glow", 16, image_shape=[4, 4], levels=2, steps_per_level=1, hidden_channels=4,
                       max_log_scale=0.5, learnt_prior=True, dtype="float64", seed=seed)
    model.initialise_from_data(np.random.default_rng(seed).normal(size=(64, 16)))
    priors = [layer for layer in model.flow_layers if isinstance(layer, LearntPrior)]
    for layer in priors:
        perturb(layer, seed=seed + 1)
    assert len(priors) == 1
    assert_normalised_and_samples_follow_log_prob(model)


# one level (the fastest) for each flow; the learnt prior needs two, as it sits between levels
SMALL_LEVELS = [("glow", 1), ("realnvp_image", 1), ("glow_prior", 2)]


@pytest.mark.parametrize("name,levels", SMALL_LEVELS)
def test_fit_lowers_the_negative_log_likelihood(name, levels):
    rng = np.random.default_rng(0)
    smooth = np.cumsum(rng.normal(size=(256, 4, 4)), axis=2)  # correlated neighbouring pixels
    data = (smooth + 0.3 * rng.normal(size=(256, 4, 4))).reshape(256, 16).astype("float32")
    options = {**FLOWS[name], "levels": levels}
    model = build_flow(options.pop("kind"), 16, image_shape=[4, 4], hidden_channels=8, **options)
    model.compile(optimizer=tf_keras.optimizers.Adam(3e-3))
    before = -float(tf.reduce_mean(model.log_prob(data)))
    model.fit(data, batch_size=64, epochs=3, verbose=0)
    after = -float(tf.reduce_mean(model.log_prob(data)))
    assert after < before - 1.0, (before, after)
    priors = [layer for layer in model.flow_layers if isinstance(layer, LearntPrior)]
    assert len(priors) == (levels - 1 if options.get("learnt_prior") else 0)
    assert all(np.abs(v.numpy()).max() > 0 for p in priors for v in p.trainable_variables), "the prior learns"


def test_glow_puts_a_learnt_prior_just_before_each_factor_out():
    model = build_flow("glow", 64, image_shape=[8, 8], levels=3, steps_per_level=1, hidden_channels=4,
                       learnt_prior=True)
    layers = model.flow_layers
    priors = [k for k, layer in enumerate(layers) if isinstance(layer, LearntPrior)]
    assert [type(layers[k + 1]) for k in priors] == [FactorOut, FactorOut]
    assert all(layers[k].data_shape == layers[k + 1].data_shape for k in priors)
    plain = build_flow("glow", 64, image_shape=[8, 8], levels=3, steps_per_level=1, hidden_channels=4)
    assert not any(isinstance(layer, LearntPrior) for layer in plain.flow_layers)
    with pytest.raises(ValueError, match=r"`learnt_prior` must be True or False, but is 'yes'"):
        build_flow("glow", 64, image_shape=[8, 8], learnt_prior="yes")


@pytest.mark.parametrize("name,levels", SMALL_LEVELS)
def test_frozen_copy_xla_and_saved_artifact_agree(name, levels, tmp_path):
    from tfflows.components.flow_artifact import load_flow, save_flow

    model = image_flow(name, [4, 4, 2], seed=2, levels=levels)
    x = tf.constant(np.random.default_rng(3).normal(size=(5, 32)))
    np.testing.assert_allclose(model.frozen().log_prob(x), model.log_prob(x), atol=1e-12)
    seed = tf.constant([1, 0])
    plain = tf.function(lambda: model.sample(4, seed=seed))()
    np.testing.assert_allclose(model.sample(4, seed=seed), plain, atol=1e-9)
    save_flow(model, str(tmp_path / "model"))
    restored = load_flow(str(tmp_path / "model"))
    assert restored.config.options.image_shape == [4, 4, 2]
    np.testing.assert_allclose(restored.log_prob(x), model.log_prob(x), atol=1e-12)


@pytest.mark.parametrize("options,match", [
    (dict(), r"needs `image_shape`.*it is None"),
    (dict(image_shape=[5, 5]), r"holds 25 values, but `event_dim` is 64"),
    (dict(image_shape=[8, 8], levels=4), r"divisible by 16"),
    (dict(image_shape=[8, 8, 1, 1]), r"`image_shape` must be \[H, W\] or \[H, W, C\]"),
    (dict(image_shape=[8, 8], context_dim=2), r"`context_dim` must be None"),
    (dict(image_shape=[8, 8], batch_norm=True), r"`batch_norm` must be False"),
    (dict(image_shape=[8, 8], steps_per_level=0), r"`steps_per_level` must be an int >= 1"),
])
def test_build_flow_refuses_bad_image_options_in_one_line(options, match):
    with pytest.raises(ValueError, match=match) as error:
        build_flow("glow", 64, **options)
    assert "\n" not in str(error.value)


def test_realnvp_image_refuses_levels_its_image_cannot_hold():
    with pytest.raises(ValueError, match="divisible by 8"):
        build_flow("realnvp_image", 16, image_shape=[4, 4], levels=3)


def test_image_kinds_take_the_image_shape_from_the_data():
    assert data_options("glow", [28, 28]) == {"image_shape": [28, 28]}
    assert data_options("realnvp_image", None) == {"image_shape": None}
    assert data_options("maf", [28, 28]) == {}
