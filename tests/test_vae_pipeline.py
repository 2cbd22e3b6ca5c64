"""The VAE objective through the product: configuration, the shared training loop (resume),
evaluation (importance-sampled log-likelihood >= ELBO, baselines), export, and the CLI (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfflows.components.config import IngestConfig
from tfflows.components.evaluate import EvaluateConfig, run_evaluate
from tfflows.components.flow_artifact import load_flow, read_summary
from tfflows.components.ingest import run_ingest
from tfflows.components.push import PushConfig, run_push
from tfflows.components.train import TrainConfig, run_train
from tests.artifact_testing import serve_in_fresh_process

TINY = dict(objective="vae", num_layers=1, hidden_units=(16,), batch_size=50, epochs=3, learning_rate=3e-3,
            seed=2, log_every_steps=5, max_steps_per_epoch=5,
            vae_options={"latent_dim": 4, "hidden_units": [32], "context_dim": 4})
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("changes,match", [
    (dict(vae_options={"latent": 3}), "unknown option"),
    (dict(vae_options={"likelihood": "poisson"}), "likelihood"),
    (dict(num_layers=-1), "num_layers"),
    (dict(objective="max_likelihood"), "only objective 'vae' uses it"),
])
def test_bad_vae_settings_are_refused(changes, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{**TINY, **changes})


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("digits") / "examples")
    run_ingest(IngestConfig("digits", max_examples=400), uri)
    return uri


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    root = tmp_path_factory.mktemp("vae")
    uri = str(root / "model")
    return uri, run_train(digits, None, uri, TrainConfig(**TINY), checkpoint_dir=str(root / "ckpt"))


def test_training_raises_the_elbo_and_resumes_exactly(digits, trained, tmp_path):
    uri, summary = trained
    assert summary.objective == "vae" and summary.kind == "vae" and summary.epochs_run == 3
    assert summary.history[-1]["train_elbo"] > summary.history[0]["train_elbo"]
    assert summary.details.vae["num_iaf_steps"] == 1 and summary.details.data_scale == pytest.approx(1 / 16)
    run_train(digits, None, str(tmp_path / "part"), TrainConfig(**{**TINY, "epochs": 2}),
              checkpoint_dir=str(tmp_path / "c"))
    resumed = run_train(digits, None, str(tmp_path / "part"), TrainConfig(**TINY), checkpoint_dir=str(tmp_path / "c"))
    np.testing.assert_allclose([h["val_elbo"] for h in resumed.history],
                               [h["val_elbo"] for h in summary.history], rtol=1e-5)


def test_bernoulli_needs_discrete_data(tmp_path):
    uri = str(tmp_path / "moons")
    run_ingest(IngestConfig("moons", num_samples=200), uri)
    with pytest.raises(ValueError, match="likelihood"):
        run_train(uri, None, str(tmp_path / "m"), TrainConfig(**TINY))


def test_importance_sampled_log_likelihood_bounds_the_elbo_and_blesses(digits, trained, tmp_path):
    uri, _ = trained
    # A 3-epoch VAE does not beat the factorised reference (tests/test_blessing.py covers that
    # rule); the waiver lets this test check the bound and the comparison with a pushed baseline.
    config = EvaluateConfig(importance_samples=32, batch_size=1000, reference_tolerance=1e6)
    result = run_evaluate(digits, None, uri, config, str(tmp_path / "e"))
    m = result["metrics"]
    assert result["blessed"] and result["objective"] == "vae"
    assert "reference tolerance" in result["reason"]
    assert m["log_likelihood"] >= m["elbo"] and np.isfinite(m["log_likelihood"])
    worse = str(tmp_path / "worse")
    run_train(digits, None, worse, TrainConfig(**{**TINY, "epochs": 1, "max_steps_per_epoch": 1,
                                                 "learning_rate": 1e-6}), checkpoint_dir=str(tmp_path / "c"))
    compared = run_evaluate(digits, None, worse, config, str(tmp_path / "e2"), baseline_model_uri=uri)
    assert not compared["blessed"] and "vs baseline" in compared["reason"]


@pytest.mark.slow  # a fresh process loads the export
def test_export_serves_the_importance_sampled_log_likelihood(digits, trained, tmp_path):
    from tfflows.components.objectives.scoring import held_out_quantiles

    uri, _ = trained
    calibration = held_out_quantiles(np.linspace(-60.0, -10.0, 101), "test")  # stands in for the evaluation's
    pushed = run_push(uri, None, digits, None, PushConfig(push_base=str(tmp_path / "push"), importance_samples=16),
                      evaluation={"blessed": True, "metrics": {}, "held_out_quantiles": calibration})
    assert pushed["pushed"]
    x = (np.random.default_rng(0).random((5, 64)) < 0.3).astype("float32")
    lp, samples = serve_in_fresh_process(pushed["destination"], x, 3)
    expected = load_flow(uri).importance_log_likelihood(tf.constant(x), 16, seed=tf.constant([0, 0])).numpy()
    np.testing.assert_allclose(lp, expected, rtol=1e-4, atol=1e-3)
    assert samples.shape == (3, 64) and set(np.unique(samples)) <= {0.0, 1.0}
    with open(os.path.join(pushed["destination"], "assets.extra", "tfflows.json")) as f:
        assert json.load(f)["objective"] == "vae"
    # A calibrated VAE gets the `score` signature too: the same log_prob, its percentile among held-out scores.
    scored = tf.saved_model.load(pushed["destination"]).signatures["score"](x=tf.constant(x))
    np.testing.assert_allclose(scored["log_prob"].numpy(), lp, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scored["percentile"].numpy(), np.clip((lp + 60.0) / 50.0, 0, 1) * 100, atol=1e-3)


@pytest.mark.slow
def test_cli_runs_the_vae_pipeline(tmp_path):
    output = tmp_path / "out"
    args = [sys.executable, "-m", "tfflows.pipeline.cli", "run", "--dataset", "digits", "--set", "train.objective=vae",
            "--set", "train.num_layers=1", "--set", "train.hidden_units=[16]", "--epochs", "2",
            "--set", "train.max_steps_per_epoch=5", "--set", "train.vae_options={latent_dim: 4, hidden_units: [32]}",
            "--set", "evaluate.importance_samples=8", "--output", str(output),
            "--set", "evaluate.reference_tolerance=1e6"]  # plumbing, not quality: 2 epochs lose to the reference
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "importance-sampled" in result.stdout and "VAE with IAF posterior" in result.stdout
    assert (output / "serving" / "1" / "saved_model.pb").exists()
    assert {p.name for p in (output / "pipeline_root").iterdir()} == {
        "IngestExamplesComponent", "TrainFlowComponent", "EvaluateFlow", "PushFlow"}
    png = tmp_path / "s.png"
    sampled = subprocess.run([sys.executable, "-m", "tfflows.pipeline.cli", "sample", "--model", str(output / "serving"),
                              "-n", "9", "--out", str(png)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert sampled.returncode == 0 and png.stat().st_size > 0, sampled.stderr[-2000:]
    model_dir = next(p for p in (output / "pipeline_root" / "TrainFlowComponent" / "model").iterdir())
    import mlflow

    run_id = read_summary(str(model_dir)).mlflow_run_id
    client = mlflow.MlflowClient(f"sqlite:///{output}/mlflow.db")
    assert {"val_elbo", "test_log_likelihood", "test_elbo"} <= set(client.get_run(run_id).data.metrics)
    assert "plots/samples.png" in {a.path for a in client.list_artifacts(run_id, "plots")}
