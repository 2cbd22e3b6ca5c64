"""Evaluate component: test log-likelihood ± 2 s.e., bits/dim, NaN guard, reference and baseline
blessing."""

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
def moons(tmp_path_factory, moons_400_good):
    """The examples, transform and "good" model are conftest's (shared with test_blessing.py)."""
    root = tmp_path_factory.mktemp("moons")
    ex, tg, good = moons_400_good["examples"], moons_400_good["transform"], moons_400_good["good"]
    untrained = train_flow_artifact(ex, tg, str(root / "untrained"), epochs=0)
    fair = train_flow_artifact(ex, tg, str(root / "fair"), epochs=2)  # beats the Gaussian, less than good
    nan_model = load_flow(untrained)
    var = nan_model.trainable_variables[0]
    var.assign(tf.fill(var.shape, float("nan")))
    save_flow(nan_model, str(root / "nan"))
    return {"examples": ex, "transform": tg, "good": good, "untrained": untrained, "fair": fair,
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
    worse = run_evaluate(moons["examples"], moons["transform"], moons["fair"],
                         EvaluateConfig(), str(tmp_path / "a"),
                         baseline_model_uri=moons["good"])
    assert worse["reference"]["margin"] > 0  # good enough on its own: the baseline decides
    assert not worse["blessed"] and "vs baseline" in worse["reason"]
    gap = (worse["baseline_metrics"]["data_log_likelihood"]
           - worse["metrics"]["data_log_likelihood"])
    assert gap > 0
    tolerant = run_evaluate(moons["examples"], moons["transform"], moons["fair"],
                            EvaluateConfig(tolerance=gap + 0.01), str(tmp_path / "b"),
                            baseline_model_uri=moons["good"])
    assert tolerant["blessed"]
    better = run_evaluate(moons["examples"], moons["transform"], moons["good"],
                          EvaluateConfig(), str(tmp_path / "c"),
                          baseline_model_uri=moons["fair"])
    assert better["blessed"] and read_blessing(str(tmp_path / "c"))
    # Demanding more improvement than achieved (negative tolerance) refuses the blessing.
    strict = run_evaluate(moons["examples"], moons["transform"], moons["good"],
                          EvaluateConfig(tolerance=-(gap + 1.0)), str(tmp_path / "d"),
                          baseline_model_uri=moons["fair"])
    assert not strict["blessed"]


def test_untrained_flow_loses_to_the_gaussian_even_against_a_worse_baseline(moons, tmp_path):
    """An untrained flow is finite, and better than a NaN baseline, but not good: not blessed."""
    result = run_evaluate(moons["examples"], moons["transform"], moons["untrained"], EvaluateConfig(),
                          str(tmp_path / "e"), baseline_model_uri=moons["nan"])
    assert not result["blessed"] and result["reference"]["margin"] < 0
    assert "no better than its reference" in result["reason"] and "non-finite" in result["reason"]


def test_metrics_logged_to_mlflow(moons, tmp_path):
    from mlflow.tracking import MlflowClient

    from tfflows.components.train import TrackingConfig

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_evaluate(moons["examples"], moons["transform"], moons["good"],
                          EvaluateConfig(), str(tmp_path / "eval"), tracking=TrackingConfig(uri=uri))
    run = MlflowClient(tracking_uri=uri).get_run(result["mlflow_run_id"])
    np.testing.assert_allclose(run.data.metrics["test_data_log_likelihood"],
                               result["metrics"]["data_log_likelihood"], rtol=1e-6)
    assert run.data.metrics["blessed"] == 1.0
    # the margin over the Gaussian reference and the reason that states it
    np.testing.assert_allclose(run.data.metrics["test_reference_margin"], result["reference"]["margin"], rtol=1e-6)
    assert run.data.tags["blessing_reason"] == result["reason"] and "Gaussian" in result["reason"]


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
    from tfflows.components.objectives.scoring import finite_problem

    assert finite_problem(np.array([-1.0, -2.0]), [], "m") is None
    assert "1 of 3" in finite_problem(np.array([-1.0, np.inf, -2.0]), [], "m")
    assert "1 of 2" in finite_problem(np.array([np.nan, -2.0]), [], "m")
    assert "weights" in finite_problem(np.array([-1.0]), ["w:0"], "m")


def test_separate_blessing_folder(moons, tmp_path):
    result = run_evaluate(moons["examples"], moons["transform"], moons["good"],
                          EvaluateConfig(), str(tmp_path / "eval"),
                          blessing_uri=str(tmp_path / "blessing"))
    assert read_blessing(str(tmp_path / "blessing"))
    assert not os.path.exists(tmp_path / "eval" / "BLESSED")
    with open(tmp_path / "blessing" / "evaluation.json") as f:
        assert json.load(f)["blessed"] is result["blessed"] is True


def test_extreme_finite_rows_score_minus_inf_never_nan(moons, tmp_path):
    """Scores are totally ordered (issue 18.6): a finite float32 row far outside the data gets a
    finite score or -inf, never NaN (NaN fails every `score < threshold` test), in the flow, the
    evaluator's scorer and the exported SavedModel."""
    from tfflows.components.objectives.scoring import score_model
    from tfflows.components.push import export_saved_model

    rows = np.array([[0.5, 0.2], [1e30, 0.0], [3e38, 3e38], [-3e38, 1e30], [0.0, -1e30]], np.float32)
    model = load_flow(moons["good"])
    raw = model._log_prob(tf.constant(rows), None, False).numpy()  # before the guard
    assert np.isnan(raw).any()  # what users saw: NaN at 3e38

    def totally_ordered(scores):
        scores = np.asarray(scores)
        return not np.isnan(scores).any() and np.all(np.isfinite(scores) | (scores == -np.inf))

    lp = model.log_prob(rows).numpy()
    assert totally_ordered(lp) and np.isfinite(lp[0]) and np.isneginf(lp).sum() >= 1
    np.testing.assert_allclose(lp[np.isfinite(raw)], raw[np.isfinite(raw)], rtol=1e-5)
    assert totally_ordered(score_model(moons["good"], rows)[0])
    export = export_saved_model(moons["good"], moons["transform"], None, str(tmp_path / "export"))
    served = tf.saved_model.load(export).signatures["log_prob"](x=tf.constant(rows))["log_prob"].numpy()
    assert totally_ordered(served) and np.isfinite(served[0])
