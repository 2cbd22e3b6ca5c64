"""Configuration of the push component (`components/push`)."""

from __future__ import annotations

from dataclasses import dataclass

from tfflows.components.config import ConfigError, JsonConfig
from typing import Optional

__all__ = ["PushConfig"]


@dataclass(frozen=True)
class PushConfig(JsonConfig):
    """Where a blessed flow is pushed (its MLflow registration follows `TrackingConfig`).

    Attributes:
      push_base: the serving base folder's parent: versions go to
        ``<push_base>/serving/<integer version>/`` (the layout TF Serving watches); a local
        folder, ``s3://bucket/prefix`` or ``gs://bucket/prefix`` (`components.artifacts`).
        None: the pipeline uses the run's output folder.
      model_name: the TF Serving model name in ``<push_base>/models.config`` (the version-label
        file: ``stable`` = the newest blessed push, or what `tfflows promote|rollback` chose).
        The pipeline sets its name.
      importance_samples: VAEs only: K posterior samples behind the exported ``log_prob``.
      max_version_attempts: how many version numbers a push tries to claim before giving up
        (each failed claim means another push took that number first).
    """

    push_base: Optional[str] = None
    model_name: str = "tfflows"
    importance_samples: int = 128
    max_version_attempts: int = 100

    def __post_init__(self) -> None:
        if self.push_base is not None and not self.push_base:
            raise ConfigError(f"`push_base` must be a folder or None, but is {self.push_base!r}", field="push_base")
        for name in ("importance_samples", "max_version_attempts"):
            if getattr(self, name) < 1:
                raise ConfigError(f"`{name}` must be an int >= 1, but is {getattr(self, name)!r}", field=name)

