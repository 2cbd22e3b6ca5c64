"""Data drift, measured before training: the champion scores the new data's test split.

Public API: `run_drift`; the TFX component is `components.drift.component.DriftCheck`.
"""

from tfflows.components import lazy_exports

__all__ = ["run_drift"]


__getattr__ = lazy_exports(__name__, {"run_drift": "tfflows.components.drift.executor"})
