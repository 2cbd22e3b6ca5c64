"""Push component: SavedModel signatures, fresh-process load, atomic versions, registry."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import traceback
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfflows.components.evaluate import EvaluateConfig, run_evaluate
from tfflows.components.ingest import load_split
from tfflows.components.push import PushConfig, export_saved_model, run_push
from tfflows.components.push.executor import already_serving
from tfflows.components.artifacts import list_versions, publish_version
from tfflows.components.transform import load_transform
from tfflows.components.transform import Preprocessing
from tests.artifact_testing import prepared_moons, train_flow_artifact
from tests.cli_testing import run_without_tfflows

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("push")
    ex, tg = prepared_moons(root, num_samples=300, seed=4)
    model = train_flow_artifact(ex, tg, str(root / "model"), epochs=10)
    blessing = str(root / "blessing")
    evaluation = run_evaluate(ex, tg, model, EvaluateConfig(), blessing)
    assert evaluation["blessed"]
    export_dir = export_saved_model(model, tg, None, str(root / "export"))
    x = load_split(ex, "test")[:20]
    return {"examples": ex, "transform": tg, "model": model, "blessing": blessing,
            "evaluation": evaluation, "export": export_dir, "x": x, "root": root}


def _expected_log_prob(data, x):
    from tfflows.components.flow_artifact import load_flow

    z, log_det = load_transform(data["transform"])(tf.constant(x))
    return (load_flow(data["model"]).log_prob(z).numpy() + log_det.numpy())


@pytest.mark.slow  # saved_model_cli in its own process
def test_saved_model_cli_lists_signatures(data):
    out = subprocess.run([str(VENV_BIN / "saved_model_cli"), "show", "--all", "--dir",
                          data["export"]], capture_output=True, text=True, check=True).stdout
    blocks = {}
    for chunk in out.split("signature_def['")[1:]:
        blocks[chunk.split("'")[0]] = chunk
    assert {"serving_default", "log_prob", "sample"} <= set(blocks)
    for name in ("serving_default", "log_prob"):
        b = blocks[name]
        assert "inputs['x'] tensor_info:" in b and "dtype: DT_FLOAT" in b
        assert "shape: (-1, 2)" in b
        assert "outputs['log_prob'] tensor_info:" in b and "shape: (-1)" in b
    b = blocks["sample"]
    assert "inputs['num_samples'] tensor_info:" in b and "inputs['seed'] tensor_info:" in b
    assert "DT_INT32" in b and "shape: (2)" in b and "shape: ()" in b
    assert "outputs['samples'] tensor_info:" in b and "shape: (-1, 2)" in b


@pytest.mark.slow  # a fresh process loads the export
def test_fresh_process_reproduces_log_prob_and_samples(data, tmp_path):
    x = data["x"]
    module = tf.saved_model.load(data["export"])
    samples = module.signatures["sample"](num_samples=tf.constant(7),
                                          seed=tf.constant([3, 4]))["samples"].numpy()
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        "m = tf.saved_model.load(sys.argv[1])\n"
        "x = np.load(sys.argv[2])\n"
        "lp = m.signatures['serving_default'](x=tf.constant(x))['log_prob'].numpy()\n"
        "s = m.signatures['sample'](num_samples=tf.constant(7, tf.int32),"
        " seed=tf.constant([3, 4], tf.int32))['samples'].numpy()\n"
        "np.save(sys.argv[3], lp); np.save(sys.argv[4], s)\n")
    run_without_tfflows(script, data["export"], tmp_path / "x.npy", tmp_path / "lp.npy", tmp_path / "s.npy",
                        cwd=tmp_path)
    np.testing.assert_allclose(np.load(tmp_path / "lp.npy"), _expected_log_prob(data, x),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), samples, rtol=1e-6, atol=1e-6)


def test_sample_seeded_raw_space_and_inverse(data):
    module = tf.saved_model.load(data["export"])
    sample = module.signatures["sample"]
    a = sample(num_samples=tf.constant(50), seed=tf.constant([1, 2]))["samples"].numpy()
    b = sample(num_samples=tf.constant(50), seed=tf.constant([1, 2]))["samples"].numpy()
    c = sample(num_samples=tf.constant(50), seed=tf.constant([1, 3]))["samples"].numpy()
    assert a.shape == (50, 2) and np.array_equal(a, b) and not np.array_equal(a, c)
    lp = module.signatures["log_prob"](x=tf.constant(a))["log_prob"].numpy()
    assert np.all(np.isfinite(lp))
    # Raw space: moons live around [-1, 2] x [-0.5, 1.5], not standardised z around 0 ± 1.
    train = load_split(data["examples"], "train")
    assert abs(a.mean(0) - train.mean(0)).max() < 0.5
    # x -> z (tf.Transform graph) -> x (the module's inverse), standardisation.
    x = data["x"]
    z = load_transform(data["transform"])(tf.constant(x))[0]
    back = module.inverse_preprocessing(z).numpy()
    np.testing.assert_allclose(back, x, rtol=1e-5, atol=1e-5)


def test_logit_inverse_round_trip():
    levels, lam = 17, 1e-6
    x = np.random.RandomState(0).uniform(0, levels, size=(50, 64)).astype(np.float32)
    preprocessing = Preprocessing.logit(64, levels, lam)  # FlowServingModule serves its inverse
    z, _ = preprocessing.forward(tf.constant(x))
    back = preprocessing.inverse(z).numpy()
    np.testing.assert_allclose(back, x, rtol=1e-4, atol=1e-4)


def test_push_versions_and_not_blessed_leaves_versions(data, tmp_path):
    config = PushConfig(push_base=str(tmp_path / "out"))
    first = run_push(data["model"], data["transform"], data["examples"], data["blessing"], config)
    second = run_push(data["model"], data["transform"], data["examples"], data["blessing"],
                      config)
    assert (first["pushed"], first["version"], second["version"]) == (True, 1, 2)
    serving = tmp_path / "out" / "serving"
    assert (serving / "1" / "saved_model.pb").exists()
    before = {p: p.stat().st_mtime_ns for p in serving.rglob("*")}
    not_blessed = tmp_path / "nb"
    not_blessed.mkdir()
    (not_blessed / "NOT_BLESSED").write_text("")
    result = run_push(data["model"], data["transform"], data["examples"], str(not_blessed),
                      config)
    assert not result["pushed"] and result["version"] is None
    assert {p: p.stat().st_mtime_ns for p in serving.rglob("*")} == before
    assert sorted(os.listdir(serving)) == ["1", "2"]
    refused = run_push(data["model"], data["transform"], data["examples"], None, config,
                       evaluation={"blessed": False})
    assert not refused["pushed"] and sorted(os.listdir(serving)) == ["1", "2"]
    # The pipeline's push step does not push a trained model a version serves already (after a rollback).
    again = already_serving(data["model"], config)
    assert again is not None and not again["pushed"] and "serving version 1 already" in again["reason"], again
    assert already_serving(str(tmp_path / "another_model"), config) is None
    assert already_serving(data["model"], PushConfig(push_base=str(tmp_path / "empty"))) is None


def test_concurrent_claims_get_distinct_versions(tmp_path):
    serving = tmp_path / "serving"
    serving.mkdir()
    (serving / "3").mkdir()
    (serving / "3" / "saved_model.pb").write_text("old")
    results, barrier = [], threading.Barrier(8)

    def claim(i):
        tmp = serving / f".tmp-{i}"
        tmp.mkdir()
        (tmp / "saved_model.pb").write_text(str(i))
        barrier.wait()
        results.append((i, publish_version(str(tmp), str(serving))))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    versions = sorted(v for _, v in results)
    assert versions == list(range(4, 12))
    assert sorted(os.listdir(serving), key=int) == [str(v) for v in range(3, 12)]
    assert (serving / "3" / "saved_model.pb").read_text() == "old"
    for i, v in results:
        assert (serving / str(v) / "saved_model.pb").read_text() == str(i)


def test_two_concurrent_pushes(data, tmp_path):
    config = PushConfig(push_base=str(tmp_path / "out"))
    results, errors = [], []

    def push():
        try:
            results.append(run_push(data["model"], data["transform"], data["examples"],
                                    data["blessing"], config))
        except Exception as error:  # a thread's exception would otherwise only be a warning
            errors.append("".join(traceback.format_exception(error))[-3000:])

    threads = [threading.Thread(target=push) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(r["version"] for r in results) == [1, 2]
    serving = tmp_path / "out" / "serving"
    assert sorted(os.listdir(serving)) == ["1", "2"]  # no temp folder left behind
    assert list_versions(str(serving)) == [1, 2]


def _registry_config(tmp_path, name="moons_flow"):
    from tfflows.components.train.config import TrackingConfig

    return PushConfig(push_base=str(tmp_path / "out")), TrackingConfig(
        uri=f"sqlite:///{tmp_path / 'mlflow.db'}", registered_model_name=name,
        artifact_location=str(tmp_path / "mlartifacts"))


def test_registry_version_and_champion_alias_moves(data, tmp_path):
    from mlflow.tracking import MlflowClient

    config, tracking = _registry_config(tmp_path)
    first = run_push(data["model"], data["transform"], data["examples"], data["blessing"], config,
                     tracking=tracking)
    client = MlflowClient(tracking_uri=tracking.uri)
    mv = client.get_model_version_by_alias("moons_flow", "champion")
    assert str(mv.version) == first["registered"]["version"] == "1"
    assert float(mv.tags["metric.data_log_likelihood"]) == pytest.approx(
        data["evaluation"]["metrics"]["data_log_likelihood"])
    assert mv.tags["serving_version"] == "1"
    second = run_push(data["model"], data["transform"], data["examples"], data["blessing"],
                      config, tracking=tracking)
    assert str(client.get_model_version_by_alias("moons_flow", "champion").version) == "2"
    assert second["registered"]["version"] == "2"
    # The registered pyfunc loads (alias URI) and matches the in-process log_prob.
    import mlflow

    mlflow.set_tracking_uri(tracking.uri)
    try:
        loaded = mlflow.pyfunc.load_model("models:/moons_flow@champion")
    finally:
        mlflow.set_tracking_uri(None)
    x = data["x"][:5]
    # Columns by name (any order); named outputs (the evaluation calibrated it). An unnamed array is refused.
    import pandas as pd
    from mlflow.exceptions import MlflowException

    by_name = loaded.predict(pd.DataFrame({"x1": x[:, 1], "x0": x[:, 0]}))
    assert list(by_name.columns) == ["log_prob", "percentile"]
    np.testing.assert_allclose(by_name["log_prob"], _expected_log_prob(data, x), rtol=1e-5, atol=1e-5)
    with pytest.raises(MlflowException, match=r"missing inputs \['x0', 'x1'\]"):
        loaded.predict(x)
    assert loaded.metadata.metadata["feature_names"] == ["x0", "x1"]
    assert loaded.metadata.metadata["held_out_quantiles"] == data["evaluation"]["held_out_quantiles"]
