"""Configuration of the evaluate component (`components/evaluate`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tfflows.components.config import ConfigError, JsonConfig

__all__ = ["EvaluateConfig"]


@dataclass(frozen=True)
class EvaluateConfig(JsonConfig):
    """How a trained flow is scored on the test split and when it is blessed.

    A flow fitted to data is scored by its test log-likelihood; a flow fitted to a target by
    reverse KL (`TrainConfig.objective`) by its ELBO, effective sample size and log Z on
    ``num_samples`` fresh samples; a VAE by its importance-sampled test log-likelihood (K =
    ``importance_samples``) and its ELBO.

    Blessed means good: finite, better than a closed-form reference of the model's kind on the
    same points (a flow fitted to data: the full-covariance Gaussian of the train split; a VAE:
    the factorised model of the train split; reverse KL: the standard-normal q), and not worse
    than the pushed model by more than ``tolerance`` (`components.evaluate.executor`).

    Attributes:
      split: the split scored (``"test"``; ``"eval"`` for quick checks).
      tolerance: nats per example the new model may be worse than the pushed model (the
        baseline, the champion) and still be blessed. Flows fitted to data are compared on the
        same test points, each scored with its own preprocessing, by the mean per-example
        difference ``d = new - baseline`` and its two standard errors ``s`` (paired,
        `conversions.paired_difference`): blessed iff ``d >= -tolerance``; None (the default)
        means the noise, ``tolerance = s``: blessed unless worse beyond the paired error bar.
        Other objectives compare means (reverse KL: ELBO means on the same target; None: 0). A
        negative value demands an improvement of at least ``-tolerance`` nats
        (``min_improvement``). It never excuses losing to the reference.
      drift_limit: data drift: the champion's mean log-likelihood on the new test split minus its
        own recorded test log-likelihood (nats per example) may fall this far below zero (beyond
        its error bar) before ``drift_action`` applies; None: measured and reported, no limit.
      drift_action: ``"warn"`` (a line says the limit is exceeded; the run goes on) or ``"fail"``
        (the new model is not blessed, nothing is pushed, and the run exits non-zero).
      reference_tolerance: nats per example the model may fall short of its closed-form
        reference (e.g. the train split's full-covariance Gaussian) and still be blessed: blessed
        only if ``new_ll - reference_ll > -reference_tolerance``. 0 (the default): it must beat
        the reference. Raise it only for smoke runs that check the plumbing with a few epochs.
      dequantization_seed: discrete data only: the stateless seed of the uniform noise
        ``x + U[0, 1)`` added to the integer test levels. Fixed, so that every evaluation
        (new model and baseline, today and in a later run) scores the same dequantised points.
      batch_size: rows per log_prob call.
      num_samples: reverse-KL flows: samples of q behind the test ELBO, ESS and log Z.
      importance_samples: VAEs: K, the posterior samples per example behind the test
        log-likelihood log (1/K) sum_k p(x, z_k) / q(z_k | x) (the IAF paper uses 128).
      sample_seed: reverse-KL flows and VAEs: stateless seed of those samples (fixed, so the new model and
        the baseline are scored alike).

    The metrics go to the training's MLflow run (`TrackingConfig`, passed beside this section).
    """

    split: str = "test"
    tolerance: Optional[float] = None
    drift_limit: Optional[float] = None
    drift_action: str = "warn"
    reference_tolerance: float = 0.0
    dequantization_seed: int = 0
    batch_size: int = 1000
    num_samples: int = 10_000
    importance_samples: int = 128
    sample_seed: int = 1

    def __post_init__(self) -> None:
        if self.split not in ("train", "eval", "test"):
            raise ConfigError(f"`split` must be 'train', 'eval' or 'test', but is {self.split!r}", field="split")
        if self.drift_action not in ("warn", "fail"):
            raise ConfigError(f"`drift_action` must be 'warn' or 'fail', but is {self.drift_action!r}", field="drift_action")
        if self.drift_limit is not None and self.drift_limit < 0:
            raise ConfigError(f"`drift_limit` must be >= 0 nats (or null), but is {self.drift_limit!r}", field="drift_limit")
        for name in ("batch_size", "num_samples", "importance_samples"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"`{name}` must be a positive int, but is {value!r}", field=name)

    @property
    def min_improvement(self) -> Optional[float]:
        """``-tolerance``: the improvement over the baseline required for a blessing (None: within
        the noise)."""
        return None if self.tolerance is None else -self.tolerance

