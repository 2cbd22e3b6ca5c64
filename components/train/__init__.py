"""Training: builds a flow for the ingested data, trains it on the transformed train split with
fresh dequantisation noise per epoch, early stopping, resumable checkpoints, NaN rollback and
MLflow tracking, and writes the Model artifact (`components.flow_artifact.save_flow`).

Public API: `run_train` (executor logic), `TrainConfig`, `TrackingConfig`,
`TrainingDivergedError`; the TFX component is `components.train.component.TrainFlow`.
"""

from tfflows.components import lazy_exports
from tfflows.components.train.config import TrackingConfig, TrainConfig

__all__ = ["TrackingConfig", "TrainConfig", "TrainingDivergedError", "default_checkpoint_dir",
           "make_dataset", "run_train"]


__getattr__ = lazy_exports(__name__, dict.fromkeys(__all__, "tfflows.components.train.executor"))
