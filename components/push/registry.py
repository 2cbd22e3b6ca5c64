"""MLflow side of a push: the pushed SavedModel as an MLflow model of the TRAINING run, its
registry version, the ``champion`` alias and TF Serving's ``stable``/``canary`` version labels.

One story per run: the pyfunc (`pyfunc.py`, models-from-code: no pickle) is logged as an MLflow 3
LoggedModel whose source run is the training run (the evaluation metrics of that run, logged at
step 0, are linked to the model); the registry version points at the same run and at the model's
artifacts, and the model's ``mlflow.modelVersions`` tag names the version; the push is recorded on
the run as ``push.*`` tags. Only `MlflowClient` calls (through
`components.tracking.Tracker`): no process-wide tracking URI is set.

Registry workflow: a blessed push moves the alias (``TrackingConfig.alias``) to its version;
`set_champion` (`components.push.champion`, which loads neither TensorFlow nor MLflow) moves it
on request (`tfflows promote --version N`, `tfflows rollback`). Either rewrites ``<push_base>/models.config``, the TF Serving model config whose ``stable`` label names
the champion's serving version and ``canary`` the newest pushed one (when newer).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import tempfile
from typing import List, Optional, Tuple

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

from tfflows.components import artifacts
# The TF Serving config belongs to the serving layout (`components.artifacts`); re-exported here.
from tfflows.components.artifacts import SERVING_CONFIG_FILE, write_serving_config
from tfflows.components.errors import RegistrationError
from tfflows.components.flow_artifact import read_summary
from tfflows.components.push import pyfunc
from tfflows.components.push.champion import describe, previous_version, set_champion
from tfflows.components.push.export import categorical_names, context_names, feature_names, read_warmup_requests
from tfflows.components.tracking import Tracker

__all__ = ["MODEL_NAME", "RegistrationError", "SERVING_CONFIG_FILE", "describe", "log_and_register", "previous_version", "register_push", "set_champion",
           "write_serving_config"]

MODEL_NAME = "flow"  # the LoggedModel's name in its run


def _signature(names: List[str], outputs: List[str], categorical: List[str]):
    """Column-based (named inputs, named outputs): what `pyfunc.py` serves, and what MLflow's
    ``dataframe_split`` / ``dataframe_records`` request formats need; a mixed density's
    ``categorical`` columns are strings."""
    return ModelSignature(
        inputs=Schema([ColSpec("double" if name in names else "string", name) for name in names + categorical]),
        outputs=Schema([ColSpec("float", name) for name in outputs]),
        params=ParamSchema([ParamSpec("signature_name", "string", "score"),
                            ParamSpec("num_samples", "long", 1),
                            ParamSpec("seed", "long", [0, 0], (-1,))]))


def _requirements() -> List[str]:
    """Exact versions of what the served model imports (tested together)."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in ("mlflow", "tensorflow", "numpy", "pandas")]


def _link_evaluation_metrics(client, run_id: str, model_id: str) -> None:
    """The run's step-0 metrics (the evaluation's) linked to the model; same timestamps, so the
    run's history gains no duplicate points."""
    linked = []
    for key in client.get_run(run_id).data.metrics:
        linked += [Metric(m.key, m.value, m.timestamp, m.step, model_id=model_id, run_id=run_id)
                   for m in client.get_metric_history(run_id, key) if m.step == 0 and m.model_id is None]
    if linked:
        client.log_batch(run_id, metrics=linked)


def _log_model(tracker, run_id: str, saved_model_dir: str, rows: np.ndarray) -> Tuple[str, str]:
    """The pyfunc of ``saved_model_dir`` as a READY LoggedModel of ``run_id``: (model id, artifact location)."""
    client = tracker.client
    run = client.get_run(run_id)
    model = client.create_logged_model(run.info.experiment_id, name=MODEL_NAME, source_run_id=run_id,
                                       params=dict(run.data.params), tags={"flavor": "python_function"})
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, MODEL_NAME)
        meta = Model(artifact_path=model.artifact_location, model_uuid=model.model_id, run_id=run_id,
                     model_id=model.model_id)
        # The model's columns and its held-out quantiles (percentiles, `q` thresholds) travel in MLmodel too.
        info = artifacts.read_json(os.path.join(saved_model_dir, artifacts.METADATA_FILE)) or {}
        names, calibration = feature_names(info, rows.shape[1]), info.get("held_out_quantiles")
        # The inputs by name: its features, then its numeric context; its string columns (a categorical
        # context's, then a mixed density's categories)
        numeric, categorical = artifacts.input_columns(info, rows.shape[1])
        outputs = ["log_prob", "percentile"] if calibration else ["log_prob"]
        example = pd.DataFrame(rows[:3], columns=numeric)
        for name, vocabulary in artifacts.input_vocabularies(info).items():  # each column's most frequent category
            example[name] = vocabulary[0]
        mlflow.pyfunc.save_model(
            local, python_model=pyfunc.__file__, artifacts={"saved_model": saved_model_dir},
            signature=_signature(numeric, outputs, categorical), input_example=example,
            pip_requirements=_requirements(), mlflow_model=meta,
            metadata={"feature_names": names, "context_names": context_names(info),
                      "categorical_names": categorical_names(info),
                      "held_out_quantiles": calibration})
        client.log_model_artifacts(model.model_id, local)
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    _link_evaluation_metrics(client, run_id, model.model_id)
    return model.model_id, model.artifact_location


