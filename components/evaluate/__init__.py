"""Evaluation of a trained flow: test log-likelihood ± 2 s.e., bits/dim, blessing.

Public API: `run_evaluate`, `EvaluateConfig`, `read_blessing`; the TFX component is
`components.evaluate.component.EvaluateFlow`.
"""

from tfflows.components import lazy_exports
from tfflows.components.evaluate.config import EvaluateConfig

__all__ = ["BLESSED_FILE", "EVALUATION_FILE", "EvaluateConfig", "NOT_BLESSED_FILE",
           "read_blessing", "run_evaluate"]


__getattr__ = lazy_exports(__name__, dict.fromkeys(__all__, "tfflows.components.evaluate.executor"))
