"""Configuration of the push component (`components/push`)."""

from __future__ import annotations

from dataclasses import dataclass

from tfflows.components.config import JsonConfig
from typing import Optional

__all__ = ["PushConfig"]


@dataclass(frozen=True)
class PushConfig(JsonConfig):
    """Where a blessed flow is pushed and how it is registered.

    Attributes:
      push_base: the serving base folder's parent: versions go to
        ``<push_base>/serving/<integer version>/`` (the layout TF Serving watches). None: the
        pipeline uses the run's output folder.
      registered_model_name: MLflow Model Registry name; None: no registration.
      tracking_uri: MLflow tracking URI (``sqlite:///...`` or ``http://host:port``); needed
        with ``registered_model_name``.
      registry_uri: MLflow registry URI (default: the tracking URI).
      experiment_name: experiment of the run that logs the pyfunc model.
      artifact_location: artifact root of that experiment when this push creates it (e.g.
        ``gs://bucket/mlflow`` or a local folder); None: the tracking server's default (for a
        ``sqlite:`` URI without a server that is ``./mlruns`` in the current directory).
      alias: registry alias moved to every pushed version.
      importance_samples: VAEs only: K posterior samples behind the exported ``log_prob``.
      max_version_attempts: how many version numbers a push tries to claim before giving up
        (each failed claim means another push took that number first).
    """

    push_base: Optional[str] = None
    registered_model_name: Optional[str] = None
    tracking_uri: Optional[str] = None
    registry_uri: Optional[str] = None
    experiment_name: str = "tfflows"
    artifact_location: Optional[str] = None
    alias: str = "champion"
    importance_samples: int = 128
    max_version_attempts: int = 100

    def __post_init__(self) -> None:
        if self.push_base is not None and not self.push_base:
            raise ValueError(f"`push_base` must be a folder or None, but is {self.push_base!r}")
        if self.registered_model_name and not self.tracking_uri:
            raise ValueError("`tracking_uri` must be set when `registered_model_name` is "
                             f"{self.registered_model_name!r}")

