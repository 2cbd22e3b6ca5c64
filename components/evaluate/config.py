"""Configuration of the evaluate component (`components/evaluate`)."""

from __future__ import annotations

from dataclasses import dataclass

from components.config import JsonConfig
from typing import Optional

__all__ = ["EvaluateConfig"]


@dataclass(frozen=True)
class EvaluateConfig(JsonConfig):
    """How a trained flow is scored on the test split and when it is blessed.

    Attributes:
      split: the split scored (``"test"``; ``"eval"`` for quick checks).
      tolerance: nats per example the new model may be worse than the baseline and still be
        blessed: blessed iff ``new_ll >= baseline_ll - tolerance`` (data-space test
        log-likelihood means, same test points). A negative value demands an improvement of
        at least ``-tolerance`` nats (``min_improvement``).
      dequantization_seed: discrete data only: the stateless seed of the uniform noise
        ``x + U[0, 1)`` added to the integer test levels. Fixed, so that every evaluation
        (new model and baseline, today and in a later run) scores the same dequantised points.
      batch_size: rows per log_prob call.
      tracking_uri: MLflow tracking URI (e.g. ``sqlite:///mlflow.db``); None: no logging.
      run_id: MLflow run to log the metrics to (e.g. the trainer's run); None with a
        ``tracking_uri`` starts a new run in ``experiment_name``.
      experiment_name: experiment of a new run.
    """

    split: str = "test"
    tolerance: float = 0.0
    dequantization_seed: int = 0
    batch_size: int = 1000
    tracking_uri: Optional[str] = None
    run_id: Optional[str] = None
    experiment_name: str = "tfflows"

    def __post_init__(self) -> None:
        if self.split not in ("train", "eval", "test"):
            raise ValueError(f"`split` must be 'train', 'eval' or 'test', but is {self.split!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, but is {self.batch_size!r}")

    @property
    def min_improvement(self) -> float:
        """``-tolerance``: the improvement over the baseline required for a blessing."""
        return -self.tolerance