def _keeping(failures: list, fn):
    """``fn``, whose exception is also appended to ``failures``: the tracker's guard logs and
    swallows it, and a push that must be registered chains its error to it (so that a full disk is
    named as such on the failure line)."""
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            failures.append(error)
            raise
    return call


def log_and_register(tracker, saved_model_dir: str, rows: np.ndarray, serving_version: int,
                     destination: str, metrics: Optional[dict] = None,
                     identity: Optional[dict] = None, failures: Optional[list] = None) -> Optional[dict]:
    """Logs the pushed model to the tracker's run, registers it and moves the alias to it.

    Args:
      tracker: a `components.tracking.Tracker` on the training run (or on a run opened for this
        push when the training was not tracked).
      saved_model_dir: the pushed version's folder.
      rows: a few raw rows (the model's input example).
      serving_version: the TF Serving version (a version tag).
      destination: its folder (a version tag).
      metrics: the evaluation's metrics, as ``metric.<name>`` version tags.
      identity: ``{"tags", "description"}`` of the version (`components.run_info.version_identity`:
        kind, data, span, blessing).
      failures: collects the exceptions behind what was not logged.

    Returns:
      ``{"name", "version", "run_id", "model_id", "model_uri"}`` (``model_uri`` =
      ``models:/name/version``), or None when nothing was registered (the tracker logged why).
    """
    config = tracker.config
    run_id = tracker.run_id
    failures = [] if failures is None else failures
    logged = tracker.guard("the pushed model", _keeping(failures, _log_model), tracker, run_id, saved_model_dir, rows)
    if logged is None or not config.registered_model_name:
        return None
    model_id, source = logged

    def _register():
        client, name = tracker.client, config.registered_model_name
        try:
            client.create_registered_model(name)
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        tags = {f"metric.{k}": str(v) for k, v in (metrics or {}).items() if v is not None}
        tags.update(serving_version=str(serving_version), serving_destination=destination,
                    **(identity or {}).get("tags", {}))
        # The source is the model's own artifact folder: a models:/<id> source would be resolved
        # through MLflow's process-wide tracking URI, which this helper never sets.
        version = str(client.create_model_version(name, source, run_id=run_id, tags=tags, model_id=model_id,
                                                  description=(identity or {}).get("description")).version)
        # MLflow's SQL registry (sqlite included) drops the version's model_id; the LoggedModel's
        # `mlflow.modelVersions` tag is the link it keeps, written as `mlflow.register_model` does.
        linked = json.loads(client.get_logged_model(model_id).tags.get(MLFLOW_MODEL_VERSIONS, "[]"))
        try:
            client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(
                linked + [{"name": name, "version": int(version)}])})
            client.set_registered_model_alias(name, config.alias, version)
        except Exception:  # half a registration is none: a push rolled back leaves no version behind
            client.delete_model_version(name, version)
            raise
        return {"name": name, "version": version, "run_id": run_id, "model_id": model_id,
                "model_uri": f"models:/{name}/{version}"}

    registered = tracker.guard("the registry version", _keeping(failures, _register))
    tracker.set_tags({"push.serving_version": serving_version, "push.destination": destination,
                      "push.model_id": model_id,
                      "push.registered_version": registered["version"] if registered else "not registered"})
    return registered


def register_push(tracking, model_uri: str, saved_model_dir: str, serving_version: int, destination: str,
                  metrics: Optional[dict] = None, identity: Optional[dict] = None,
                  required: bool = False) -> Optional[dict]:
    """`log_and_register` on the training's run (the model summary's ``mlflow_run_id``), or on a
    ``push`` run of its own when the training was not tracked. MLflow is optional to a push (one
    warning line says what was not logged), unless ``required``: then a registration that did not
    happen raises `RegistrationError`, chained to its cause, and the push is rolled back."""
    run_id = read_summary(model_uri).mlflow_run_id
    tracker = Tracker(tracking, run_id=run_id, what="push")
    failures: list = []
    if tracker.start_run(run_name="push", resume=False) is None:
        tracker.report()
        _check_registered(None, required, tracker, destination, failures)
        return None
    warmup = dict(read_warmup_requests(saved_model_dir))["log_prob"]
    # The input example: the warm-up rows, with their contexts for a conditional model.
    rows = np.hstack([warmup["x"], warmup["context"]]) if "context" in warmup else warmup["x"]
    registered = log_and_register(tracker, saved_model_dir, rows, serving_version, destination, metrics, identity,
                                  failures)
    _check_registered(registered, required, tracker, destination, failures)
    if registered is not None:
        tracker.add_to_description(f"Pushed as serving version {serving_version}, registered as "
                                   f"{registered['name']} version {registered['version']}.")
    if run_id is None:
        tracker.end()
    else:
        tracker.report()
    return registered


def _check_registered(registered: Optional[dict], required: bool, tracker, destination: str, failures: list) -> None:
    """Raises `RegistrationError` when a ``required`` registration of a named model did not happen."""
    if registered is None and required and tracker.config.registered_model_name:
        raise RegistrationError(f"{destination}: not registered in the MLflow store {tracker.config.uri} "
                                f"({', '.join(dict.fromkeys(tracker.not_logged))} not logged: the warning above says "
                                "why); fix: make that store writable (free space, permissions) and run again") from (
                                    failures[-1] if failures else None)
