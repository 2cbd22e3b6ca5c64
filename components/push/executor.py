"""Push executor logic as plain functions: blessed flow -> ``<push_base>/serving/<version>/``.

``push_base`` is a local folder or an object-store URI (``s3://bucket/prefix``,
``gs://bucket/prefix``). The SavedModel is exported to a local folder first, then published
as the next free version by `components.artifacts.publish_version`: a rename on POSIX, a
create-if-absent marker object on an object store. Two concurrent pushes never share a version,
readers never see a half-written version, and an existing version is never overwritten.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Optional

from tfflows.components import artifacts
from tfflows.components.flow_artifact import read_summary
from tfflows.components.ingest import load_split, read_metadata
from tfflows.components.push.config import PushConfig
from tfflows.components.push.export import WARMUP_ROWS, export_saved_model
from tfflows.components.push.registry import register_push, write_serving_config
from tfflows.components.run_info import version_identity

__all__ = ["already_serving", "run_push"]


def _identity(model_uri: str, examples_uri: Optional[str], evaluation: Optional[dict]) -> dict:
    """The registry version's tags and description (`run_info.version_identity`)."""
    summary = read_summary(model_uri)
    return version_identity(summary.kind, read_metadata(examples_uri) if examples_uri else None, evaluation,
                            summary.train_config.target if summary.train_config else None)


def _store_on_this_machine(tracking) -> bool:
    """Whether the registry is a store on this machine (``sqlite:``, ``file:``, a path): failing to
    write it (a full disk, permissions) is this push's failure, rolled back. A server that is down
    (MLflow's, a database's) is an outage a push survives unregistered, as training does."""
    uri = tracking.registry_uri or tracking.uri or ""
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def already_serving(model_uri: str, config: PushConfig) -> Optional[dict]:
    """`run_push`'s result for a trained model a version under ``config.push_base`` serves already
    (not pushed again), or None. A pipeline reaches push with such a model only when evaluate ran
    again against a champion moved off it (a rollback): pushing it again would undo the rollback
    under a new number."""
    served = artifacts.version_of_model(config.push_base, model_uri) if config.push_base else None
    if served is None:
        return None
    return {"pushed": False, "version": None, "destination": None, "registered": None,
            "reason": f"this trained model is serving version {served} already, and the champion was moved "
                      "off it; `tfflows promote` serves it again"}


def run_push(model_uri: str, transform_graph_uri: Optional[str], examples_uri: Optional[str],
             blessing_uri: Optional[str], config: PushConfig,
             evaluation: Optional[dict] = None, tracking=None, champion: Optional[dict] = None) -> dict:
    """Pushes a blessed flow as the next serving version and registers it.

    Args:
      model_uri: trained flow.
      transform_graph_uri: its TransformGraph artifact (None: a flow fitted to a target).
      examples_uri: the Examples artifact (for the dataset metadata; None: a flow fitted to a
        target).
      blessing_uri: the ModelBlessing folder (``BLESSED`` / ``NOT_BLESSED``), or None.
      config: where to push and how to register.
      evaluation: the `run_evaluate` result; when given, its ``blessed`` decides and its
        metrics tag the registry version (else ``evaluation.json`` beside the blessing).
      tracking: `TrackingConfig`: the pushed model is logged to the training's MLflow run,
        registered and given the alias (never failing the push); None: no MLflow.
      champion: the champion the model was evaluated against (its push record, pinned when the
        pipeline was built), recorded as the version's ``baseline``: a re-run of the same training
        is then pinned to it again (`pipeline.pipeline`) and reused, not compared with itself.

    Returns:
      ``{"pushed": bool, "version": int | None, "destination": str | None,
      "registered": {...} | None, "reason": str}``. A model that is not blessed is not
      pushed and nothing under ``push_base`` changes.
    """
    evaluation_file: Optional[dict]
    if evaluation is not None:
        blessed, evaluation_file = bool(evaluation.get("blessed")), evaluation
    else:
        blessed = blessing_uri is not None and artifacts.read_blessing(blessing_uri)
        evaluation_file = artifacts.read_evaluation(blessing_uri) if blessing_uri else None
    if not blessed:
        return {"pushed": False, "version": None, "destination": None, "registered": None,
                "reason": "model not blessed"}
    push_base = config.push_base
    if push_base is None:
        raise ValueError("`push.push_base` is not set: a blessed model has nowhere to go")
    serving_dir = artifacts.join(push_base, artifacts.SERVING_DIR)
    tmp_dir = artifacts.local_export_dir(serving_dir)
    try:
        export_saved_model(model_uri, transform_graph_uri,
                           read_metadata(examples_uri) if examples_uri else None, tmp_dir,
                           importance_samples=config.importance_samples,
                           rows=load_split(examples_uri, "test")[:WARMUP_ROWS] if examples_uri else None,
                           calibration=(evaluation_file or {}).get("held_out_quantiles"))
        with open(os.path.join(tmp_dir, artifacts.PUSH_INFO), "w") as f:
            # The evaluation's metrics travel with the version: the next run's drift check compares
            # the champion's score on new data with its own test score.
            json.dump({"model_uri": model_uri, "transform_graph_uri": transform_graph_uri,
                       "examples_uri": examples_uri, "metrics": (evaluation_file or {}).get("metrics") or {},
                       "baseline": champion}, f, indent=2)
        version = artifacts.publish_version(tmp_dir, serving_dir, config.max_version_attempts)
        destination = artifacts.join(serving_dir, str(version))
        registered = None
        # A version the registry does not know (a full disk, a store that cannot be written) is
        # withdrawn, and the failure says so: the serving folder and the registry always agree.
        with artifacts.withdrawn_on_failure(push_base, version):
            write_serving_config(push_base, config.model_name, version)  # TF Serving's `stable`: the new version
            if tracking is not None and tracking.active:
                # The registry uploads a local folder: the export itself when it went to an object store.
                local_dir = tmp_dir if artifacts.is_object_store(destination) else destination
                registered = register_push(tracking, model_uri, local_dir, version, destination,
                                           dict((evaluation_file or {}).get("metrics") or {}),
                                           _identity(model_uri, examples_uri, evaluation_file),
                                           required=_store_on_this_machine(tracking))
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)  # a published POSIX export is gone already
    return {"pushed": True, "version": version, "destination": destination,
            "registered": registered, "reason": "blessed"}
