"""Training: builds a flow for the ingested data, trains it on the transformed train split with
fresh dequantisation noise per epoch, early stopping, resumable checkpoints, NaN rollback and
MLflow tracking, and writes the Model artifact (`components.flow_artifact.save_flow`).

Public API: `run_train` (executor logic), `TrainConfig`, `TrackingConfig`,
`TrainingDivergedError`; the TFX component is `components.train.component.TrainFlow`.
"""

from tfflows.components.train.config import TrackingConfig, TrainConfig

__all__ = ["TrackingConfig", "TrainConfig", "TrainingDivergedError", "default_checkpoint_dir",
           "make_dataset", "run_train"]


def __getattr__(name):
    # The executor imports TensorFlow: loaded on first use, so that reading `TrainConfig` (the
    # CLI's configuration check) stays TensorFlow-free.
    if name in __all__:
        from tfflows.components.train import executor
        return getattr(executor, name)
    raise AttributeError(name)
