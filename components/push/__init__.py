"""Push of a blessed flow: versioned SavedModel for TF Serving + MLflow registry version.

Public API: `run_push`, `export_saved_model`, `PushConfig`; the TFX component is
`components.push.component.PushFlow`. (Imports are lazy: importing the package does not
pull in TensorFlow.)
"""

from tfflows.components import lazy_exports
from tfflows.components.push.config import PushConfig

__all__ = ["PushConfig", "export_saved_model", "run_push"]


__getattr__ = lazy_exports(__name__, {"export_saved_model": "tfflows.components.push.export",
                                     "run_push": "tfflows.components.push.executor"})
