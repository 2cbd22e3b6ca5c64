"""Multi-worker training (issue 14.3): two worker processes on 127.0.0.1, started as a TFJob
starts them (`TF_CONFIG`), train under MultiWorkerMirroredStrategy with identical weights, equal
to one worker trained on the same global batches; only the chief writes the model and the MLflow
run; restarted workers resume from the chief's shared checkpoints."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tfflows.components.config import IngestConfig, TransformConfig
from tfflows.components.flow_artifact import load_flow
from tfflows.components.ingest import load_split, run_ingest
from tfflows.components.train import TrackingConfig, TrainConfig, run_train
from tfflows.components.transform import apply_transform, run_transform

# No batch norm: each replica would normalise with the statistics of its own slice of the batch.
CONFIG = dict(kind="maf", num_layers=2, hidden_units=(16,), batch_norm=False, batch_size=50,
              learning_rate=1e-3, epochs=2, max_steps_per_epoch=4, seed=3, log_every_steps=100)

# One worker as a test can inspect it: run the Trainer, then dump the weights it ends with.
WORKER = """
import sys, numpy as np
from tfflows.components.train import TrackingConfig, TrainConfig
from tfflows.components.train.executor import Trainer
examples, graph, model, ckpt, config, tracking, out = sys.argv[1:]
trainer = Trainer(examples, graph, model, TrainConfig.from_json(open(config).read()),
                  TrackingConfig.from_json(open(tracking).read()), ckpt)
