"""Reverse-KL fitting of unnormalised targets through the product: configuration, the shared
training loop (checkpoints, resume, rollback), evaluation (ELBO, ESS, log Z, KL against a known
answer), export without preprocessing, and the CLI pipeline (slow)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfflows.components.evaluate import EvaluateConfig, run_evaluate
from tfflows.components.flow_artifact import load_flow, read_summary
from tfflows.components.push import PushConfig, run_push
from tfflows.components.train import TrainConfig, run_train
from tfflows.models import targets
from tests import vi_targets
from tests.artifact_testing import serve_in_fresh_process

GAUSSIAN = "tests.vi_targets:shifted_gaussian"
TINY = dict(objective="reverse_kl", target=GAUSSIAN, target_dim=2, target_box=None, kind="planar",
            num_layers=4, epochs=3, max_steps_per_epoch=20, batch_size=64, eval_batch_size=500,
            learning_rate=1e-2, seed=1, log_every_steps=10)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("changes,match", [
    (dict(target=None), "needs `target`"),
    (dict(kind="maf"), "samples in one pass"),
    (dict(batch_norm=True), "batch_norm"),
    (dict(target="U9", target_dim=None), "must be one of"),
    (dict(target_dim=None), "set target_dim"),
    (dict(target="tests.no_such_module:f"), "cannot import"),
    (dict(target="tests.vi_targets:NOT_A_FUNCTION"), "not a function"),
    (dict(target="U1", target_dim=3), "is 2-D"),
    (dict(objective="max_likelihood"), "only objective 'reverse_kl' uses it"),
    (dict(objective="elbo"), "`objective` must be one of"),
    (dict(anneal_epochs=-1), "anneal_epochs"),
])
def test_bad_reverse_kl_settings_are_refused(changes, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{**TINY, **changes})


def _grid_log_z(fn, half_width, h=0.04):
    c = np.arange(-half_width, half_width, h) + h / 2
    z1, z2 = np.meshgrid(c, c)
    return np.logaddexp.reduce(fn(tf.constant(np.stack([z1.ravel(), z2.ravel()], 1))).numpy()) + 2 * math.log(h)


def test_soft_box_makes_every_target_normalisable():
    """Boxed targets have the same mass on [-12, 12]² and [-24, 24]²; U2 without the box does not."""
    for name in ("U1", "U2", "U3", "U4"):
        boxed, dim = targets.load_target(name, box=4.0)
        assert dim == 2
        np.testing.assert_allclose(_grid_log_z(boxed, 12.0), _grid_log_z(boxed, 24.0), atol=1e-9)
        # inside the box the envelope lowers log p~ by less than sum (z_i / 4)^8 / 2
        inner = tf.constant([[0.5, -1.0], [2.0, 1.0]], tf.float64)
        np.testing.assert_array_less(targets.TARGETS[name](inner) - boxed(inner), 0.5 * 2 * 0.5 ** 8 + 1e-12)
    raw, _ = targets.load_target("U2", box=None)
    assert _grid_log_z(raw, 24.0) - _grid_log_z(raw, 12.0) == pytest.approx(math.log(2.0), abs=0.01)


def test_reverse_kl_training_resume_and_summary(tmp_path):
    """ELBO rises; a run stopped after 2 epochs and resumed equals an uninterrupted 3-epoch run."""
    full = run_train(None, None, str(tmp_path / "full"), TrainConfig(**TINY), checkpoint_dir=str(tmp_path / "c1"))
    assert full.objective == "reverse_kl" and full.metric == "elbo" and full.epochs_run == 3
    history = full.history
    assert history[-1]["train_elbo"] > history[0]["train_elbo"]
    diagnostics = full.details.importance_diagnostics
    assert 0.5 < diagnostics["ess"] <= 1.0 and abs(diagnostics["log_z"]) < 0.1

    run_train(None, None, str(tmp_path / "part"), TrainConfig(**{**TINY, "epochs": 2}), checkpoint_dir=str(tmp_path / "c2"))
    resumed = run_train(None, None, str(tmp_path / "part"), TrainConfig(**TINY), checkpoint_dir=str(tmp_path / "c2"))
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    np.testing.assert_allclose([h["val_elbo"] for h in resumed.history],
                               [h["val_elbo"] for h in history], rtol=1e-5)
    a, b = load_flow(str(tmp_path / "full")), load_flow(str(tmp_path / "part"))
    for v, w in zip(a.variables, b.variables):
        np.testing.assert_allclose(v.numpy(), w.numpy(), rtol=1e-5, atol=1e-6)

    # another target in the same checkpoint folder is refused
    with pytest.raises(ValueError, match="different training"):
        run_train(None, None, str(tmp_path / "other"), TrainConfig(**{**TINY, "target": "U1", "target_dim": None}),
                  checkpoint_dir=str(tmp_path / "c2"))


def test_non_finite_weights_roll_back(tmp_path):
    poisoned = []

    def poison(epoch, model):  # once: the retry of epoch 2 then succeeds
        if epoch == 2 and not poisoned:
            poisoned.append(epoch)
            model.flow_layers[0].w.assign(tf.fill([2], np.nan))

    summary = run_train(None, None, str(tmp_path / "m"), TrainConfig(**TINY), checkpoint_dir=str(tmp_path / "c"),
                        epoch_hook=poison)
    assert summary.status == "ok" and [r["epoch"] for r in summary.rollbacks] == [2]
    assert all(np.isfinite(v.numpy()).all() for v in load_flow(str(tmp_path / "m")).variables)


def test_a_step_xla_cannot_compile_runs_on_the_plain_graph(tmp_path, caplog):
    """The train step is XLA-compiled by default; a user's target XLA cannot compile (tf.py_function)
    gets a warning and the plain graph, and trains to the same weights as jit_compile=False."""
    config = {**TINY, "target": "tests.vi_targets:py_function_gaussian", "epochs": 1}
    with caplog.at_level("WARNING", logger="tfflows.train"):
        run_train(None, None, str(tmp_path / "a"), TrainConfig(**config), checkpoint_dir=str(tmp_path / "ca"))
    assert "XLA could not compile the train step" in caplog.text
    run_train(None, None, str(tmp_path / "b"), TrainConfig(**config, jit_compile=False),
              checkpoint_dir=str(tmp_path / "cb"))
    for v, w in zip(load_flow(str(tmp_path / "a")).variables, load_flow(str(tmp_path / "b")).variables):
        np.testing.assert_allclose(v.numpy(), w.numpy(), rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("rkl")
    uri = str(root / "model")
    run_train(None, None, uri, TrainConfig(**TINY), checkpoint_dir=str(root / "ckpt"))
    return uri


def test_evaluation_recovers_the_known_normaliser_and_kl(fitted, tmp_path):
    """Against a normalised target: log Z ≈ 0, and KL = log Z - ELBO ≈ the exact KL of q."""
    result = run_evaluate(None, None, fitted, EvaluateConfig(num_samples=20_000), str(tmp_path / "eval"))
    m = result["metrics"]
    assert result["blessed"] and result["objective"] == "reverse_kl" and result["target"] == GAUSSIAN
    assert abs(m["log_z"]) < 0.02 and m["ess"] > 0.8
    # the exact KL(q || p) by Monte Carlo with q's own density (planar log_prob by root finding)
    flow = load_flow(fitted)
    x = flow.sample(20_000, seed=5)
    exact = float(tf.reduce_mean(tf.cast(flow.log_prob(x), tf.float64)
                                 - tf.cast(vi_targets.shifted_gaussian(x), tf.float64)))
    assert abs(m["kl"] - exact) < 0.02 and m["kl"] > -0.01
    assert abs(-m["elbo"] - exact) < m["elbo_2se"] + 0.02


def test_baselines_compare_only_on_the_same_target(fitted, tmp_path):
    untrained = str(tmp_path / "untrained")
    run_train(None, None, untrained, TrainConfig(**{**TINY, "epochs": 1, "max_steps_per_epoch": 1,
                                                   "learning_rate": 1e-6}), checkpoint_dir=str(tmp_path / "c"))
    worse = run_evaluate(None, None, untrained, EvaluateConfig(num_samples=5000), str(tmp_path / "e1"),
                         baseline_model_uri=fitted)
    assert not worse["blessed"] and "vs baseline" in worse["reason"]
    other = str(tmp_path / "u1")
    run_train(None, None, other, TrainConfig(**{**TINY, "target": "U1", "target_dim": None, "epochs": 1}),
              checkpoint_dir=str(tmp_path / "c_u1"))
    result = run_evaluate(None, None, other, EvaluateConfig(num_samples=2000), str(tmp_path / "e2"),
                          baseline_model_uri=fitted)
    # another target is another question: nothing to compare with, so not blessed over the champion
    assert not result["blessed"] and "another target" in result["reason"] and "fix: give it a line of its own" in \
        result["reason"]


@pytest.mark.slow  # a fresh process loads the export
def test_push_exports_sample_and_log_prob_without_preprocessing(fitted, tmp_path):
    evaluation = run_evaluate(None, None, fitted, EvaluateConfig(num_samples=2000), str(tmp_path / "eval"))
    pushed = run_push(fitted, None, None, str(tmp_path / "eval"), PushConfig(push_base=str(tmp_path / "push")),
                      evaluation=evaluation)
    assert pushed["pushed"] and pushed["version"] == 1
    with open(os.path.join(pushed["destination"], "assets.extra", "tfflows.json")) as f:
        info = json.load(f)
    assert info["objective"] == "reverse_kl" and info["target"] == GAUSSIAN
    x = np.random.default_rng(0).normal(size=(7, 2)).astype("float32")
    lp, samples = serve_in_fresh_process(pushed["destination"], x, 4)
    np.testing.assert_allclose(lp, load_flow(fitted).log_prob(x).numpy(), rtol=1e-4, atol=1e-4)
    assert samples.shape == (4, 2) and np.isfinite(samples).all()


@pytest.mark.slow
def test_cli_runs_the_reverse_kl_pipeline(tmp_path):
    output = tmp_path / "out"
    args = [sys.executable, "-m", "tfflows.pipeline.cli", "run", "--target", GAUSSIAN, "--set", "train.target_dim=2",
            "--set", "train.num_layers=4", "--epochs", "2", "--set", "train.max_steps_per_epoch=20",
            "--output", str(output)]
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "ELBO" in result.stdout and "ESS/n" in result.stdout
    assert (output / "serving" / "1" / "saved_model.pb").exists()
    assert {p.name for p in (output / "pipeline_root").iterdir()} == {"TrainFlowComponent", "EvaluateFlow", "PushFlow"}
    summary = read_summary(next(p for p in (output / "pipeline_root" / "TrainFlowComponent" / "model").iterdir()))
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{output}/mlflow.db")
    keys = set(client.get_run(summary.mlflow_run_id).data.metrics)
    assert {"val_elbo", "train_elbo", "test_elbo", "test_ess", "ess"} <= keys
    plots = {a.path for a in client.list_artifacts(summary.mlflow_run_id, "plots")}
    assert {"plots/loss_curve.png", "plots/density.png"} <= plots
