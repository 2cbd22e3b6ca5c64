"""Transform: tf.Transform graph (logit / standardise), dequantisation, conversions."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import tensorflow as tf

from tfflows.components.config import IngestConfig, TransformConfig
from tfflows.components.errors import DataError
from tfflows.components.ingest import load_split, run_ingest
from tfflows.components.ingest.loaders import default_mnist_dir, read_idx
from tfflows.components.transform import (Preprocessing, apply_transform, benchmark_transform_config,
                                          conversions, dequantize, load_transform, read_preprocessing,
                                          run_transform)


@pytest.fixture(scope="module")
def digits_graph(tmp_path_factory):
    root = tmp_path_factory.mktemp("tdigits")
    run_ingest(IngestConfig("digits", max_examples=300), str(root / "examples"))
    resolved = run_transform(str(root / "examples"), TransformConfig(), str(root / "graph"))
    return str(root / "examples"), str(root / "graph"), resolved


@pytest.fixture(scope="module")
def continuous(tmp_path_factory):
    root = tmp_path_factory.mktemp("tcont")
    rng = np.random.RandomState(0)
    x = rng.normal(size=(200, 3)) * [0.5, 2.0, 10.0] + [1.0, -3.0, 100.0]
    np.save(root / "x.npy", x)
    run_ingest(IngestConfig("npy", path=str(root / "x.npy"), shuffle=False), str(root / "ex"))
    graphs = {}
    for splits in (("train",), ("train", "eval")):
        out = str(root / ("graph_" + "_".join(splits)))
        run_transform(str(root / "ex"), TransformConfig(analyze_splits=splits), out)
        graphs[splits] = out
    return x, str(root / "ex"), graphs


def test_logit_graph_matches_formula(digits_graph):
    examples, graph, resolved = digits_graph
    assert resolved["method"] == "logit" and resolved["logit_lambda"] == 1e-6
    assert resolved["num_levels"] == 17
    assert set(os.listdir(graph)) >= {"transform_fn", "transformed_metadata", "preprocessing.json"}
    x = (load_split(examples, "eval") + np.random.RandomState(0).uniform(size=(1, 64))).astype(
        np.float32)
    z, log_det = apply_transform(graph, x)
    lam = 1e-6
    y = lam + (1 - 2 * lam) * x.astype(np.float64) / 17
    np.testing.assert_allclose(z.numpy(), np.log(y) - np.log1p(-y), rtol=1e-5, atol=1e-5)
    expected = (np.log(1 - 2 * lam) - np.log(17) - np.log(y) - np.log1p(-y)).sum(-1)
    np.testing.assert_allclose(log_det.numpy(), expected, rtol=1e-5, atol=2e-4)
    assert z.dtype == tf.float32 and log_det.shape == (len(x),)
    # The JSON's constants are the graph's: Preprocessing.forward computes what the graph does.
    assert read_preprocessing(graph) == Preprocessing.logit(64, 17, 1e-6)
    z_json, log_det_json = read_preprocessing(graph).forward(x)
    np.testing.assert_allclose(z_json.numpy(), z.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(log_det_json.numpy(), log_det.numpy(), rtol=1e-6)


def test_standardisation_constants(continuous):
    x, examples, graphs = continuous
    train, evals = x[:162], x[162:180]  # unshuffled npy: tail splits 20 test, 18 eval
    for splits, stats_rows in ((("train",), train),
                               (("train", "eval"), np.concatenate([train, evals]))):
        z, log_det = apply_transform(graphs[splits], x.astype(np.float32))
        mean, std = stats_rows.mean(0), stats_rows.std(0)
        np.testing.assert_allclose(z.numpy(), (x - mean) / std, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(log_det.numpy(), -np.log(std).sum(), rtol=1e-5)
        # preprocessing.json holds the float64 constants the graph uses (one Beam combine over
        # the float32 examples).
        prep = read_preprocessing(graphs[splits])
        stored = stats_rows.astype(np.float32).astype(np.float64)
        np.testing.assert_allclose(prep.mean, stored.mean(0), rtol=1e-12)
        np.testing.assert_allclose(prep.std, stored.std(0), rtol=1e-12)
        z_json, log_det_json = prep.forward(x.astype(np.float32))
        np.testing.assert_allclose(z_json.numpy(), z.numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(log_det_json.numpy(), log_det.numpy(), rtol=1e-6)
        x_back = prep.inverse(z.numpy().astype(np.float64)).numpy()
        np.testing.assert_allclose(x_back, x, rtol=1e-5, atol=1e-5)
    z1 = apply_transform(graphs[("train",)], x[:3].astype(np.float32))[0].numpy()
    z2 = apply_transform(graphs[("train", "eval")], x[:3].astype(np.float32))[0].numpy()
    assert not np.allclose(z1, z2, atol=1e-4)  # the analysed splits matter


def test_transform_in_tf_data_map(continuous):
    x, _, graphs = continuous
    transform = load_transform(graphs[("train",)])
    ds = tf.data.Dataset.from_tensor_slices(x.astype(np.float32)).batch(50).map(
        lambda b: transform(b))
    zs = np.concatenate([z.numpy() for z, _ in ds])
    np.testing.assert_allclose(zs, transform(tf.constant(x, tf.float32))[0].numpy(), atol=1e-6)


def test_constant_column_is_refused(tmp_path):
    x = np.random.RandomState(0).normal(size=(60, 3))
    x[:, 1] = 4.0
    np.save(tmp_path / "c.npy", x)
    run_ingest(IngestConfig("npy", path=str(tmp_path / "c.npy")), str(tmp_path / "ex"))
    with pytest.raises(DataError, match=r"column 1 \(x1\): standard deviation over train"):
        run_transform(str(tmp_path / "ex"), TransformConfig(), str(tmp_path / "graph"))
    assert not os.path.exists(tmp_path / "graph")
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]


def test_benchmark_transform_configs():
    assert benchmark_transform_config("power").analyze_splits == ("train", "eval")
    assert benchmark_transform_config("hepmass").analyze_splits == ("train",)
    assert benchmark_transform_config("cifar10").logit_lambda == 0.05
    assert benchmark_transform_config("bsds300").method == "identity"
    with pytest.raises(ValueError, match="analyze_splits"):
        TransformConfig(analyze_splits=("validation",))
    config = TransformConfig(logit_lambda=0.05, analyze_splits=["train", "eval"])
    assert TransformConfig.from_json(config.to_json()) == config


# --------------------------------------------------------------------------- dequantize


def test_dequantize_range_seeds_and_generator():
    x = tf.constant(np.random.RandomState(0).randint(0, 256, size=(64, 10)), tf.float32)
    a = dequantize(x, 256, 3)
    noise = (a - x).numpy()
    assert noise.min() >= 0 and noise.max() < 1 and 0.4 < noise.mean() < 0.6
    np.testing.assert_array_equal(a.numpy(), dequantize(x, 256, 3).numpy())
    assert not np.array_equal(a.numpy(), dequantize(x, 256, 4).numpy())
    gen = tf.random.Generator.from_seed(1)
    ds = tf.data.Dataset.from_tensors(x).map(lambda b: dequantize(b, 256, gen))
    epoch1, epoch2 = next(iter(ds)).numpy(), next(iter(ds)).numpy()
    assert not np.array_equal(epoch1, epoch2)  # fresh noise every epoch
    assert dequantize(x[0], 256, 3).shape == (10,)
    with pytest.raises(ValueError, match="num_levels"):
        dequantize(x, 1, 3)


def test_dequantize_flip():
    images = np.arange(2 * 2 * 3 * 3, dtype=np.float32).reshape(2, 2, 3, 3)  # H=2, W=3, C=3
    flat = tf.constant(images.reshape(2, -1))
    out = dequantize(flat, 256, 0, flip=True, image_shape=[2, 3, 3]).numpy().reshape(images.shape)
    floored = np.floor(out)
    flipped = 0
    for i in range(2):
        if np.array_equal(floored[i], images[i, :, ::-1]):
            flipped += 1
        else:
            np.testing.assert_array_equal(floored[i], images[i])
    outs = [dequantize(flat, 256, s, flip=True, image_shape=[2, 3, 3]).numpy() for s in range(8)]
    kinds = {tuple(np.floor(o[0]).astype(int)[:3]) for o in outs}
    assert len(kinds) == 2  # both flipped and unflipped occur
    with pytest.raises(ValueError, match="image_shape"):
        dequantize(flat, 256, 0, flip=True)


# --------------------------------------------------------------------------- conversions


def test_bits_per_dim_matches_published_formula():
    rng = np.random.RandomState(0)
    lam, d = 1e-6, 5
    x = rng.randint(0, 256, size=(3, d)) + rng.uniform(size=(3, d))
    z, log_det = (t.numpy() for t in Preprocessing.logit(d, 256, lam).forward(x))
    z = np.log(lam + (1 - 2 * lam) * x / 256) - np.log1p(-(lam + (1 - 2 * lam) * x / 256))
    ll_logit = np.array([-12.3, -4.0, 7.5])
    sig = 1 / (1 + np.exp(-z))
    published = -(ll_logit + d * np.log(1 - 2 * lam) - np.log(sig * (1 - sig)).sum(-1)) / (
        d * np.log(2)) + 8
    np.testing.assert_allclose(conversions.bits_per_dim_from_logit(ll_logit, z, 256, lam),
                               published, rtol=1e-10)
    log_px = conversions.data_log_prob(ll_logit, log_det)
    np.testing.assert_allclose(conversions.bits_per_dim(log_px, d), published, rtol=1e-6)
    # density on [0, 1)^D: u = x / 256 has log p_u = log p_x + D log 256
    np.testing.assert_allclose(conversions.bits_per_dim_unit_interval(
        log_px + d * math.log(256), d, 256), published, rtol=1e-6)
    # hand value: D = 1, lam = 0, x = 128 (z = 0, sigma = 1/2), log p_z = 0:
    # bpd = 0 - 0 + 8 + log2(1/4) = 6
    assert conversions.bits_per_dim_from_logit([0.0], [[0.0]], 256, 0.0)[0] == pytest.approx(6.0)


def test_mnist_published_bits_per_pixel_from_log_likelihoods():
    """Table 2 -> Table 5 of the MAF paper on the real MNIST test images (eq. 17)."""
    path = default_mnist_dir() / "t10k-images-idx3-ubyte.gz"
    if not path.exists():
        pytest.skip(f"{path} not available")
    x = read_idx(str(path)).reshape(10000, 784).astype(np.float64)  # the whole test set
    x = x + np.random.RandomState(0).uniform(size=x.shape)
    lam = 1e-6
    y = lam + (1 - 2 * lam) * x / 256
    z = np.log(y) - np.log1p(-y)
    # Gaussian, MADE, MADE MoG, MAF (5): Table 2 log-likelihoods -> Table 5 bits per pixel
    for ll, bpp in ((-1366.9, 2.01), (-1380.8, 2.04), (-1038.5, 1.41), (-1300.5, 1.89)):
        got = conversions.bits_per_dim_from_logit(np.full(len(z), ll), z, 256, lam).mean()
        assert got == pytest.approx(bpp, abs=0.006)


def test_mean_and_two_standard_errors():
    values = np.array([1.0, 2.0, 3.0, 4.0])
    mean, err = conversions.mean_and_two_se(values)
    assert mean == 2.5 and err == pytest.approx(2 * np.sqrt(1.25) / 2)
    with pytest.raises(ValueError, match="empty"):
        conversions.mean_and_two_se([])
    with pytest.raises(ValueError, match="event_dim"):
        conversions.bits_per_dim([1.0], 0)
