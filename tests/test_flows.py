"""Whole flows from `build_flow`: normalisation, sampling against log_prob, TFP views, training."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tfflows.models import FLOW_KINDS, build_flow
from tfflows.models.kinds import get_kind
from tfflows.models.made import MaskedDense
from tests.flow_testing import perturb

KIND_OPTIONS = {
    "made": {},
    "made_mog": {"num_components": 3},
    "maf": {"num_layers": 3},
    "maf_mog": {"num_layers": 2, "num_components": 3},
    "iaf": {"num_layers": 2},
    "gated_iaf": {"num_layers": 2, "gated": True},
    "realnvp": {"num_layers": 3},
    "haf": {"num_layers": 4},
    "nice": {"num_layers": 4},
}


def flow(name, dim, seed=0, scale=0.5, **extra):
    options = dict(KIND_OPTIONS[name])
    kind = {"maf_mog": "maf", "gated_iaf": "iaf"}.get(name, name)
    model = build_flow(kind, dim, hidden_units=[8], dtype="float64", **options, **extra)
    perturb(model, seed=seed, scale=scale)
    return model


def grid(limit=9.0, n=361):
    axis = np.linspace(-limit, limit, n)
    xx, yy = np.meshgrid(axis, axis)
    return np.stack([xx.ravel(), yy.ravel()], 1), (axis[1] - axis[0]) ** 2


@pytest.mark.parametrize("name", list(KIND_OPTIONS))
def test_density_integrates_to_one_in_two_dimensions(name):
    model = flow(name, 2, scale=0.4)
    # Perturbed batch norms can make the density wide: size the grid from where its mass lies.
    reach = np.percentile(np.abs(model.sample(5000, seed=0).numpy()), 99.9)
    points, cell = grid(limit=2.0 * reach, n=801)
    total = np.exp(model.log_prob(points).numpy()).sum() * cell
    assert abs(total - 1.0) < 0.02, total


@pytest.mark.parametrize("name", ["made", "maf", "iaf"])
def test_density_integrates_to_one_in_one_dimension(name):
    model = flow(name, 1)
    axis = np.linspace(-15, 15, 6001)[:, None]
    total = np.exp(model.log_prob(axis).numpy()).sum() * (axis[1, 0] - axis[0, 0])
    assert abs(total - 1.0) < 1e-3, total


@pytest.mark.parametrize("name", list(KIND_OPTIONS))
def test_samples_follow_log_prob(name):
    """A 2-D histogram of 20,000 samples against exp(log_prob) integrated over the same bins."""
    model = flow(name, 2, scale=0.4)
    samples = model.sample(20000, seed=7).numpy()
    edges = np.linspace(-4, 4, 17)
    hist, _, _ = np.histogram2d(samples[:, 0], samples[:, 1], bins=[edges, edges])
    points, cell = grid(4.0, 321)
    density = np.exp(model.log_prob(points).numpy()).reshape(321, 321) * cell
    centres = np.linspace(-4, 4, 321)
    bins = np.clip(np.searchsorted(edges, centres) - 1, 0, 15)
    expected = np.zeros((16, 16))
    np.add.at(expected, (bins[None, :].repeat(321, 0), bins[:, None].repeat(321, 1)), density)
    total_variation = 0.5 * np.abs(hist / 20000 - expected).sum()
    assert total_variation < 0.05, total_variation


@pytest.mark.parametrize("name", list(KIND_OPTIONS))
def test_tfp_distribution_and_bijector_agree_with_the_model(name):
    model = flow(name, 3)
    x = tf.constant(np.random.default_rng(1).normal(size=(5, 3)))
    np.testing.assert_allclose(model.distribution.log_prob(x), model.log_prob(x), atol=1e-9)
    u, _ = model.inverse_and_log_det(x)
    np.testing.assert_allclose(model.bijector.forward(u), x, atol=1e-9)
    np.testing.assert_allclose(model.bijector.inverse(tf.identity(x)), u, atol=1e-12)


def test_sampling_is_reproducible_with_a_seed():
    model = flow("maf", 3)
    a, b, c = model.sample(4, seed=3), model.sample(4, seed=3), model.sample(4, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert model.sample(2).shape == (2, 3)


@pytest.mark.parametrize("kind", [k for k in FLOW_KINDS if not get_kind(k).needs_image_shape])
def test_fit_lowers_the_negative_log_likelihood(kind):
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(512, 3)) @ np.array([[1.0, 0.8, 0.0], [0.0, 0.5, 0.3], [0.0, 0.0, 0.2]])).astype("float32")
    model = build_flow(kind, 3, num_layers=2, hidden_units=[16], l2=1e-6)
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-2))
    before = -float(tf.reduce_mean(model.log_prob(data)))
    history = model.fit(data, batch_size=64, epochs=6, verbose=0)
    after = -float(tf.reduce_mean(model.log_prob(data)))
    assert np.isfinite(history.history["nll"]).all()
    assert after < before - 0.3, (before, after)


def test_l2_penalty_is_part_of_the_loss():
    data = np.random.default_rng(0).normal(size=(64, 2)).astype("float32")
    model = build_flow("maf", 2, num_layers=1, hidden_units=[4], batch_norm=False, l2=0.5)
    model.compile(optimizer=tf_keras.optimizers.SGD(0.0))
    logs = model.evaluate(data, batch_size=64, verbose=0, return_dict=True)
    model.reset_metrics()
    step = model.train_step(tf.constant(data))
    np.testing.assert_allclose(float(step["loss"]) - float(step["nll"]), 0.5 * float(model.l2_penalty()), rtol=1e-5)
    assert logs["loss"] == pytest.approx(logs["nll"])


def test_batch_norm_takes_the_training_set_statistics_after_fit():
    data = (np.random.default_rng(0).normal(size=(300, 2)) * [3.0, 0.5] + [1.0, -2.0]).astype("float32")
    model = build_flow("realnvp", 2, num_layers=2, hidden_units=[8])
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
    model.fit(data, batch_size=50, epochs=1, verbose=0)
    first = model.batch_norm_layers[0]
    h, _ = model.flow_layers[0].inverse_and_log_det(data)  # the input of the first batch norm
    np.testing.assert_allclose(first.mean.numpy(), np.mean(h, 0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(first.variance.numpy(), np.var(h, 0), rtol=1e-4)
    running = build_flow("realnvp", 2, num_layers=2, hidden_units=[8], batch_norm_statistics="running")
    running.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
    running.fit(data, batch_size=50, epochs=1, verbose=0)
    h, _ = running.flow_layers[0].inverse_and_log_det(data)
    assert not np.allclose(running.batch_norm_layers[0].variance.numpy(), np.var(h, 0), rtol=1e-3)


def test_conditional_flow():
    rng = np.random.default_rng(0)
    context = rng.integers(0, 2, size=(400, 1)).astype("float32")
    x = (rng.normal(size=(400, 2)) * 0.3 + 3.0 * context).astype("float32")
    model = build_flow("maf", 2, num_layers=2, hidden_units=[16], context_dim=1)
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-2))
    model.fit(tf.data.Dataset.from_tensor_slices((x, context)).batch(50), epochs=15, verbose=0)
    probe = np.array([[3.0, 3.0]], "float32")
    assert float(model.log_prob(probe, context=[[1.0]])[0]) > float(model.log_prob(probe, context=[[0.0]])[0]) + 3
    samples = model.sample(200, seed=1, context=tf.ones([200, 1]))
    assert abs(float(tf.reduce_mean(samples)) - 3.0) < 0.5


def test_checkpoint_round_trip_keeps_log_prob(tmp_path):
    model = flow("haf", 4)
    x = tf.constant(np.random.default_rng(2).normal(size=(5, 4)))
    expected = model.log_prob(x).numpy()
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))  # not a shared /tmp path
    fresh = build_flow("haf", 4, hidden_units=[8], dtype="float64", **KIND_OPTIONS["haf"])
    tf.train.Checkpoint(model=fresh).read(path).assert_consumed()
    np.testing.assert_allclose(fresh.log_prob(x), expected, atol=1e-12)


@pytest.mark.parametrize("kwargs,match", [
    (dict(kind="sylvester", event_dim=2), "`kind` must be one of"),
    (dict(kind="maf", event_dim=2, widths=[3]), "Unknown flow option"),
    (dict(kind="realnvp", event_dim=1), "event_dim >= 2"),
    (dict(kind="realnvp", event_dim=4, num_components=3), "num_components"),
    (dict(kind="maf", event_dim=10, hidden_units=[4]), "hidden_units"),
    (dict(kind="maf", event_dim=2, num_layers=0), "num_layers"),
    (dict(kind="maf", event_dim=2, l2=-1.0), "l2"),
])
def test_bad_options_name_the_argument(kwargs, match):
    kind, dim = kwargs.pop("kind"), kwargs.pop("event_dim")
    with pytest.raises(ValueError, match=match):
        build_flow(kind, dim, **kwargs)


def test_builder_orders_and_alternates_layers_as_the_papers_do():
    """MAF/IAF reverse the MADE order every layer; Real NVP alternates halves; HAF alternates the
    even/odd split every layer and reverses its MADE order every two layers (thesis 6.2.3); batch
    norm sits after every layer, on the data side of the next one and before the base."""
    from tfflows.models.bijectors import AffineCoupling, BatchNormalization, HybridAutoregressive, MaskedAutoregressiveFlow

    maf = build_flow("maf", 4, num_layers=3, hidden_units=[4])
    mades = [layer.made for layer in maf.flow_layers if isinstance(layer, MaskedAutoregressiveFlow)]
    for k, made in enumerate(mades):
        np.testing.assert_array_equal(made.degrees_in, [1, 2, 3, 4] if k % 2 == 0 else [4, 3, 2, 1])
    assert [type(layer).__name__ for layer in maf.flow_layers] == ["MaskedAutoregressiveFlow", "BatchNormalization"] * 3

    nvp = build_flow("realnvp", 5, num_layers=2, hidden_units=[4], batch_norm=False)
    first, second = nvp.flow_layers
    np.testing.assert_array_equal(first.conditioning, [0, 1])
    np.testing.assert_array_equal(second.conditioning, [2, 3, 4])
    assert isinstance(first, AffineCoupling)

    haf = build_flow("haf", 6, num_layers=4, hidden_units=[6])
    hybrids = [layer for layer in haf.flow_layers if isinstance(layer, HybridAutoregressive)]
    expected_made = [[0, 2, 4], [1, 3, 5], [0, 2, 4], [1, 3, 5]]
    expected_order = [[1, 2, 3], [1, 2, 3], [3, 2, 1], [3, 2, 1]]
    for layer, made_idx, order in zip(hybrids, expected_made, expected_order):
        np.testing.assert_array_equal(layer.made_indices, made_idx)
        np.testing.assert_array_equal(layer.made.degrees_in, order)
    assert sum(isinstance(layer, BatchNormalization) for layer in haf.flow_layers) == 4


@pytest.mark.parametrize("name", ["maf", "iaf", "haf"])
def test_xla_fast_paths_equal_the_plain_graph(name):
    """Eager sample/log_prob use XLA-compiled loops by default; inside tf.function the plain graph."""
    model = flow(name, 5)
    x = tf.constant(np.random.default_rng(3).normal(size=(7, 5)))
    plain_log_prob = tf.function(lambda v: model.log_prob(v))(x)
    np.testing.assert_allclose(model.log_prob(x), plain_log_prob, atol=1e-9)
    seed = tf.constant([4, 0])
    plain_samples = tf.function(lambda: model.sample(6, seed=seed))()
    np.testing.assert_allclose(model.sample(6, seed=seed), plain_samples, atol=1e-9)


@pytest.mark.parametrize("name", ["maf", "maf_mog", "gated_iaf", "haf", "realnvp"])
def test_frozen_copy_bakes_the_masks_and_keeps_the_density(name):
    """`frozen()` multiplies each mask into its kernel once: same log_prob and samples, zero
    weights exactly where the masks are zero, no trainable weights, and the original untouched
    (its masked entries were perturbed away from zero, so a shared or unmasked kernel would show)."""
    model = flow(name, 5, batch_norm=True, seed=4)
    before = [v.numpy() for v in model.variables]
    frozen = model.frozen()
    x = tf.constant(np.random.default_rng(5).normal(size=(9, 5)))
    np.testing.assert_allclose(frozen.log_prob(x), model.log_prob(x), rtol=1e-12, atol=1e-12)
    seed = tf.constant([6, 0])
    np.testing.assert_allclose(frozen.sample(7, seed=seed), model.sample(7, seed=seed), atol=1e-12)
    baked = [m for m in frozen.submodules if isinstance(m, MaskedDense)]
    assert len(baked) == (0 if name == "realnvp" else len([m for m in model.submodules if isinstance(m, MaskedDense)]))
    for layer in baked:
        assert layer.mask_baked and np.all(layer.kernel.numpy()[layer.mask_value == 0] == 0)
    assert frozen.trainable_variables == []
    for value, v in zip(before, model.variables):
        np.testing.assert_array_equal(value, v.numpy())
    model.variables[0].assign_add(tf.ones_like(model.variables[0]))  # the copy owns its weights
    np.testing.assert_allclose(frozen.log_prob(x), flow(name, 5, batch_norm=True, seed=4).log_prob(x), atol=1e-12)


@pytest.mark.parametrize("kind", ["maf", "realnvp", "haf", "iaf"])
def test_outliers_get_finite_very_low_log_densities(kind):
    """Anomaly scoring: rows far from the data must score far below it, never NaN or -inf."""
    rng = np.random.default_rng(0)
    data = (rng.normal(size=(600, 2)) * [1.0, 0.3]).astype("float32")
    model = build_flow(kind, 2, num_layers=5, hidden_units=[32])
    model.compile(optimizer=tf_keras.optimizers.Adam(3e-3))
    model.fit(data, batch_size=100, epochs=8, verbose=0)
    far = np.array([[3.0, -3.0], [-10.0, 10.0], [100.0, -100.0], [1e4, 1e4]], "float32")
    scores = model.log_prob(far).numpy()
    assert np.all(np.isfinite(scores)), scores
    assert np.max(scores[1:]) < np.min(model.log_prob(data).numpy()), "outliers must score below every row"
    perturb(model, seed=1, scale=2.0)  # large weights: the regime where unbounded scales overflow
    assert np.all(np.isfinite(model.log_prob(far).numpy()))


def test_nice_is_additive_couplings_on_alternating_parity_then_a_diagonal_scaling():
    """NICE (Dinh et al. 2015): the couplings preserve volume, so the flow's log-det is the final
    scaling's sum of log-scales, whatever x is; the split alternates even/odd positions."""
    from tfflows.models.bijectors import Coupling, DiagonalScaling

    model = flow("nice", 4)
    assert [type(layer).__name__ for layer in model.flow_layers] == ["Coupling"] * 4 + ["DiagonalScaling"]
    for k, layer in enumerate(model.flow_layers[:4]):
        assert isinstance(layer, Coupling)
        np.testing.assert_array_equal(layer.conditioning, [0, 2] if k % 2 == 0 else [1, 3])
    x = tf.constant(np.random.default_rng(0).normal(size=(6, 4)) * 3.0)
    _, log_det = model.inverse_and_log_det(x)
    scaling = model.flow_layers[-1]
    assert isinstance(scaling, DiagonalScaling)
    np.testing.assert_allclose(log_det, np.full(6, scaling.log_scale.numpy().sum()), atol=1e-12)
    assert not model.config.batch_norm


