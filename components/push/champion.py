"""The champion alias of the MLflow registry and TF Serving's version labels, moved on request.

`set_champion` (`tfflows promote --version N`, `tfflows rollback`, through `pipeline.registry`)
moves the alias (``TrackingConfig.alias``) to a registered version and rewrites
``<push_base>/models.config``: ``stable`` names the champion's serving version, ``canary`` the
newest pushed one (when newer). It takes a `components.tracking.Tracker` and imports neither
TensorFlow nor MLflow itself, so that these commands answer in a second or two; the push's own
registration (`components.push.registry`) loads the SavedModel side.
"""

from __future__ import annotations

from typing import Optional

from tfflows.components.artifacts import write_serving_config

__all__ = ["describe", "previous_version", "set_champion"]


def _serving_version(client, name: str, version: str) -> int:
    tag = client.get_model_version(name, version).tags.get("serving_version")
    if tag is None:
        raise ValueError(f"registered model {name!r} version {version} has no serving_version tag: it was "
                         "not pushed by tfflows")
    return int(tag)


def previous_version(client, name: str, alias: str) -> str:
    """The highest registered version below the one ``alias`` names (what a rollback returns to)."""
    current = int(client.get_model_version_by_alias(name, alias).version)
    older = [int(v.version) for v in client.search_model_versions(f"name='{name}'") if int(v.version) < current]
    if not older:
        raise ValueError(f"registered model {name!r}: version {current} holds alias {alias!r} and there is no "
                         "older version to roll back to")
    return str(max(older))


def set_champion(tracker, version: str, push_base: Optional[str], latest_serving_version: Optional[int]) -> dict:
    """Moves the alias to ``version`` and rewrites the TF Serving config under ``push_base``.

    Raises (unlike the pipeline's logging) when the registry cannot be reached or the version does
    not exist: promote and rollback are explicit requests."""
    config, client = tracker.config, tracker.client
    if client is None:
        raise RuntimeError(f"MLflow at {config.uri} is not reachable: {', '.join(tracker.not_logged)}")
    name = config.registered_model_name
    serving = _serving_version(client, name, version)
    client.set_registered_model_alias(name, config.alias, version)
    path = write_serving_config(push_base, name, serving, latest_serving_version) if push_base else None
    return {"name": name, "version": version, "serving_version": serving, "serving_config": path,
            "alias": config.alias}


def describe(result: dict) -> str:
    """One line for the CLI."""
    line = (f"{result['name']}@{result['alias']} -> version {result['version']} "
            f"(serving version {result['serving_version']})")
    return line + (f"; TF Serving config {result['serving_config']} (label stable)" if result["serving_config"] else "")

