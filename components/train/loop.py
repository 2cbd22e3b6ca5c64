"""The epoch loop: train an epoch, then keep it (a finite one) or roll back (a non-finite one).

1. epoch ``e`` draws its data order and dequantisation noise (reverse KL: its samples of q)
   from seeds derived from ``(seed, e)`` only, so an interrupted run that resumes from the
   checkpoint of epoch ``e - 1`` sees exactly what an uninterrupted run sees (`train_epoch`);
2. after the epoch's gradient steps: the mean train value of the metric and its validation value
   (log-likelihood in model space with batch norm in evaluation mode and fixed dequantisation
   noise; reverse KL: the ELBO on fixed samples);
3. a non-finite loss, validation value or weight rolls back to the last checkpoint, halves the
   learning rate and retries, at most ``max_nan_retries`` times; one more non-finite epoch ends
   the run with status "diverged" (`roll_back`);
4. the best epoch's weights are kept (early stopping after ``patience`` epochs without
   improvement); a checkpoint (model, optimizer, epoch, best state, history, MLflow run id) is
   written after every epoch (`keep_epoch`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time

import tensorflow as tf

from tfflows.components.train.strategy import distribute

__all__ = ["EpochResult", "all_finite", "keep_epoch", "roll_back", "train_epoch", "train_epochs"]

logger = logging.getLogger("tfflows.train")


@dataclasses.dataclass
class EpochResult:
    """What one epoch's gradient steps gave: its learning rate, values, examples and time."""

    epoch: int
    learning_rate: float
    train_value: float
    val_value: float
    examples: int
    seconds: float
    finite: bool


def all_finite(variables) -> bool:
    return all(bool(tf.reduce_all(tf.math.is_finite(v)).numpy()) for v in variables
               if v.dtype.is_floating)


def train_epoch(trainer, epoch: int) -> EpochResult:
    """The epoch's gradient steps, then its train and validation values."""
    config, metric = trainer.config, trainer.metric
    lr = config.learning_rate_at(epoch) * float(trainer.state.lr_scale.numpy())
    trainer.optimizer.learning_rate = lr
    start, values, seen = time.perf_counter(), [], 0
    for step, batch in enumerate(distribute(trainer.strategy, trainer.training.batches(epoch)), start=1):
        loss, value = trainer.gradient_step(batch)
        values.append(value)
        seen += config.batch_size
        if step % config.log_every_steps == 0:
            elapsed = time.perf_counter() - start
            logger.info("epoch %d step %d loss %.4f %s %.4f (%.0f examples/s)", epoch, step,
                        float(loss.numpy()), metric, float(value.numpy()), seen / max(elapsed, 1e-9))
    if trainer.epoch_hook is not None:
        trainer.epoch_hook(epoch, trainer.model)
    elapsed = time.perf_counter() - start
    train_value = float(tf.reduce_mean(tf.stack(values)).numpy()) if values else float("nan")
    val_value = trainer.training.validate(trainer.model)
    finite = math.isfinite(train_value) and math.isfinite(val_value) and all_finite(trainer.model.variables)
    return EpochResult(epoch, lr, train_value, val_value, seen, elapsed, finite)


def roll_back(trainer, result: EpochResult) -> bool:
    """Back to the last checkpoint with the learning rate halved; False (status "diverged",
    the last checkpoint restored) once ``max_nan_retries`` rollbacks did not help."""
    state, metric = trainer.state, trainer.metric
    retries = int(state.nan_retries.numpy()) + 1
    restored = trainer.restore_point
    trainer.checkpoint.restore(restored).assert_existing_objects_matched()
    if retries > trainer.config.max_nan_retries:
        logger.error("NON-FINITE loss or weights in epoch %d (train %s %s, val %s) after "
                     "%d rollback(s): giving up, status 'diverged'", result.epoch, metric,
                     result.train_value, result.val_value, len(trainer.rollbacks))
        trainer.status = "diverged"
        return False
    scale = float(state.lr_scale.numpy()) * 0.5
    state.nan_retries.assign(retries)
    state.lr_scale.assign(scale)
    trainer.rollbacks.append({"epoch": result.epoch, trainer.train_key: result.train_value,
                              trainer.val_key: result.val_value, "restored": restored})
    logger.warning(
        "NON-FINITE loss or weights in epoch %d (train %s %s, val %s): ROLLED BACK to "
        "checkpoint %s (epoch %d) and halved the learning rate to %.3g (retry %d of %d)",
        result.epoch, metric, result.train_value, result.val_value, restored,
        int(state.epoch.numpy()), trainer.config.learning_rate_at(int(state.epoch.numpy()) + 1) * scale,
        retries, trainer.config.max_nan_retries)
    trainer.tracker.set_tags({f"rollback_epoch_{result.epoch}": f"restored {restored}, lr x{scale:g}"})
    return True


def keep_epoch(trainer, result: EpochResult) -> None:
    """Records a finite epoch: history, best weights, early stopping, checkpoint, MLflow."""
    state, epoch, config = trainer.state, result.epoch, trainer.config
    trainer.trained_examples += result.examples
    trainer.train_time += result.seconds
    record = {"epoch": epoch, trainer.train_key: result.train_value, trainer.val_key: result.val_value,
              "learning_rate": result.learning_rate,
              "examples_per_sec": result.examples / max(result.seconds, 1e-9)}
    history = state.get_history() + [record]
    if result.val_value > float(state.best_val.numpy()):
        state.best_val.assign(result.val_value)
        state.best_epoch.assign(epoch)
        state.bad_epochs.assign(0)
        for best, v in zip(state.best_weights, trainer.model.variables):
            best.assign(v)
    else:
        state.bad_epochs.assign_add(1)
    if config.patience and int(state.bad_epochs.numpy()) >= config.patience:
        state.stopped.assign(True)
        logger.info("early stopping after epoch %d: no better validation %s for %d epochs "
                    "(best %.4f at epoch %d)", epoch, trainer.metric, config.patience,
                    float(state.best_val.numpy()), int(state.best_epoch.numpy()))
    state.history.assign(json.dumps(history))
    state.epoch.assign(epoch)
    trainer.restore_point = trainer.manager.save(checkpoint_number=epoch)
    logger.info("epoch %d: train %s %.4f, val %s %.4f, lr %.3g, %.0f examples/s", epoch, trainer.metric,
                result.train_value, trainer.metric, result.val_value, result.learning_rate,
                record["examples_per_sec"],
                extra={"epoch": epoch, "epochs": config.epochs})  # the CLI's progress bar/lines
    trainer.tracker.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=epoch)


def train_epochs(trainer) -> None:
    """Epochs after the restored one until ``epochs``, early stopping, or divergence."""
    state = trainer.state
    while int(state.epoch.numpy()) < trainer.config.epochs and not bool(state.stopped.numpy()):
        result = train_epoch(trainer, int(state.epoch.numpy()) + 1)
        if result.finite:
            keep_epoch(trainer, result)
        elif not roll_back(trainer, result):
            break