def test_lu_layers_sit_between_layers():
    model = build_flow("realnvp", 3, num_layers=3, hidden_units=[4], batch_norm=False, permutation="lu")
    assert [type(layer).__name__ for layer in model.flow_layers] == [
        "AffineCoupling", "LULinear", "AffineCoupling", "LULinear", "AffineCoupling"]


@pytest.mark.parametrize("kind,options", [
    ("maf", dict(transformer="spline", num_bins=3, permutation="lu", order="random")),
    ("haf", dict(coupling_hidden_units=[5], transformer="spline")),
    ("iaf", dict(gated=True)),
    ("nice", {}),
])
def test_get_config_rebuilds_the_same_flow(kind, options):
    """`get_config()` is one flat dict (what the train component writes to flow_config.json)."""
    model = build_flow(kind, 4, num_layers=2, hidden_units=[6], dtype="float64", **options)
    perturb(model, seed=1)
    config = model.get_config()
    fresh = build_flow(config.pop("kind"), config.pop("event_dim"), **config)
    for target, source in zip(fresh.variables, model.variables, strict=True):
        target.assign(source)
    x = tf.constant(np.random.default_rng(0).normal(size=(3, 4)))
    np.testing.assert_array_equal(fresh.log_prob(x), model.log_prob(x))


