"""Evaluation of a trained flow: test log-likelihood ± 2 s.e., bits/dim, blessing.

Public API: `run_evaluate`, `EvaluateConfig`, `read_blessing`; the TFX component is
`components.evaluate.component.EvaluateFlow`.
"""

from tfflows.components.evaluate.config import EvaluateConfig

__all__ = ["BLESSED_FILE", "EVALUATION_FILE", "EvaluateConfig", "NOT_BLESSED_FILE",
           "read_blessing", "run_evaluate"]


def __getattr__(name):
    # The executor imports TensorFlow: loaded on first use, so that reading `EvaluateConfig` (the
    # CLI's configuration check) stays TensorFlow-free.
    if name in __all__:
        from tfflows.components.evaluate import executor
        return getattr(executor, name)
    raise AttributeError(name)
