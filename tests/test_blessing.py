"""Blessing means "good" (issue 18.3): a model is blessed only if it beats the closed-form
reference of its kind on the same points (the full-covariance Gaussian of the train split for a
flow fitted to data), and is not worse than the pushed model by more than the tolerance; an
unstable training's model is not blessed and not pushed."""

from __future__ import annotations

import os

import numpy as np
import pytest
from scipy import stats

from tfflows.components.evaluate import EvaluateConfig, read_blessing, run_evaluate
from tfflows.components.objectives.scoring import factorised_log_prob, gaussian_log_prob
from tfflows.components.ingest import load_split
from tfflows.components.push import PushConfig, run_push
from tfflows.components.train import TrainConfig, run_train
from tfflows.components.transform import apply_transform


@pytest.fixture(scope="module")
def moons(tmp_path_factory, moons_400_good):
    """The examples, transform and "good" model are conftest's (shared with test_evaluate.py)."""
    return {**moons_400_good, "root": tmp_path_factory.mktemp("blessing")}


def test_gaussian_reference_is_the_maximum_likelihood_fit():
    rng = np.random.RandomState(0)
    train = rng.normal(size=(500, 3)) @ rng.normal(size=(3, 3)) + rng.normal(size=3)
    points = rng.normal(size=(7, 3)) * 3
    cov = np.cov(train.T, bias=True) + 1e-6 * np.eye(3)  # maximum likelihood: 1/n, not 1/(n-1)
    expected = stats.multivariate_normal(train.mean(axis=0), cov).logpdf(points)
    np.testing.assert_allclose(gaussian_log_prob(train, points), expected, rtol=1e-10)
    # the fit maximises the train log-likelihood: moving the mean or scaling the covariance lowers it
    best = gaussian_log_prob(train, train).mean()
    assert stats.multivariate_normal(train.mean(axis=0) + 0.05, cov).logpdf(train).mean() < best
    assert stats.multivariate_normal(train.mean(axis=0), cov * 1.1).logpdf(train).mean() < best


def test_factorised_reference_of_vaes_is_closed_form():
    rng = np.random.RandomState(1)
    binary = (rng.uniform(size=(50, 4)) < [0.1, 0.5, 0.9, 0.0]).astype(np.float64)
    p = (binary.sum(axis=0) + 1) / (len(binary) + 2)  # Laplace: never exactly 0 or 1
    np.testing.assert_allclose(factorised_log_prob(binary, binary[:5], True),
                               stats.bernoulli(p).logpmf(binary[:5]).sum(axis=1), rtol=1e-12)
    x = rng.normal(size=(60, 3)) * [1.0, 2.0, 0.5]
    expected = stats.norm(x.mean(axis=0), np.sqrt(x.var(axis=0) + 1e-6)).logpdf(x[:5]).sum(axis=1)
    np.testing.assert_allclose(factorised_log_prob(x, x[:5], False), expected, rtol=1e-12)


def test_a_good_flow_beats_the_gaussian_and_is_blessed(moons, tmp_path):
    result = run_evaluate(moons["examples"], moons["transform"], moons["good"], EvaluateConfig(),
                          str(tmp_path / "eval"))
    reference = result["reference"]
    assert result["blessed"] and read_blessing(str(tmp_path / "eval"))
    assert "Gaussian" in reference["name"] and reference["margin"] > 0
    # the reference scored by hand: the Gaussian of the transformed train split on the test split
    z_train, _ = apply_transform(moons["transform"], load_split(moons["examples"], "train"))
    z_test, log_det = apply_transform(moons["transform"], load_split(moons["examples"], "test"))
    by_hand = (gaussian_log_prob(z_train.numpy(), z_test.numpy()) + log_det.numpy()).mean()
    np.testing.assert_allclose(reference["metrics"]["data_log_likelihood"], by_hand, rtol=1e-6)
    np.testing.assert_allclose(reference["margin"], result["metrics"]["data_log_likelihood"] - by_hand,
                               rtol=1e-6)
    assert result["metrics"]["reference_margin"] == reference["margin"]
    assert f"margin {reference['margin']:+.4f} nats" in result["reason"]


def test_unstable_training_is_worse_than_the_gaussian_not_blessed_not_pushed(moons, tmp_path):
    """The issue's `--set train.learning_rate=1.0`: finite, but worse than a Gaussian fit."""
    model = str(tmp_path / "unstable")
    config = TrainConfig(kind="maf", num_layers=2, hidden_units=(16,), batch_size=50, learning_rate=1.0,
                         epochs=3, max_steps_per_epoch=4, seed=3)
    assert run_train(moons["examples"], moons["transform"], model, config).status == "ok"
    blessing = str(tmp_path / "blessing")
    result = run_evaluate(moons["examples"], moons["transform"], model, EvaluateConfig(), blessing)
    assert np.isfinite(result["metrics"]["data_log_likelihood"])
    assert not result["blessed"] and result["reference"]["margin"] < 0
    assert result["reason"].startswith("not blessed") and "no better than its reference" in result["reason"]
    assert os.path.exists(os.path.join(blessing, "NOT_BLESSED"))
    # a tolerance towards the pushed model does not excuse losing to the reference
    tolerant = run_evaluate(moons["examples"], moons["transform"], model, EvaluateConfig(tolerance=100.0),
                            str(tmp_path / "tolerant"), baseline_model_uri=moons["good"])
    assert not tolerant["blessed"]
    # a smoke run of the plumbing may waive the reference explicitly, by a stated number of nats
    waived = run_evaluate(moons["examples"], moons["transform"], model,
                          EvaluateConfig(reference_tolerance=0.01 - result["reference"]["margin"]),
                          str(tmp_path / "waived"))
    assert waived["blessed"] and "reference tolerance" in waived["reason"]
    pushed = run_push(model, moons["transform"], moons["examples"], blessing,
                      PushConfig(push_base=str(tmp_path / "out")))
    assert not pushed["pushed"] and not os.path.exists(tmp_path / "out" / "serving" / "1")