def test_options_of_another_kind_are_refused_with_their_owner():
    with pytest.raises(ValueError, match=r"\['gated'\] belong to kind\(s\) \{'gated': \['iaf'\]\}, not to 'maf'"):
        build_flow("maf", 2, gated=True)


def test_a_new_kind_is_one_registered_builder():
    """A kind registered from outside the library builds, samples and is listed, with its own option."""
    import dataclasses

    from tfflows.models import FLOW_KINDS, flow_option_names, register_kind
    from tfflows.models.base_densities import StandardNormal
    from tfflows.models.bijectors import DiagonalScaling
    from tfflows.models.builders import stack_layers
    from tfflows.models.kinds import _REGISTRY

    @dataclasses.dataclass
    class ScaleOptions:
        start: float = 0.0

    def build(config):
        def layer(k):
            scaling = DiagonalScaling(config.event_dim, name=f"scale_{k}", dtype=config.dtype)
            scaling.log_scale.assign(tf.fill([config.event_dim], tf.constant(config.options.start, config.dtype)))
            return scaling
        return stack_layers(config, layer), StandardNormal(config.event_dim)

    register_kind("scales", ScaleOptions, batch_norm=False, build=build)
    try:
        assert "scales" in FLOW_KINDS and "start" in flow_option_names("scales")
        model = build_flow("scales", 2, num_layers=3, start=0.5, dtype="float64")
        np.testing.assert_allclose(model.log_prob(tf.zeros([1, 2], tf.float64)), [3.0 - np.log(2 * np.pi)], atol=1e-12)
    finally:
        del _REGISTRY["scales"]


def test_kind_registry_and_options_import_without_tensorflow():
    """The CLI validates configurations before TensorFlow is imported (issue 16)."""
    import subprocess
    import sys

    code = ("import sys; from tfflows.models.kinds import FLOW_KINDS, flow_option_names; "
            "assert 'nice' in FLOW_KINDS and 'tail_bound' in flow_option_names('realnvp'); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
