"""Push executor logic as plain functions: blessed flow -> ``<push_base>/serving/<version>/``.

Versions are claimed atomically: the SavedModel is exported to a temporary folder inside
``<push_base>/serving/`` whose name is not an integer (``.tmp-<uuid>``, which TF Serving
ignores), then ``os.rename``-d to ``max existing version + 1``. The rename is the claim:
renaming a folder onto an existing non-empty folder fails, so a push that loses a race
retries with the next number. Two concurrent pushes never share a version, readers never see
a half-written version, and an existing version is never overwritten. (POSIX local or
network file systems; object stores have no atomic rename.)
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from typing import Optional

from tfflows.components.push.config import PushConfig

__all__ = ["SERVING_DIR", "current_pushed_model", "list_versions", "publish_version",
           "run_push"]

SERVING_DIR = "serving"
PUSH_INFO = os.path.join("assets.extra", "tfflows_push.json")


def list_versions(serving_dir: str) -> list:
    """The integer version folders under ``serving_dir``, ascending (temp folders ignored)."""
    if not os.path.isdir(serving_dir):
        return []
    return sorted(int(n) for n in os.listdir(serving_dir)
                  if n.isdigit() and os.path.isdir(os.path.join(serving_dir, n)))


def publish_version(tmp_dir: str, serving_dir: str, max_attempts: int = 100) -> int:
    """Renames ``tmp_dir`` to the next free integer version under ``serving_dir``."""
    for _ in range(max_attempts):
        version = (list_versions(serving_dir) or [0])[-1] + 1
        try:
            os.rename(tmp_dir, os.path.join(serving_dir, str(version)))
            return version
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    raise RuntimeError(f"{serving_dir}: could not claim a version in {max_attempts} attempts")


def current_pushed_model(push_base: str) -> Optional[str]:
    """The trained-model URI of the highest pushed version (the evaluator's baseline), or None."""
    serving_dir = os.path.join(push_base, SERVING_DIR)
    for version in reversed(list_versions(serving_dir)):
        path = os.path.join(serving_dir, str(version), PUSH_INFO)
        if os.path.exists(path):
            with open(path) as f:
                return json.load(f).get("model_uri")
    return None


def _blessing(blessing_uri: Optional[str], evaluation: Optional[dict]) -> bool:
    if evaluation is not None:
        return bool(evaluation.get("blessed"))
    if blessing_uri is None:
        return False
    from tfflows.components.evaluate import read_blessing

    return read_blessing(blessing_uri)


def run_push(model_uri: str, transform_graph_uri: Optional[str], examples_uri: Optional[str],
             blessing_uri: Optional[str], config: PushConfig,
             evaluation: Optional[dict] = None) -> dict:
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

    Returns:
      ``{"pushed": bool, "version": int | None, "destination": str | None,
      "registered": {...} | None, "reason": str}``. A model that is not blessed is not
      pushed and nothing under ``push_base`` changes.
    """
    from tfflows.components.ingest import read_metadata
    from tfflows.components.push.export import export_saved_model

    if evaluation is None and blessing_uri is not None:
        path = os.path.join(blessing_uri, "evaluation.json")
        if os.path.exists(path):
            with open(path) as f:
                evaluation_file = json.load(f)
        else:
            evaluation_file = None
    else:
        evaluation_file = evaluation
    if not _blessing(blessing_uri, evaluation):
        return {"pushed": False, "version": None, "destination": None, "registered": None,
                "reason": "model not blessed"}
    serving_dir = os.path.join(config.push_base, SERVING_DIR)
    os.makedirs(serving_dir, exist_ok=True)
    tmp_dir = os.path.join(serving_dir, f".tmp-{uuid.uuid4().hex}")
    try:
        export_saved_model(model_uri, transform_graph_uri,
                           read_metadata(examples_uri) if examples_uri else None, tmp_dir,
                           importance_samples=config.importance_samples)
        with open(os.path.join(tmp_dir, PUSH_INFO), "w") as f:
            json.dump({"model_uri": model_uri, "transform_graph_uri": transform_graph_uri,
                       "examples_uri": examples_uri}, f, indent=2)
        version = publish_version(tmp_dir, serving_dir, config.max_version_attempts)
    finally:
        if os.path.isdir(tmp_dir):
            shutil.rmtree(tmp_dir, ignore_errors=True)
    destination = os.path.join(serving_dir, str(version))
    registered = None
    if config.registered_model_name:
        from tfflows.components.push.registry import register_pushed_model

        metrics = dict((evaluation_file or {}).get("metrics") or {})
        registered = register_pushed_model(
            destination, config, metrics,
            tags={"serving_version": version, "serving_destination": destination,
                  "trained_model_uri": model_uri})
    return {"pushed": True, "version": version, "destination": destination,
            "registered": registered, "reason": "blessed"}
