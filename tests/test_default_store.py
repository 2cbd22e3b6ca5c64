"""The MLflow store of a default run (issue #17, "done when"): `tfflows run` with the embedded
defaults, made tiny by `--set`, writes `<output>/mlflow.db` and `<output>/mlartifacts/`; opened with
MLflow's own API they hold one story: one training run with parameters, metrics and dataset
inputs, its LoggedModel, and the registry version and `champion` alias pointing back at both. The
model loads with pickle loading disabled and has a signature; no pickle file is in the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


NAME = "tfflows"  # the pipeline's name: the default experiment and registered model


@pytest.mark.slow
def test_default_run_store_tells_one_story(default_run, tmp_path):
    from mlflow.tracking import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    output, result = default_run  # conftest's: the one default run, shared with tests that only read it
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    uri = f"sqlite:///{output}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)

    experiment = client.get_experiment_by_name(NAME)
    (run,) = client.search_runs([experiment.experiment_id])  # evaluate and push logged into it
    run_id = run.info.run_id
    assert run_id in result.stdout  # the run the CLI names
    assert run.data.params["train.epochs"] == "2" and run.data.params["data.name"] == "moons"
    fingerprint = run.data.params["data.fingerprint"]
    assert {"val_log_likelihood", "test_data_log_likelihood"} <= set(run.data.metrics)
    contexts = sorted(tag.value for i in run.inputs.dataset_inputs for tag in i.tags if tag.key == "mlflow.data.context")
    assert contexts == ["eval", "test", "train"]
    assert {i.dataset.digest for i in run.inputs.dataset_inputs} == {fingerprint[:36]}

    (model,) = client.search_logged_models([experiment.experiment_id])
    assert model.source_run_id == run_id and model.status.to_proto() == model.status.READY.to_proto()
    assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]
    assert "test_data_log_likelihood" in {m.key for m in model.metrics}

    # The registry: the champion is the one version, of this run and this model.
    champion = client.get_model_version_by_alias(NAME, "champion")
    assert [v.version for v in client.search_model_versions(f"name='{NAME}'")] == [champion.version]
    assert champion.run_id == run_id and champion.source == model.artifact_location
    # MLflow 3.17's SQL registry does not store a version's model_id (its model_versions table
    # has no such column; `mlflow.register_model("models:/<id>")` gives None too): the LoggedModel's
    # mlflow.modelVersions tag is the link MLflow keeps, and it names this version.
    assert champion.model_id in (None, model.model_id)
    assert json.loads(model.tags[MLFLOW_MODEL_VERSIONS]) == [{"name": NAME, "version": int(champion.version)}]

    for listed in client.search_experiments():  # "Default" included
        assert listed.artifact_location.removeprefix("file://").startswith(str(output)), listed
    stored = [p for p in output.rglob("*") if p.is_file()]
    assert not [p for p in stored if p.suffix in (".pkl", ".pickle")]

    # Loaded as a deployment would, in a fresh process that refuses pickles.
    script = (
        "import json, sys, numpy as np, mlflow\n"
        "mlflow.set_tracking_uri(sys.argv[1])\n"
        f"m = mlflow.pyfunc.load_model('models:/{NAME}@champion')\n"
        "lp = m.predict({'x0': np.zeros(3), 'x1': np.zeros(3)})['log_prob']\n"
        "print(json.dumps({'lp': np.asarray(lp).tolist(), 'inputs': m.metadata.signature.inputs.to_dict(),\n"
        "                  'model_id': m.model_id}))\n")
    env = dict(os.environ, MLFLOW_ALLOW_PICKLE_DESERIALIZATION="false")
    proc = subprocess.run([sys.executable, "-c", script, uri], capture_output=True, text=True, timeout=600,
                          env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(loaded["lp"]) == 3 and all(isinstance(v, float) for v in loaded["lp"])
    assert loaded["inputs"] == [{"type": "double", "name": n, "required": True} for n in ("x0", "x1")]
    assert loaded["model_id"] == model.model_id
