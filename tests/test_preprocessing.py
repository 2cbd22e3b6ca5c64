"""`Preprocessing`: round trips, log-det against the autodiff Jacobian, JSON, statistics, old folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from tfflows.components.transform import PREPROCESSING_FILE, Preprocessing, read_preprocessing
from tfflows.components.transform.preprocessing import Moments

RNG = np.random.RandomState(0)
LOGIT = Preprocessing.logit(event_dim=5, num_levels=256, logit_lambda=1e-6)
STANDARDIZE = Preprocessing.standardize(mean=RNG.normal(size=5) * 10, std=RNG.uniform(0.1, 5.0, size=5))
IDENTITY = Preprocessing.identity(5)
ALL = [LOGIT, STANDARDIZE, IDENTITY]


def _raw_rows(prep: Preprocessing, n: int = 4) -> np.ndarray:
    if prep.method == "logit":  # dequantised levels in [0, L), the ends included
        return np.concatenate([[[0.0] * 5, [255.999] * 5], RNG.uniform(0, 256, size=(n, 5))])
    return RNG.normal(size=(n, 5)) * 7.0


@pytest.mark.parametrize("prep", ALL, ids=lambda p: p.method)
def test_round_trips_both_ways_float64(prep):
    x = _raw_rows(prep)
    z, log_det = prep.forward(x)
    assert z.dtype == tf.float64 and z.shape == x.shape and log_det.shape == (len(x),)
    np.testing.assert_allclose(prep.inverse(z).numpy(), x, rtol=1e-9, atol=1e-9)
    z_back = prep.forward(prep.inverse(z))[0].numpy()
    np.testing.assert_allclose(z_back, z.numpy(), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("prep", ALL, ids=lambda p: p.method)
def test_float32_in_float32_out(prep):
    x = _raw_rows(prep).astype(np.float32)
    z, log_det = prep.forward(tf.constant(x))
    assert z.dtype == tf.float32 and log_det.dtype == tf.float32
    assert prep.inverse(z).dtype == tf.float32
    np.testing.assert_allclose(prep.inverse(z).numpy(), x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prep", ALL, ids=lambda p: p.method)
def test_log_det_equals_autodiff_log_abs_det_jacobian(prep):
    x = tf.constant(_raw_rows(prep), tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(x)
        z, log_det = prep.forward(x)
    jacobian = tape.batch_jacobian(z, x).numpy()
    sign, expected = np.linalg.slogdet(jacobian)
    assert np.all(sign != 0)
    np.testing.assert_allclose(log_det.numpy(), expected, rtol=1e-10, atol=1e-9)
    np.testing.assert_array_equal(prep.forward_log_det_jacobian(x).numpy(), log_det.numpy())


def test_logit_matches_the_paper_formula():
    lam, levels = 0.05, 256
    prep = Preprocessing.logit(3, levels, lam)
    x = np.array([[0.0, 128.0, 255.5]])
    y = lam + (1 - 2 * lam) * x / levels
    z, log_det = prep.forward(x)
    np.testing.assert_allclose(z.numpy(), np.log(y / (1 - y)), rtol=1e-12)
    # MAF paper, appendix E.2, eq. 15: dz/dx = (1 - 2 lam) / (L y (1 - y)) per dimension
    np.testing.assert_allclose(log_det.numpy(), np.log((1 - 2 * lam) / (levels * y * (1 - y))).sum(-1), rtol=1e-12)
    assert prep.forward([[128.0, 128.0, 128.0]])[0].numpy() == pytest.approx(np.zeros((1, 3)), abs=1e-12)


@pytest.mark.parametrize("prep", ALL, ids=lambda p: p.method)
def test_json_round_trip_is_exact(prep):
    back = Preprocessing.from_json(prep.to_json())
    assert back == prep
    x = _raw_rows(prep)
    np.testing.assert_array_equal(back.forward(x)[0].numpy(), prep.forward(x)[0].numpy())


def test_invalid_constants_are_refused():
    with pytest.raises(ValueError, match="`method` must be one of"):
        Preprocessing("scale", 2)
    with pytest.raises(ValueError, match="`std` must be finite and > 0"):
        Preprocessing.standardize([0.0, 1.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="`mean` must hold event_dim = 3"):
        Preprocessing("standardize", 3, mean=[0.0], std=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="`logit_lambda` must be in"):
        Preprocessing.logit(2, 256, 0.5)
    with pytest.raises(ValueError, match="`num_levels` must be an int >= 2"):
        Preprocessing.logit(2, None, 1e-6)
    with pytest.raises(ValueError, match="belong to the logit only"):
        Preprocessing("identity", 2, num_levels=256)


def test_moments_merged_in_pieces_equal_the_whole():
    rows = RNG.normal(size=(101, 3)) * [1e-3, 1.0, 1e4] + [5.0, -2.0, 1e6]
    merged = Moments.empty(3)
    for piece in (rows[:1], rows[1:40], rows[40:40], rows[40:]):
        merged = merged.merge(Moments.of(piece) if len(piece) else Moments.empty(3))
    assert merged.count == 101
    np.testing.assert_allclose(merged.mean, rows.mean(0), rtol=1e-14)
    np.testing.assert_allclose(merged.std, rows.std(0), rtol=1e-12)


def test_old_transform_folders(tmp_path):
    """Folders written before the constants were recorded: a logit or identity loads (its
    constants were there); a standardisation is refused with the fix (run transform again)."""
    old = {"method": "logit", "logit_lambda": 1e-6, "num_levels": 17, "event_dim": 64,
           "analyze_splits": ["train"], "feature_names": [], "dataset_fingerprint": "f", "min_std": 1e-12}
    (tmp_path / PREPROCESSING_FILE).write_text(json.dumps(old))
    assert read_preprocessing(str(tmp_path)) == Preprocessing.logit(64, 17, 1e-6)
    (tmp_path / PREPROCESSING_FILE).write_text(json.dumps(dict(old, method="identity")))
    assert read_preprocessing(str(tmp_path)) == Preprocessing.identity(64)
    (tmp_path / PREPROCESSING_FILE).write_text(json.dumps(dict(old, method="standardize")))
    with pytest.raises(ValueError, match="`mean` and `std` are missing.*run the transform component again"):
        read_preprocessing(str(tmp_path))