summary = trainer.run()
np.savez(out, *[v.numpy() for v in trainer.model.variables])
print("REPLICAS", summary.replicas, "RUN", summary.mlflow_run_id)
"""


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _tf_configs(ports, chief=False):
    """One TF_CONFIG per task on 127.0.0.1: all workers (as a TFJob sets it, worker 0 the chief), or
    with ``chief`` the first task the chief and the others workers, as Vertex AI sets it (pool 0
    ``chief``, pool 1 ``worker`` from index 0, plus its ``environment`` and ``job`` keys)."""
    addresses = [f"127.0.0.1:{p}" for p in ports]
    if not chief:
        return [{"cluster": {"worker": addresses}, "task": {"type": "worker", "index": i}} for i in range(len(ports))]
    cluster = {"chief": addresses[:1], "worker": addresses[1:]}
    tasks = [{"type": "chief", "index": 0}] + [{"type": "worker", "index": i} for i in range(len(ports) - 1)]
    return [{"cluster": cluster, "task": {**task, "trial": ""}, "environment": "cloud", "job": {}} for task in tasks]


def _start_workers(commands, cwd, ports, logs=None, chief=False):
    """One process per command with its TF_CONFIG (`_tf_configs`); with ``logs`` (one path per
    process) their stdout and stderr go to those files instead of pipes."""
    procs = []
    for index, (command, tf_config) in enumerate(zip(commands, _tf_configs(ports, chief))):
        env = dict(os.environ, TF_CONFIG=json.dumps(tf_config),
                   TF_CPP_MIN_LOG_LEVEL="2", TMPDIR=str(cwd))  # a killed worker's scratch folder stays in cwd
        out = open(logs[index], "w") if logs else subprocess.PIPE
        procs.append(subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT if logs else
                                      subprocess.PIPE, text=True))
        if logs:
            out.close()  # the child holds its own copy
    return procs


def _run_workers(commands, cwd, ports=None, chief=False):
    """Starts one process per command with its TF_CONFIG; returns their (stdout, stderr)."""
    procs = _start_workers(commands, cwd, ports or _free_ports(len(commands)), chief=chief)
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err[-4000:]
            outputs.append((out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return outputs


def _weights(path):
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


@pytest.fixture(scope="module")
def moons(tmp_path_factory):
    """(examples, transform graph) folders of 400 moons, shared by the tests that only read them."""
    folder = tmp_path_factory.mktemp("moons")
    examples, graph = str(folder / "examples"), str(folder / "transform")
    run_ingest(IngestConfig("moons", num_samples=400, seed=1), examples)
    run_transform(examples, TransformConfig(), graph)
    return examples, graph


@pytest.mark.slow
def test_two_workers_train_like_one_and_resume_from_the_shared_checkpoint(tmp_path, moons):
    examples, graph = moons
    config_file, tracking_file = tmp_path / "train.json", tmp_path / "tracking.json"
    config_file.write_text(TrainConfig(**CONFIG).to_json())
    tracking = TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="multiworker")
    tracking_file.write_text(tracking.to_json())
    model, ckpt = str(tmp_path / "model"), str(tmp_path / "ckpt")

    outputs = _run_workers([[sys.executable, "-c", WORKER, examples, graph, model, ckpt, str(config_file),
                             str(tracking_file), str(tmp_path / f"w{i}.npz")] for i in range(2)], tmp_path)
    chief, other = (_weights(tmp_path / f"w{i}.npz") for i in range(2))
    for a, b in zip(chief, other):
        np.testing.assert_array_equal(a, b)  # all-reduced: the same weights on every worker
    assert all("REPLICAS 2" in out for out, _ in outputs)
    run_ids = [out.split("RUN ")[1].split()[0] for out, _ in outputs]
    assert run_ids[0] != "None" and run_ids[1] == "None"  # MLflow: the chief's run only
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking.uri)
    assert len(client.search_runs([client.get_experiment_by_name("multiworker").experiment_id])) == 1
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith(("model", "ckpt"))) == ["ckpt", "ckpt.lock", "model"]

    # One worker (this process, no TF_CONFIG) on the same global batches of 50.
    single = str(tmp_path / "single")
    run_train(examples, graph, single, TrainConfig(**CONFIG), checkpoint_dir=str(tmp_path / "single_ckpt"))
    for a, b in zip(chief, load_flow(single).variables):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-3, atol=1e-4)

    # Restarted (as after a kill) with a third epoch, through the module's command line: both
    # workers resume from the chief's checkpoint of epoch 2 and end where one worker ends.
    config_file.write_text(TrainConfig(**{**CONFIG, "epochs": 3}).to_json())
    command = [sys.executable, "-m", "tfflows.components.train.executor", "--examples", examples,
               "--transform-graph", graph, "--model", model, "--train-config", str(config_file),
               "--checkpoint-dir", ckpt]
    outputs = _run_workers([command, command], tmp_path)
    for out, err in outputs:
        assert "resumed from" in err and "(epoch 2 done)" in err
        assert "status ok: 3 epochs on 2 replica(s)" in out
    run_train(examples, graph, single, TrainConfig(**{**CONFIG, "epochs": 3}),
              checkpoint_dir=str(tmp_path / "single_ckpt"))
    z, _ = apply_transform(graph, load_split(examples, "test"))
    np.testing.assert_allclose(load_flow(model).log_prob(z).numpy(), load_flow(single).log_prob(z).numpy(),
                               rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_a_chief_and_a_worker_as_vertex_sets_them_train_like_one_worker(tmp_path, moons):
    """Vertex AI's TF_CONFIG names a ``chief`` (pool 0) and a ``worker`` (pool 1, index 0), where a
    TFJob names two workers: the chief alone writes the model, both end with the same weights,
    equal to one worker on the same global batches."""
    examples, graph = moons
    config_file, tracking_file = tmp_path / "train.json", tmp_path / "tracking.json"
    config_file.write_text(TrainConfig(**CONFIG).to_json())
    tracking_file.write_text(TrackingConfig(enabled=False).to_json())
    model = str(tmp_path / "model")
    outputs = _run_workers([[sys.executable, "-c", WORKER, examples, graph, model, str(tmp_path / "ckpt"),
                             str(config_file), str(tracking_file), str(tmp_path / f"w{i}.npz")] for i in range(2)],
                           tmp_path, chief=True)
    assert all("REPLICAS 2" in out for out, _ in outputs)
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith(("model", "ckpt"))) == ["ckpt", "ckpt.lock", "model"]
    chief, worker = (_weights(tmp_path / f"w{i}.npz") for i in range(2))
    for a, b in zip(chief, worker):
        np.testing.assert_array_equal(a, b)
    single = str(tmp_path / "single")
    run_train(examples, graph, single, TrainConfig(**CONFIG), checkpoint_dir=str(tmp_path / "single_ckpt"))
    for a, b in zip(load_flow(model).variables, load_flow(single).variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-3, atol=1e-4)


def _train_command(examples, graph, model, config_file, ckpt):
    return [sys.executable, "-m", "tfflows.components.train.executor", "--examples", examples, "--transform-graph",
            graph, "--model", model, "--train-config", str(config_file), "--checkpoint-dir", ckpt]


def _wait_for(predicate, procs, what, timeout=300.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert all(p.poll() is None for p in procs), f"a worker exited before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout:.0f} s"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_workers_killed_mid_epoch_resume_to_the_uninterrupted_weights(tmp_path):
    """SIGKILL both workers in the middle of epoch 2 (the chief's checkpoint of epoch 1 written),
    restart both with the same TF_CONFIG: they resume from that checkpoint, redo epoch 2 with its
    own data order, and end with the weights of an uninterrupted two-worker run."""
    examples, graph = str(tmp_path / "examples"), str(tmp_path / "transform")
    run_ingest(IngestConfig("moons", num_samples=2000, seed=1), examples)  # ~32 steps of 50 per epoch
    run_transform(examples, TransformConfig(), graph)
    config_file = tmp_path / "train.json"
    config_file.write_text(TrainConfig(**{**CONFIG, "epochs": 3, "max_steps_per_epoch": None,
                                          "log_every_steps": 1}).to_json())

    ports = _free_ports(2)
    model, ckpt = str(tmp_path / "model"), str(tmp_path / "ckpt")
    command = _train_command(examples, graph, model, config_file, ckpt)
    logs = [tmp_path / f"killed{i}.log" for i in range(2)]
    procs = _start_workers([command, command], tmp_path, ports, logs)
    try:
        _wait_for(lambda: os.path.exists(os.path.join(ckpt, "ckpt-1.index")), procs, "checkpoint of epoch 1")
        _wait_for(lambda: "epoch 2 step 3 " in logs[0].read_text(), procs, "third step of epoch 2")
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    chief_log = logs[0].read_text()
    assert "epoch 2: train" not in chief_log and not os.path.exists(os.path.join(ckpt, "ckpt-2.index")), (
        "the kill came after epoch 2 ended, not in the middle of it")
    assert not os.path.exists(model)

    outputs = _run_workers([command, command], tmp_path, ports)  # the same TF_CONFIG as before the kill
    for out, err in outputs:
        assert "resumed from" in err and "(epoch 1 done)" in err, err[-3000:]
        assert "status ok: 3 epochs on 2 replica(s)" in out

    uninterrupted = str(tmp_path / "uninterrupted")
    _run_workers([_train_command(examples, graph, uninterrupted, config_file, str(tmp_path / "ckpt_u"))] * 2,
                 tmp_path)
    for a, b in zip(load_flow(model).variables, load_flow(uninterrupted).variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_two_workers_train_glow_like_one(tmp_path):
    """Glow's ActNorm takes its data-dependent initialisation outside the replicated step: two
    workers start from the same initialisation and end with one worker's weights."""
    examples, graph = str(tmp_path / "examples"), str(tmp_path / "transform")
    run_ingest(IngestConfig("digits", max_examples=300, seed=1), examples)
    run_transform(examples, TransformConfig(), graph)
    config = TrainConfig(**{**CONFIG, "kind": "glow", "num_layers": 1, "hidden_units": (), "batch_size": 20,
                            "max_steps_per_epoch": 3,
                            "flow_options": dict(levels=1, steps_per_level=1, hidden_channels=4)})
    config_file = tmp_path / "train.json"
    config_file.write_text(config.to_json())
    model = str(tmp_path / "model")
    _run_workers([_train_command(examples, graph, model, config_file, str(tmp_path / "ckpt"))] * 2, tmp_path)
    single = str(tmp_path / "single")
    run_train(examples, graph, single, config, checkpoint_dir=str(tmp_path / "single_ckpt"))
    # The rollback point of epoch 0 holds the initialisation: the same on both, to the last bit.
    initial = [tf.train.load_checkpoint(str(tmp_path / folder / "ckpt-0")) for folder in ("ckpt", "single_ckpt")]
    keys = [key for key, _ in tf.train.list_variables(str(tmp_path / "ckpt" / "ckpt-0"))
            if "location" in key or "log_scale" in key]
    assert len(keys) == 2
    for key in keys:
        assert np.abs(initial[0].get_tensor(key)).max() > 0.1  # set from the data, not zero
        np.testing.assert_array_equal(initial[0].get_tensor(key), initial[1].get_tensor(key))
    for a, b in zip(load_flow(model).variables, load_flow(single).variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-3, atol=1e-4)
