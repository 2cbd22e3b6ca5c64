"""One MLflow story per run, no pickles, TF Serving warm-up requests, the registry workflow.

Real components (ingest, transform, train, evaluate, push) on a tiny moons set, a real sqlite
MLflow store read back with MLflow's own API, fresh processes for loading.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tfflows.components.evaluate import EvaluateConfig, run_evaluate
from tfflows.components.ingest import load_split
from tfflows.components.push import PushConfig, run_push
from tfflows.components.push.export import read_warmup_requests
from tfflows.components.train import TrackingConfig, TrainConfig, run_train

from tests.artifact_testing import prepared_moons

# Real components end to end, then fresh processes and the CLI: minutes, not the edit-test loop.
pytestmark = pytest.mark.slow

TINY = dict(kind="maf", num_layers=2, hidden_units=(8,), batch_size=50, learning_rate=1e-3,
            epochs=2, patience=30, seed=3, log_every_steps=100)


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    """train -> evaluate -> push twice (two blessed versions) with one sqlite store under `out`."""
    root = tmp_path_factory.mktemp("story")
    out = root / "tfflows_output"  # the default run's output folder, as seen from `root`
    ex, tg = prepared_moons(root, num_samples=300, seed=4)
    tracking = TrackingConfig(uri=f"sqlite:///{out}/mlflow.db", experiment="story",
                              registered_model_name="moons", run_name="train")
    model = str(root / "model")
    summary = run_train(ex, tg, model, TrainConfig(**TINY), tracking)
    pushes = []
    for i in range(2):
        evaluation = run_evaluate(ex, tg, model, EvaluateConfig(), str(root / f"eval{i}"), tracking=tracking)
        pushes.append(run_push(model, tg, ex, None, PushConfig(push_base=str(out)), evaluation=evaluation,
                               tracking=tracking))
    return {"root": root, "out": out, "tracking": tracking, "summary": summary, "evaluation": evaluation,
            "pushes": pushes, "examples": ex}


def _client(tracking):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking.uri)


def test_one_training_run_holds_params_metrics_inputs_and_the_model(story):
    client = _client(story["tracking"])
    experiment = client.get_experiment_by_name("story")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1  # evaluate and push logged into the training run: no orphan runs
    run = runs[0]
    assert run.info.run_id == story["summary"].mlflow_run_id and run.info.run_name == "train"
    assert run.data.params["train.learning_rate"] == "0.001"
    assert {"val_log_likelihood", "test_data_log_likelihood", "blessed"} <= set(run.data.metrics)
    contexts = {i.dataset.name: [t.value for t in i.tags if t.key == "mlflow.data.context"]
                for i in run.inputs.dataset_inputs}
    assert sorted(c for values in contexts.values() for c in values) == ["eval", "test", "train"]
    fingerprint = story["summary"].data_fingerprint
    assert {i.dataset.digest for i in run.inputs.dataset_inputs} == {fingerprint[:36]}
    # Two blessed pushes: two LoggedModels of this run, each with the evaluation metrics linked.
    models = client.search_logged_models([experiment.experiment_id])
    assert len(models) == 2 and {m.source_run_id for m in models} == {run.info.run_id}
    assert {m.status.to_proto() for m in models} == {models[0].status.READY.to_proto()}
    for m in models:
        assert "test_data_log_likelihood" in {x.key for x in m.metrics}
    assert run.data.tags["push.serving_version"] == "2" and run.data.tags["push.registered_version"] == "2"
    # Registry: versions point back at the run and its model; the alias names the newest push.
    champion = client.get_model_version_by_alias("moons", "champion")
    assert str(champion.version) == "2" and champion.run_id == run.info.run_id
    assert f"/models/{run.data.tags['push.model_id']}/artifacts" in champion.source
    assert champion.tags["serving_version"] == "2"
    assert float(champion.tags["metric.data_log_likelihood"]) == pytest.approx(
        story["evaluation"]["metrics"]["data_log_likelihood"])


def test_every_artifact_root_is_under_the_output(story):
    client = _client(story["tracking"])
    out = str(story["out"])
    for experiment in client.search_experiments():  # "Default" included
        assert experiment.artifact_location.replace("file://", "").startswith(out), experiment
    assert not (Path.cwd() / "mlruns").exists()


def test_no_pickle_anywhere_in_the_store(story):
    files = [p for p in story["out"].rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".pkl", ".pickle")]
    mlmodels = [p for p in files if p.name == "MLmodel"]
    assert len(mlmodels) == 2
    import yaml

    pyfunc = yaml.safe_load(mlmodels[0].read_text())["flavors"]["python_function"]
    assert pyfunc["model_code_path"].endswith("pyfunc.py") and "python_model" not in pyfunc
    requirements = (mlmodels[0].parent / "requirements.txt").read_text().split()
    assert {r.split("==")[0] for r in requirements} == {"mlflow", "tensorflow", "numpy", "pandas"}  # what pyfunc.py imports
    assert all("==" in r for r in requirements)


def test_champion_loads_without_pickle_in_a_fresh_process(story):
    x = load_split(story["examples"], "test")[:4]
    expected = read_warmup_requests(story["pushes"][1]["destination"])  # noqa: F841 - the file exists
    script = (
        "import json, sys, numpy as np, pandas as pd, mlflow\n"
        "mlflow.set_tracking_uri(sys.argv[1])\n"
        "m = mlflow.pyfunc.load_model('models:/moons@champion')\n"
        "x = pd.DataFrame(np.asarray(json.loads(sys.argv[2]), np.float32), columns=['x0', 'x1'])\n"
        "lp = m.predict(x)['log_prob']\n"
        "s = m.predict(x[:1], params={'signature_name': 'sample', 'num_samples': 3, 'seed': [1, 2]})\n"
        "sig = m.metadata.signature\n"
        "print(json.dumps({'lp': np.asarray(lp).tolist(), 'shape': list(np.shape(s)),\n"
        "                  'inputs': sig.inputs.to_dict(), 'params': [p.name for p in sig.params]}))\n")
    env = dict(os.environ, MLFLOW_ALLOW_PICKLE_DESERIALIZATION="false")
    proc = subprocess.run([sys.executable, "-c", script, story["tracking"].uri, json.dumps(x.tolist())],
                          capture_output=True, text=True, timeout=300, env=env, cwd=str(story["root"]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    import tensorflow as tf

    served = tf.saved_model.load(story["pushes"][1]["destination"])
    np.testing.assert_allclose(out["lp"], served.signatures["log_prob"](x=tf.constant(x))["log_prob"].numpy(),
                               rtol=1e-5, atol=1e-5)
    assert out["shape"] == [3, 2]
    assert out["inputs"] == [{"type": "double", "name": n, "required": True} for n in ("x0", "x1")]
    assert out["params"] == ["signature_name", "num_samples", "seed"]


def test_warmup_requests_parse_and_run_in_a_fresh_process(story):
    destination = story["pushes"][0]["destination"]
    requests = read_warmup_requests(destination)
    assert [name for name, _ in requests] == ["log_prob", "sample"]
    np.testing.assert_array_equal(dict(requests)["log_prob"]["x"], load_split(story["examples"], "test")[:3])
    script = (
        "import sys, tensorflow as tf\n"
        "from tensorflow_serving.apis import prediction_log_pb2\n"
        "m = tf.saved_model.load(sys.argv[1])\n"
        "path = sys.argv[1] + '/assets.extra/tf_serving_warmup_requests'\n"
        "for record in tf.data.TFRecordDataset(path).as_numpy_iterator():\n"
        "    request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request\n"
        "    inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}\n"
        "    out = m.signatures[request.model_spec.signature_name](**inputs)\n"
        "    print(request.model_spec.signature_name, {k: list(v.shape) for k, v in out.items()},\n"
        "          bool(tf.reduce_all(tf.math.is_finite(list(out.values())[0]))))\n")
    proc = subprocess.run([sys.executable, "-c", script, destination], capture_output=True, text=True,
                          timeout=300, cwd=str(story["root"]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-2:] == ["log_prob {'log_prob': [3]} True",
                                                     "sample {'samples': [2, 2]} True"]


def test_serving_config_labels_the_newest_blessed_push_stable(story):
    text = (story["out"] / "models.config").read_text()
    assert 'version_labels { key: "stable" value: 2 }' in text
    assert f'base_path: "{story["out"]}/serving"' in text and "canary" not in text


def test_evaluate_accepts_the_champion_by_registry_uri(story):
    rows = story["root"] / "rows.npy"
    np.save(rows, load_split(story["examples"], "test")[:5])
    proc = subprocess.run([sys.executable, "-m", "tfflows.pipeline.cli", "evaluate", "--model", "models:/moons@champion",
                           "--data", str(rows)], capture_output=True, text=True, timeout=300, cwd=str(story["root"]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rows: 5" in proc.stdout and "log-likelihood" in proc.stdout
    missing = subprocess.run([sys.executable, "-m", "tfflows.pipeline.cli", "evaluate", "--model", "models:/nope@champion",
                              "--data", str(rows)], capture_output=True, text=True, timeout=300, cwd=str(story["root"]))
    assert missing.returncode == 2 and "models:/nope@champion: not found" in missing.stderr
