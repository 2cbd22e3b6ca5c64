"""MLflow Model Registry: one pushed SavedModel -> a new registered version + alias.

Uses `MlflowClient` only (no fluent API, so no process-wide tracking URI is set): the pyfunc
model is saved to a temporary folder, uploaded as the artifacts ``flow/`` of a new run, and
registered from there.
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import Optional

__all__ = ["register_pushed_model"]

ARTIFACT_PATH = "flow"


def register_pushed_model(saved_model_dir: str, config, metrics: Optional[dict] = None,
                          tags: Optional[dict] = None) -> dict:
    """Logs the pyfunc wrapper of ``saved_model_dir`` and registers it as a new version.

    The version gets the metrics as tags (``metric.<name>``) plus ``tags``; ``config.alias``
    (``champion``) is moved to it.

    Returns:
      ``{"name", "version", "run_id", "model_uri"}`` (``model_uri`` = ``models:/name/version``).
    """
    import cloudpickle
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from tfflows.components.push import pyfunc

    cloudpickle.register_pickle_by_value(pyfunc)  # the served model needs no project code
    name = config.registered_model_name
    client = MlflowClient(tracking_uri=config.tracking_uri,
                          registry_uri=config.registry_uri or config.tracking_uri)
    experiment = client.get_experiment_by_name(config.experiment_name)
    experiment_id = (experiment.experiment_id if experiment is not None
                     else client.create_experiment(config.experiment_name,
                                              artifact_location=config.artifact_location))
    run = client.create_run(experiment_id, run_name="push")
    run_id = run.info.run_id
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, ARTIFACT_PATH)
            mlflow.pyfunc.save_model(
                local, python_model=pyfunc.FlowPyfuncModel(),
                artifacts={"saved_model": saved_model_dir},
                pip_requirements=["tensorflow", "numpy", "pandas", "mlflow"])
            client.log_artifacts(run_id, local, ARTIFACT_PATH)
        for key, value in (metrics or {}).items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                client.log_metric(run_id, key, float(value))
        client.set_terminated(run_id)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    try:
        client.create_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{ARTIFACT_PATH}"
    version = str(client.create_model_version(name, source, run_id=run_id).version)
    for key, value in (metrics or {}).items():
        if value is not None:
            client.set_model_version_tag(name, version, f"metric.{key}", str(value))
    for key, value in (tags or {}).items():
        client.set_model_version_tag(name, version, key, str(value))
    client.set_registered_model_alias(name, config.alias, version)
    return {"name": name, "version": version, "run_id": run_id,
            "model_uri": f"models:/{name}/{version}"}
