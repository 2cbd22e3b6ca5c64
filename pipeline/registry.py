"""The registry side of the command line: `tfflows promote --version N`, `tfflows rollback`, and
``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` as a model for `tfflows evaluate` and `sample`.

A blessed push moves the alias (``tracking.alias``, ``champion``) to its version; these commands
move it on request and rewrite ``<push base>/models.config`` (TF Serving's ``stable`` label = the
champion's serving version, ``canary`` = the newest pushed version when it is newer), so the
registry and the TF Serving labels never disagree. This module loads MLflow at import (the CLI
imports it after the configuration is checked, `pipeline/cli.py`) but not TFX or TensorFlow: the
commands answer in a second or two.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile

import mlflow.artifacts
from mlflow.tracking import MlflowClient

from tfflows.components import artifacts
from tfflows.components.push.champion import describe, previous_version, set_champion
from tfflows.components.tracking import Tracker
from tfflows.components.train.config import TrackingConfig
from tfflows.pipeline.config import ConfigError, RunConfig
from tfflows.pipeline.config import tracking_uri as output_tracking_uri

__all__ = ["promote", "registered_model_dir", "resolved_tracking", "rollback", "store_uri"]

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def resolved_tracking(config: RunConfig, tracking_uri: str) -> TrackingConfig:
    """The run's one tracking configuration: the MLflow store (`tracking_uri`), the experiment and
    registered model named after the pipeline unless the section names them, and for the embedded
    ``sqlite:`` store an artifact root under the output (``<output>/mlartifacts``, in the bucket
    for an output on one while the store itself stays local)."""
    given = config.tracking
    return dataclasses.replace(
        given, uri=tracking_uri,
        experiment=given.experiment if given.experiment != TrackingConfig.experiment else config.pipeline_name,
        registered_model_name=given.registered_model_name or config.pipeline_name,
        artifact_location=given.artifact_location or (
            config.output_path("mlartifacts") if tracking_uri.startswith("sqlite:") else None))


def _require_store(tracking_uri: str, subject: str, fix: str = "pass the run's --output or --tracking-uri") -> None:
    """Refuses an ``sqlite:///`` store whose file does not exist: MLflow would create an empty one
    there (a registry change or a registry URI on a mistyped --output must not leave a store behind)."""
    store = tracking_uri.removeprefix("sqlite:///") if tracking_uri.startswith("sqlite:///") else None
    if store is not None and not os.path.isfile(store):
        raise FileNotFoundError(f"{subject}: no MLflow store at {store}; fix: {fix}")


def _tracker(config: RunConfig, subject: str):
    _require_store(output_tracking_uri(config), subject)
    tracking = resolved_tracking(config, output_tracking_uri(config))
    if not tracking.active:
        raise ConfigError("tracking is disabled (tracking.enabled=false): there is no registry to change")
    return Tracker(tracking, what="registry change")


def _move(config: RunConfig, version_of, subject: str) -> str:
    tracker = _tracker(config, subject)
    if tracker.client is None:
        raise ConfigError(f"MLflow at {tracker.config.uri} is not reachable; nothing was changed")
    try:
        version = version_of(tracker)
        push_base = config.push.push_base or config.output
        latest = (artifacts.list_versions(artifacts.join(push_base, artifacts.SERVING_DIR)) or [None])[-1]
        return describe(set_champion(tracker, version, push_base, latest))
    except ValueError as err:
        raise ConfigError(str(err)) from err
    except Exception as err:  # noqa: BLE001 - MLflow's RESOURCE_DOES_NOT_EXIST and friends, as one line
        raise ConfigError(f"registered model {tracker.config.registered_model_name!r}: "
                          f"{str(err).splitlines()[0]}") from err


def promote(config: RunConfig, version: int) -> str:
    """Moves the alias to registered ``version`` (and TF Serving's ``stable`` label with it)."""
    return _move(config, lambda tracker: str(int(version)), f"promote --version {version}")


def rollback(config: RunConfig) -> str:
    """Moves the alias back to the highest registered version below the current one."""
    return _move(config, lambda tracker: previous_version(
        tracker.client, tracker.config.registered_model_name, tracker.config.alias), "rollback")


def store_uri(tracking_uri: str | None, environ_uri: str | None, output: str | None) -> str:
    """The MLflow store that ``models:/...`` URIs, `promote` and `rollback` use, in this order:
    ``--tracking-uri``, the ``MLFLOW_TRACKING_URI`` the CLI read (``environ_uri``), the run's own
    store under ``--output`` (default ``tfflows_output``): the store the model was registered in."""
    return tracking_uri or environ_uri or output_tracking_uri(RunConfig(output=output or RunConfig.output))


def registered_model_dir(uri: str, tracking_uri: str | None = None) -> str:
    """A local copy of the SavedModel behind ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``.

    ``tracking_uri`` None: the default run's store (``tfflows_output/mlflow.db`` in the current
    folder)."""
    match = _MODELS_URI.match(uri)
    if not match:
        raise FileNotFoundError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    tracking_uri = tracking_uri or output_tracking_uri(RunConfig())
    _require_store(tracking_uri, uri, "pass the run's --output or --tracking-uri, or the pushed SavedModel folder "
                   "(serving/<version>)")
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        version = (client.get_model_version_by_alias(match["name"], match["alias"]) if match["alias"]
                   else client.get_model_version(match["name"], match["version"]))
        location = version.source  # the pushed model's own artifact folder (`register_push`)
    except Exception as err:  # noqa: BLE001 - not found, no registry, no store: one line
        raise FileNotFoundError(f"{uri}: not found in {tracking_uri} ({str(err).splitlines()[0]})") from err
    local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=tempfile.mkdtemp(prefix="tfflows-model-"),
                                                tracking_uri=tracking_uri)
    # The pyfunc keeps the SavedModel among its artifacts (pyfunc.py's ``saved_model``).
    found = [root for root, _, files in os.walk(local) if "saved_model.pb" in files]
    if not found:
        raise FileNotFoundError(f"{uri}: the registered model holds no SavedModel")
    return found[0]
