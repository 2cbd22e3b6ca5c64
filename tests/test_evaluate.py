"""Evaluate component: test log-likelihood ± 2 s.e., bits/dim, NaN guard, baseline blessing."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tfflows.components.config import IngestConfig, TransformConfig
from tfflows.components.evaluate import EvaluateConfig, read_blessing, run_evaluate
from tfflows.components.flow_artifact import load_flow, save_flow
from tfflows.components.ingest import load_split, read_metadata, run_ingest
from tfflows.components.transform import load_transform, run_transform
from tests.artifact_testing import train_flow_artifact


@pytest.fixture(scope="module")
def moons(tmp_path_factory):
    root = tmp_path_factory.mktemp("moons")
    ex, tg = str(root / "examples"), str(root / "transform")
    run_ingest(IngestConfig("moons", num_samples=400, seed=1), ex)
    run_transform(ex, TransformConfig(), tg)
    good = train_flow_artifact(ex, tg, str(root / "good"), epochs=20)
    untrained = train_flow_artifact(ex, tg, str(root / "untrained"), epochs=0)
    nan_model = load_flow(untrained)
    var = nan_model.trainable_variables[0]
    var.assign(tf.fill(var.shape, float("nan")))
    save_flow(nan_model, str(root / "nan"))
    return {"examples": ex, "transform": tg, "good": good, "untrained": untrained,
            "nan": str(root / "nan"), "root": root}


def test_metrics_and_blessing_file_without_baseline(moons, tmp_path):
    out = str(tmp_path / "eval")
    result = run_evaluate(moons["examples"], moons["transform"], moons["good"],
                          EvaluateConfig(), out)
    assert result["blessed"] and read_blessing(out)
    assert os.path.exists(os.path.join(out, "BLESSED"))
    assert not os.path.exists(os.path.join(out, "NOT_BLESSED"))
    with open(os.path.join(out, "evaluation.json")) as f:
        assert json.load(f) == json.loads(json.dumps(result))
    # Recompute by hand: data space = model space + log_det, mean ± 2 s.e. (ddof=0).
    x = load_split(moons["examples"], "test")
    z, log_det = load_transform(moons["transform"])(tf.constant(x))
    ll = load_flow(moons["good"]).log_prob(z).numpy().astype(np.float64)
    m = result["metrics"]
    np.testing.assert_allclose(m["model_log_likelihood"], ll.mean(), rtol=1e-6)
    np.testing.assert_allclose(m["model_log_likelihood_2se"], 2 * ll.std() / np.sqrt(len(ll)),
                               rtol=1e-6)
    np.testing.assert_allclose(m["data_log_likelihood"], (ll + log_det.numpy()).mean(),
                               rtol=1e-5)
    assert result["num_examples"] == len(x) and "bits_per_dim" not in m


def test_nan_weights_not_blessed(moons, tmp_path):
    out = str(tmp_path / "eval")
    result = run_evaluate(moons["examples"], moons["transform"], moons["nan"],
                          EvaluateConfig(), out)
    assert not result["blessed"] and not read_blessing(out)
    assert os.path.exists(os.path.join(out, "NOT_BLESSED"))
    assert "non-finite" in result["reason"]


def test_worse_than_baseline_not_blessed_and_tolerance(moons, tmp_path):
    worse = run_evaluate(moons["examples"], moons["transform"], moons["untrained"],
                         EvaluateConfig(), str(tmp_path / "a"),
                         baseline_model_uri=moons["good"])
    assert not worse["blessed"] and "baseline" in worse["reason"]
    gap = (worse["baseline_metrics"]["data_log_likelihood"]
           - worse["metrics"]["data_log_likelihood"])
    assert gap > 0
    tolerant = run_evaluate(moons["examples"], moons["transform"], moons["untrained"],
                            EvaluateConfig(tolerance=gap + 0.01), str(tmp_path / "b"),
                            baseline_model_uri=moons["good"])
    assert tolerant["blessed"]
    better = run_evaluate(moons["examples"], moons["transform"], moons["good"],
                          EvaluateConfig(), str(tmp_path / "c"),
                          baseline_model_uri=moons["untrained"])
    assert better["blessed"] and read_blessing(str(tmp_path / "c"))
    # Demanding more improvement than achieved (negative tolerance) refuses the blessing.
    strict = run_evaluate(moons["examples"], moons["transform"], moons["good"],
                          EvaluateConfig(tolerance=-(gap + 1.0)), str(tmp_path / "d"),
                          baseline_model_uri=moons["untrained"])
    assert not strict["blessed"]


def test_metrics_logged_to_mlflow(moons, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_evaluate(moons["examples"], moons["transform"], moons["good"],
                          EvaluateConfig(tracking_uri=uri), str(tmp_path / "eval"))
    run = MlflowClient(tracking_uri=uri).get_run(result["mlflow_run_id"])
    np.testing.assert_allclose(run.data.metrics["test_data_log_likelihood"],
                               result["metrics"]["data_log_likelihood"], rtol=1e-6)
    assert run.data.metrics["blessed"] == 1.0


def test_discrete_digits_bits_per_dim_reproducible(tmp_path):
    ex, tg = str(tmp_path / "examples"), str(tmp_path / "transform")
    run_ingest(IngestConfig("digits", max_examples=300, seed=2), ex)
    run_transform(ex, TransformConfig(), tg)
    meta = read_metadata(ex)
    model = train_flow_artifact(ex, tg, str(tmp_path / "model"), epochs=2, discrete_levels=meta.num_levels)
    a = run_evaluate(ex, tg, model, EvaluateConfig(dequantization_seed=5), str(tmp_path / "a"))
    b = run_evaluate(ex, tg, model, EvaluateConfig(dequantization_seed=5), str(tmp_path / "b"))
    c = run_evaluate(ex, tg, model, EvaluateConfig(dequantization_seed=6), str(tmp_path / "c"))
    assert a["metrics"] == b["metrics"] and a["metrics"] != c["metrics"]
    assert a["dequantization_seed"] == 5 and a["discrete"]
    m = a["metrics"]
    np.testing.assert_allclose(m["bits_per_dim"],
                               -m["data_log_likelihood"] / (meta.event_dim * np.log(2)),
                               rtol=1e-6)
    assert np.isfinite(m["bits_per_dim"]) and m["bits_per_dim_2se"] >= 0


def test_non_finite_log_likelihood_is_a_problem():
    from tfflows.components.evaluate.executor import _finite_problem

    assert _finite_problem(np.array([-1.0, -2.0]), [], "m") is None
    assert "1 of 3" in _finite_problem(np.array([-1.0, np.inf, -2.0]), [], "m")
    assert "1 of 2" in _finite_problem(np.array([np.nan, -2.0]), [], "m")
    assert "weights" in _finite_problem(np.array([-1.0]), ["w:0"], "m")


def test_separate_blessing_folder(moons, tmp_path):
    result = run_evaluate(moons["examples"], moons["transform"], moons["good"],
                          EvaluateConfig(), str(tmp_path / "eval"),
                          blessing_uri=str(tmp_path / "blessing"))
    assert read_blessing(str(tmp_path / "blessing"))
    assert not os.path.exists(tmp_path / "eval" / "BLESSED")
    with open(tmp_path / "blessing" / "evaluation.json") as f:
        assert json.load(f)["blessed"] is result["blessed"] is True
