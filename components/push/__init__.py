"""Push of a blessed flow: versioned SavedModel for TF Serving + MLflow registry version.

Public API: `run_push`, `export_saved_model`, `PushConfig`; the TFX component is
`components.push.component.PushFlow`. (Imports are lazy: importing the package does not
pull in TensorFlow.)
"""

from tfflows.components.push.config import PushConfig

__all__ = ["PushConfig", "export_saved_model", "run_push"]


def __getattr__(name):
    if name == "export_saved_model":
        from tfflows.components.push.export import export_saved_model
        return export_saved_model
    if name == "run_push":
        from tfflows.components.push.executor import run_push
        return run_push
    raise AttributeError(name)
