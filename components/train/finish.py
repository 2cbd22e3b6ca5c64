"""The end of a run: the best epoch's weights, the objective's finishing touch (batch-norm
statistics of the whole train split), the artifact (`save_flow`) and its summary, MLflow's record."""

from __future__ import annotations

import logging
import math

from tfflows.components.errors import TrainingDivergedError
from tfflows.components.flow_artifact import save_flow
from tfflows.components.summary import ModelSummary
from tfflows.components.train.loop import all_finite
from tfflows.components.train.run_tracking import log_run_end

__all__ = ["finish"]

logger = logging.getLogger("tfflows.train")


def _fail(trainer, message: str) -> TrainingDivergedError:
    trainer.tracker.end("FAILED")
    return TrainingDivergedError(message)


def finish(trainer) -> ModelSummary:
    """Best weights and batch-norm statistics, then the artifact, its summary and MLflow."""
    state, metric, config, tracker = trainer.state, trainer.metric, trainer.config, trainer.tracker
    best_epoch = int(state.best_epoch.numpy())
    if best_epoch == 0:
        tracker.set_tags({"status": "diverged"})
        raise _fail(trainer,
                    f"training diverged: no epoch ended with finite loss and weights "
                    f"({len(trainer.rollbacks)} rollback(s)); nothing was saved to {trainer.model_uri}. Lower "
                    f"learning_rate (now {config.learning_rate}) or check the data.")
    for v, best in zip(trainer.model.variables, state.best_weights):
        v.assign(best)
    trainer.training.finish(trainer.model)
    final_val = trainer.training.validate(trainer.model)
    if not (all_finite(trainer.model.variables) and math.isfinite(final_val)):
        raise _fail(trainer,
                    f"the best epoch's model is not finite after setting batch-norm statistics "
                    f"(validation {metric} {final_val}); nothing was saved to {trainer.model_uri}")
    summary = ModelSummary(
        objective=config.objective, metric=metric, status=trainer.status,
        kind=trainer.objective.model_kind(config), epochs_run=int(state.epoch.numpy()),
        best_epoch=best_epoch, best_val=float(state.best_val.numpy()), final_val=final_val,
        early_stopped=bool(state.stopped.numpy()), history=state.get_history(), rollbacks=trainer.rollbacks,
        nan_retries=int(state.nan_retries.numpy()), train_time_s=trainer.train_time,
        examples_per_sec=trainer.trained_examples / trainer.train_time if trainer.train_time else None,
        num_parameters=trainer.num_parameters, replicas=trainer.replicas,
        data_fingerprint=trainer.training.fingerprint, event_dim=trainer.training.event_dim,
        feature_names=trainer.training.feature_names, context_names=trainer.training.context_names,
        context_categorical_names=trainer.training.context_categorical_names,
        categorical_names=trainer.training.categorical_names,
        train_config=config,
        checkpoint_dir=trainer.checkpoint_dir, mlflow_run_id=tracker.run_id,
        details=trainer.training.details(trainer.model))
    save_flow(trainer.model, trainer.model_uri, summary.to_dict())
    logger.info("saved %s model (best epoch %d, val %s %.4f, status %s) to %s", summary.kind,
                best_epoch, metric, summary.best_val, trainer.status, trainer.model_uri)
    log_run_end(tracker, trainer.model, summary, trainer.training, trainer.model_uri)
    summary.mlflow_not_logged = sorted(set(tracker.not_logged))
    return summary
