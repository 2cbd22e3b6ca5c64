"""Train component: run_train on tiny data (summary, artifact, MLflow, resume, NaN rollback,
unreachable tracking server) and one LocalDagRunner pipeline (slow)."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import tensorflow as tf

from tfflows.components.config import IngestConfig, TransformConfig
from tfflows.components.flow_artifact import load_flow, read_summary
from tfflows.components.ingest import load_split, read_metadata, run_ingest
from tfflows.components.train import (TrackingConfig, TrainConfig, TrainingDivergedError,
                              run_train)
from tfflows.components.transform import apply_transform, run_transform

TINY = dict(kind="maf", num_layers=2, hidden_units=(16,), batch_size=50, learning_rate=1e-3,
            epochs=2, patience=30, seed=3, log_every_steps=2)


def _data(root, ingest_config):
    examples, graph = os.path.join(root, "examples"), os.path.join(root, "transform")
    run_ingest(ingest_config, examples)
    run_transform(examples, TransformConfig(), graph)
    return examples, graph


@pytest.fixture(scope="module")
def moons(tmp_path_factory):
    return _data(str(tmp_path_factory.mktemp("moons")), IngestConfig("moons", num_samples=400))


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return _data(str(tmp_path_factory.mktemp("digits")), IngestConfig("digits", max_examples=300))


def _sqlite(tmp_path, **kwargs):
    return TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="train-tests", **kwargs)


def test_train_moons_summary_artifact_and_mlflow(moons, tmp_path, caplog):
    examples, graph = moons
    caplog.set_level(logging.INFO, logger="tfflows.train")
    model_uri = str(tmp_path / "model")
    summary = run_train(examples, graph, model_uri, TrainConfig(**TINY), _sqlite(tmp_path, run_name="r1"))
    assert summary.status == "ok" and summary.epochs_run == 2
    assert summary.best_epoch in (1, 2) and np.isfinite(summary.best_val)
    assert summary.num_parameters > 0 and summary.examples_per_sec > 0
    assert summary.data_fingerprint == read_metadata(examples).fingerprint
    assert [h["epoch"] for h in summary.history] == [1, 2]
    assert "examples/s" in caplog.text and "epoch 1 step 2" in caplog.text
    # artifact: loads, finite log_prob, the summary stored beside it
    model = load_flow(model_uri)
    z, _ = apply_transform(graph, load_split(examples, "test"))
    lp = model.log_prob(z).numpy()
    assert np.all(np.isfinite(lp))
    assert read_summary(model_uri).best_epoch == summary.best_epoch
    # MLflow run contents, read back from the sqlite store
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(summary.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "r1"
    assert run.data.params["train.learning_rate"] == "0.001"
    assert run.data.params["data.fingerprint"] == summary.data_fingerprint
    assert run.data.params["flow.kind"] == "maf"
    val = client.get_metric_history(run.info.run_id, "val_log_likelihood")
    assert sorted(m.step for m in val) == [1, 2]
    assert len(client.get_metric_history(run.info.run_id, "train_log_likelihood")) == 2
    plots = {os.path.basename(a.path) for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"loss_curve.png", "samples.png"}
    model_files = {os.path.basename(a.path) for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"flow_config.json", "summary.json", "weights"} <= model_files


def test_resume_after_kill_equals_uninterrupted(moons, tmp_path):
    examples, graph = moons
    config = TrainConfig(**TINY)
    full = run_train(examples, graph, str(tmp_path / "full" / "model"), config,
                     checkpoint_dir=str(tmp_path / "full" / "ckpt"))

    def kill_in_epoch_2(epoch, model):
        if epoch == 2:
            raise KeyboardInterrupt("simulated kill during epoch 2")

    ckpt = str(tmp_path / "resumed" / "ckpt")
    with pytest.raises(KeyboardInterrupt):
        run_train(examples, graph, str(tmp_path / "resumed" / "model"), config,
                  checkpoint_dir=ckpt, epoch_hook=kill_in_epoch_2)
    assert not os.path.exists(tmp_path / "resumed" / "model" / "flow_config.json")
    resumed = run_train(examples, graph, str(tmp_path / "resumed" / "model"), config,
                        checkpoint_dir=ckpt)
    for key in ("epochs_run", "best_epoch"):
        assert getattr(resumed, key) == getattr(full, key)
    for a, b in zip(full.history, resumed.history):
        np.testing.assert_allclose(a["val_log_likelihood"], b["val_log_likelihood"], rtol=1e-5)
        np.testing.assert_allclose(a["train_log_likelihood"], b["train_log_likelihood"], rtol=1e-5)
    m1, m2 = load_flow(str(tmp_path / "full" / "model")), load_flow(str(tmp_path / "resumed" / "model"))
    for v1, v2 in zip(m1.variables, m2.variables):
        np.testing.assert_allclose(v1.numpy(), v2.numpy(), rtol=1e-5, atol=1e-6)
    # a checkpoint folder of another training is refused
    with pytest.raises(ValueError, match="different training"):
        run_train(examples, graph, str(tmp_path / "other"), TrainConfig(**{**TINY, "seed": 9}),
                  checkpoint_dir=ckpt)


def test_xla_train_step_matches_the_plain_graph(moons, tmp_path, caplog):
    """jit_compile (the default) changes how the step runs, not what it computes: the same losses
    and the same fitted density, to rounding (Adam turns rounding-level gradients into full steps, so
    single weights are compared through the density they give, not one by one)."""
    examples, graph = moons
    caplog.set_level(logging.WARNING, logger="tfflows.train")
    z, _ = apply_transform(graph, load_split(examples, "test"))
    summaries, log_probs = [], []
    for jit in (True, False):
        config = TrainConfig(**{**TINY, "batch_norm": True}, jit_compile=jit)
        summaries.append(run_train(examples, graph, str(tmp_path / f"m{jit}"), config,
                                   checkpoint_dir=str(tmp_path / f"c{jit}")))
        log_probs.append(load_flow(str(tmp_path / f"m{jit}")).log_prob(z).numpy())
    for a, b in zip(*(s.history for s in summaries)):
        np.testing.assert_allclose(a["train_log_likelihood"], b["train_log_likelihood"], rtol=1e-4)
        np.testing.assert_allclose(a["val_log_likelihood"], b["val_log_likelihood"], rtol=1e-4)
    np.testing.assert_allclose(log_probs[0], log_probs[1], rtol=1e-3, atol=1e-3)
    assert "XLA could not compile" not in caplog.text  # the first run really was compiled


def test_nan_rolls_back_and_never_saves_nan(moons, tmp_path, caplog):
    examples, graph = moons
    caplog.set_level(logging.INFO, logger="tfflows.train")
    poisoned = []

    def poison_once(epoch, model):
        if epoch == 2 and not poisoned:
            poisoned.append(epoch)
            v = model.trainable_variables[0]
            v.assign(tf.fill(v.shape, float("nan")))

    summary = run_train(examples, graph, str(tmp_path / "model"), TrainConfig(**{**TINY, "epochs": 3}),
                        epoch_hook=poison_once)
    assert "ROLLED BACK" in caplog.text and "halved the learning rate" in caplog.text
    assert summary.status == "ok" and len(summary.rollbacks) == 1
    assert summary.rollbacks[0]["epoch"] == 2 and summary.epochs_run == 3
    lrs = [h["learning_rate"] for h in summary.history]
    assert lrs[1] == pytest.approx(lrs[0] / 2)
    model = load_flow(str(tmp_path / "model"))
    assert all(np.all(np.isfinite(v.numpy())) for v in model.variables)

    # absurd learning rate: every epoch diverges -> clear error, no artifact
    caplog.clear()
    with pytest.raises(TrainingDivergedError, match="nothing was saved"):
        run_train(examples, graph, str(tmp_path / "bad"),
                  TrainConfig(**{**TINY, "learning_rate": 1e6, "max_nan_retries": 1}),
                  checkpoint_dir=str(tmp_path / "bad_ckpt"), epoch_hook=lambda e, m: [
                      v.assign(v * np.nan) for v in m.trainable_variables[:1]])
    assert not os.path.exists(tmp_path / "bad" / "flow_config.json")
    assert "giving up" in caplog.text


def test_divergence_counts_the_rollbacks_it_logged(moons, tmp_path, caplog):
    """learning_rate=1e4 diverges for real: every rollback is logged once, the error counts the
    same number, and nothing is saved (issue 18.3)."""
    examples, graph = moons
    caplog.set_level(logging.INFO, logger="tfflows.train")
    config = TrainConfig(**{**TINY, "learning_rate": 1e4, "epochs": 4, "max_nan_retries": 2,
                            "max_steps_per_epoch": 3})
    with pytest.raises(TrainingDivergedError, match=r"\(2 rollback\(s\)\); nothing was saved") as error:
        run_train(examples, graph, str(tmp_path / "model"), config)
    assert "\n" not in str(error.value)
    assert caplog.text.count("ROLLED BACK") == 2 and "after 2 rollback(s): giving up" in caplog.text
    assert not os.path.exists(tmp_path / "model" / "flow_config.json")


def _data_files(ckpt, number):
    return [os.path.join(ckpt, n) for n in os.listdir(ckpt) if n.startswith(f"ckpt-{number}.data")]


def test_unreadable_checkpoints_fall_back_with_a_warning(moons, tmp_path, caplog):
    """A truncated newest checkpoint (a crash or a full disk while writing) and a corrupt
    `checkpoint` state file: the run resumes from the newest readable checkpoint and says so
    (issue 18.4), ending where an uninterrupted run ends."""
    examples, graph = moons
    caplog.set_level(logging.INFO, logger="tfflows.train")
    ckpt, model = str(tmp_path / "ckpt"), str(tmp_path / "model")
    run_train(examples, graph, model, TrainConfig(**TINY), checkpoint_dir=ckpt)
    [newest] = _data_files(ckpt, 2)
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) // 2)
    summary = run_train(examples, graph, model, TrainConfig(**{**TINY, "epochs": 3}), checkpoint_dir=ckpt)
    assert "ckpt-2 is unreadable" in caplog.text and "resumed from" in caplog.text
    assert os.path.join(ckpt, "ckpt-1") in caplog.text.split("resumed from")[1].splitlines()[0]
    assert [h["epoch"] for h in summary.history] == [1, 2, 3]

    caplog.clear()
    with open(os.path.join(ckpt, "checkpoint"), "w") as f:
        f.write("model_checkpoint_path: {{ corrupt")
    summary = run_train(examples, graph, model, TrainConfig(**{**TINY, "epochs": 4}), checkpoint_dir=ckpt)
    assert "checkpoint state file" in caplog.text and "unreadable" in caplog.text
    assert "(epoch 3 done)" in caplog.text  # not a silent restart from epoch 1
    assert [h["epoch"] for h in summary.history] == [1, 2, 3, 4]
    full = run_train(examples, graph, str(tmp_path / "full"), TrainConfig(**{**TINY, "epochs": 4}),
                     checkpoint_dir=str(tmp_path / "full_ckpt"))
    for a, b in zip(full.history, summary.history):
        np.testing.assert_allclose(a["val_log_likelihood"], b["val_log_likelihood"], rtol=1e-4)


def test_second_run_into_the_same_checkpoints_refuses_while_the_first_runs(moons, tmp_path):
    """Two runs into one output at once (issue 18.5): the second stops with one line naming the
    folder and the holder; the first is not disturbed, and the lock goes with it."""
    from tfflows.components.errors import DataError

    examples, graph = moons
    ckpt, refused = str(tmp_path / "ckpt"), []

    def second_run(epoch, model):
        if epoch == 1:
            with pytest.raises(DataError, match="in use by another training") as error:
                run_train(examples, graph, str(tmp_path / "second"), TrainConfig(**TINY), checkpoint_dir=ckpt)
            refused.append(str(error.value))

    summary = run_train(examples, graph, str(tmp_path / "first"), TrainConfig(**TINY), checkpoint_dir=ckpt,
                        epoch_hook=second_run)
    assert summary.status == "ok" and summary.epochs_run == 2
    assert len(refused) == 1 and ckpt in refused[0] and f"pid {os.getpid()}" in refused[0]
    assert "\n" not in refused[0] and not os.path.exists(tmp_path / "second")
    # released with the first run: a later run resumes from its checkpoints
    again = run_train(examples, graph, str(tmp_path / "second"), TrainConfig(**{**TINY, "epochs": 3}),
                      checkpoint_dir=ckpt)
    assert again.epochs_run == 3


def test_unreachable_tracking_server_does_not_stop_training(moons, tmp_path, caplog):
    examples, graph = moons
    caplog.set_level(logging.WARNING, logger="tfflows.train")
    tracking = TrackingConfig(uri="http://127.0.0.1:9", timeout_s=2)
    import time

    start = time.perf_counter()
    summary = run_train(examples, graph, str(tmp_path / "model"), TrainConfig(**{**TINY, "epochs": 1}),
                        tracking)
    assert time.perf_counter() - start < 60
    assert summary.status == "ok" and summary.mlflow_run_id is None
    assert "unreachable" in caplog.text and "NOT logged" in caplog.text
    assert summary.mlflow_not_logged
    assert os.path.exists(tmp_path / "model" / "flow_config.json")


def test_digits_image_samples_and_early_stopping(digits, tmp_path):
    examples, graph = digits
    config = TrainConfig(**{**TINY, "epochs": 3, "patience": 1, "max_steps_per_epoch": 3,
                            "hidden_units": (64,),
                            "learning_rate": 1e-2, "num_plot_samples": 4})
    summary = run_train(examples, graph, str(tmp_path / "model"), config, _sqlite(tmp_path))
    assert summary.status == "ok" and summary.event_dim == 64
    assert summary.epochs_run <= 3
    if summary.early_stopped:
        assert summary.epochs_run - summary.best_epoch == 1
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    plots = {os.path.basename(a.path) for a in client.list_artifacts(summary.mlflow_run_id, "plots")}
    assert "samples.png" in plots


def test_config_round_trip_and_errors():
    config = TrainConfig(**{**TINY, "flow_options": {"order": "reversed"}, "lr_schedule": "cosine"})
    assert TrainConfig.from_json(config.to_json()) == config
    assert config.flow_kwargs()["order"] == "reversed"
    assert config.learning_rate_at(1) == pytest.approx(1e-3)
    assert config.learning_rate_at(2) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="event_dim"):
        TrainConfig(flow_options={"event_dim": 3})
    assert TrackingConfig.from_json(TrackingConfig(uri="sqlite:///x.db").to_json()).active


@pytest.mark.slow
def test_local_dag_runner_ingest_transform_train(tmp_path):
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata, pipeline
    from tfx.orchestration.local import local_dag_runner

    from tfflows.components.ingest.component import IngestExamples
    from tfflows.components.ingest.runner import DEFAULT_BEAM_ARGS
    from tfflows.components.train.component import TrainFlow
    from tfflows.components.transform.component import TransformData

    ingest = IngestExamples(IngestConfig("moons", num_samples=300))
    transform = TransformData(ingest.outputs["examples"], TransformConfig())
    train = TrainFlow(ingest.outputs["examples"], transform.outputs["transform_graph"],
                      TrainConfig(**{**TINY, "epochs": 1}), _sqlite(tmp_path))
    db = str(tmp_path / "metadata.db")
    p = pipeline.Pipeline(
        pipeline_name="train_test", pipeline_root=str(tmp_path / "root"),
        components=[ingest, transform, train],
        metadata_connection_config=metadata.sqlite_metadata_connection_config(db),
        beam_pipeline_args=list(DEFAULT_BEAM_ARGS), enable_cache=False)
    local_dag_runner.LocalDagRunner().run(p)
    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(db))
    [model] = store.get_artifacts_by_type("Model")
    assert model.custom_properties["status"].string_value == "ok"
    assert np.all(np.isfinite(load_flow(model.uri).log_prob(np.zeros((2, 2), np.float32)).numpy()))
    assert json.loads(read_summary(model.uri).to_json())["epochs_run"] == 1
