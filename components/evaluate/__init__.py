"""Evaluation of a trained flow: test log-likelihood ± 2 s.e., bits/dim, blessing.

Public API: `run_evaluate`, `EvaluateConfig`, `read_blessing`; the TFX component is
`components.evaluate.component.EvaluateFlow`.
"""

from tfflows.components.evaluate.config import EvaluateConfig
from tfflows.components.evaluate.executor import (BLESSED_FILE, EVALUATION_FILE, NOT_BLESSED_FILE,
                                          read_blessing, run_evaluate)

__all__ = ["BLESSED_FILE", "EVALUATION_FILE", "EvaluateConfig", "NOT_BLESSED_FILE",
           "read_blessing", "run_evaluate"]
