"""Executor logic of the train component as plain functions: `run_train` and its helpers.

The loop is the same for every objective (`objectives.py`: maximum likelihood on data, reverse
KL to a target); one epoch at a time, all state in one checkpoint:

1. epoch ``e`` draws its data order and dequantisation noise (reverse KL: its samples of q)
   from seeds derived from ``(seed, e)`` only, so an interrupted run that resumes from the
   checkpoint of epoch ``e - 1`` sees exactly what an uninterrupted run sees;
2. after the epoch's steps: the mean train value of the metric and its validation value
   (log-likelihood in model space with batch norm in evaluation mode and fixed dequantisation
   noise; reverse KL: the ELBO on fixed samples);
3. a non-finite loss, validation value or weight rolls back to the last checkpoint, halves the
   learning rate and retries (at most ``max_nan_retries`` times, then status "diverged");
4. the best epoch's weights are kept (early stopping after ``patience`` epochs without
   improvement); a checkpoint (model, optimizer, epoch, best state, history, MLflow run id) is
   written after every epoch;
5. at the end: best weights, batch-norm statistics of the whole (dequantised, transformed)
   train split, `save_flow`, MLflow figures (loss curve; samples and density, or the fitted
   density beside the target) and artifacts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import tempfile
import time
from typing import Callable, Dict, Optional

import numpy as np
import tensorflow as tf
import tf_keras

from tfflows.components.flow_artifact import save_flow
from tfflows.components.train.config import TrackingConfig, TrainConfig
from tfflows.components.train.objectives import epoch_seed, make_dataset, make_objective
from tfflows.components.train.tracking import RunTracker
from tfflows.models import FlowModel
from tfflows.models.flows import kernel_l2

__all__ = ["run_train", "make_dataset", "epoch_seed", "default_checkpoint_dir",
           "TrainingDivergedError"]

logger = logging.getLogger("tfflows.train")

EpochHook = Callable[[int, FlowModel], None]


class TrainingDivergedError(RuntimeError):
    """Training produced no finite model (every epoch diverged); nothing was saved."""


def default_checkpoint_dir(model_uri: str) -> str:
    """``<parent of model_uri>/checkpoints``: stable across re-runs that write the same model."""
    return os.path.join(os.path.dirname(os.path.abspath(model_uri.rstrip("/"))), "checkpoints")


def _strategy() -> tf.distribute.Strategy:
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    if len(gpus) == 1:
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    return tf.distribute.get_strategy()


def _all_finite(variables) -> bool:
    return all(bool(tf.reduce_all(tf.math.is_finite(v)).numpy()) for v in variables
               if v.dtype.is_floating)


class _State:
    """Everything a checkpoint holds besides the model and the optimizer."""

    def __init__(self, model: FlowModel):
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.best_val = tf.Variable(-np.inf, dtype=tf.float64, trainable=False, name="best_val")
        self.best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_epoch")
        self.bad_epochs = tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_epochs")
        self.lr_scale = tf.Variable(1.0, dtype=tf.float64, trainable=False, name="lr_scale")
        self.nan_retries = tf.Variable(0, dtype=tf.int64, trainable=False, name="nan_retries")
        self.stopped = tf.Variable(False, trainable=False, name="stopped")
        self.history = tf.Variable("[]", dtype=tf.string, trainable=False, name="history")
        self.run_id = tf.Variable("", dtype=tf.string, trainable=False, name="mlflow_run_id")
        self.best_weights = [tf.Variable(v, trainable=False, name=f"best_{i}")
                             for i, v in enumerate(model.variables)]

    def trackables(self) -> dict:
        return dict(epoch=self.epoch, best_val=self.best_val, best_epoch=self.best_epoch,
                    bad_epochs=self.bad_epochs, lr_scale=self.lr_scale,
                    nan_retries=self.nan_retries, stopped=self.stopped, history=self.history,
                    run_id=self.run_id, best_weights=self.best_weights)

    def get_history(self) -> List[dict]:
        return json.loads(self.history.numpy().decode())


def _check_checkpoint_dir(checkpoint_dir: str, signature: dict, resume: bool) -> None:
    path = os.path.join(checkpoint_dir, "train_signature.json")
    if not resume and tf.io.gfile.exists(checkpoint_dir):
        logger.info("resume=False: deleting old checkpoints in %s", checkpoint_dir)
        tf.io.gfile.rmtree(checkpoint_dir)
    tf.io.gfile.makedirs(checkpoint_dir)
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            old = json.load(f)
        if old != signature:
            changed = sorted(k for k in set(old) | set(signature) if old.get(k) != signature.get(k))
            raise ValueError(
                f"checkpoint_dir {checkpoint_dir!r} holds checkpoints of a different training "
                f"(differs in {changed}); pass another checkpoint_dir or resume=False")
        return
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(signature, f, indent=2, sort_keys=True)


def run_train(examples_uri: Optional[str], transform_graph_uri: Optional[str], model_uri: str,
              train_config: TrainConfig, tracking_config: Optional[TrackingConfig] = None,
              checkpoint_dir: Optional[str] = None, *,
              epoch_hook: Optional[EpochHook] = None) -> Dict:
    """Trains a flow (on the transformed train split, or to a target) and writes it with `save_flow`.

    Args:
      examples_uri: an ingested Examples artifact (`components.ingest.run_ingest`); None for
        objective "reverse_kl".
      transform_graph_uri: its TransformGraph artifact (`components.transform.run_transform`);
        None for objective "reverse_kl".
      model_uri: folder of the Model artifact (written by `save_flow`).
      train_config: the objective, the flow and the optimisation.
      tracking_config: MLflow tracking (None: none).
      checkpoint_dir: checkpoint folder; a re-run with the same folder resumes
        (default `default_checkpoint_dir(model_uri)`).
      epoch_hook: ``hook(epoch, model)`` called after each epoch's steps, before the epoch is
        checked and checkpointed (for tests: poison weights, simulate a crash).

    Returns:
      The summary (also ``summary.json`` in the artifact): objective, metric ("log_likelihood"
      or "elbo"), status ("ok" or "diverged": it stopped after too many non-finite rollbacks
      and keeps the best finite epoch), epochs_run, best_epoch, best_val_<metric>,
      final_val_<metric> (after the train-set batch-norm statistics), history (train_<metric>,
      val_<metric> per epoch), rollbacks, train_time_s, examples_per_sec, num_parameters,
      data_fingerprint, mlflow_run_id; reverse_kl adds target and importance_diagnostics
      (ESS/n, log Z, KL estimates from 10,000 samples).

    Raises:
      TrainingDivergedError: no epoch ended with a finite model; no artifact is written.
      ValueError: ``checkpoint_dir`` holds checkpoints of a different training.
    """
    tracking_config = tracking_config or TrackingConfig(enabled=False)
    objective = make_objective(train_config, examples_uri, transform_graph_uri)
    metric = objective.metric
    d = objective.event_dim
    checkpoint_dir = checkpoint_dir or default_checkpoint_dir(model_uri)

    strategy = _strategy()
    tf_keras.utils.set_random_seed(train_config.seed)
    with strategy.scope():
        model = objective.build_model()
        optimizer = tf_keras.optimizers.Adam(learning_rate=train_config.learning_rate)
        optimizer.build(model.trainable_variables)
        state = _State(model)
    signature = {"flow": model.get_config(), "data_fingerprint": objective.fingerprint,
                 "batch_size": train_config.batch_size, "seed": train_config.seed,
                 "objective": train_config.objective}
    _check_checkpoint_dir(checkpoint_dir, json.loads(json.dumps(signature)), train_config.resume)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, **state.trackables())
    manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir, max_to_keep=3,
                                         checkpoint_name="ckpt")
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        logger.info("resumed from %s (epoch %d done)", manager.latest_checkpoint,
                    int(state.epoch.numpy()))
    else:
        manager.save(checkpoint_number=0)  # epoch 0: the rollback point of the first epoch
    num_parameters = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    l2 = float(train_config.l2)
    replicas = strategy.num_replicas_in_sync

    def step_fn(batch):
        with tf.GradientTape() as tape:
            objective_loss, value = objective.step_values(model, batch)
            loss = objective_loss + l2 * kernel_l2(model.trainable_variables) if l2 else objective_loss
            scaled = loss / replicas
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss, value

    def replicated_step(batch):
        loss, value = strategy.run(step_fn, args=(batch,))
        mean = tf.distribute.ReduceOp.MEAN
        return strategy.reduce(mean, loss, axis=None), strategy.reduce(mean, value, axis=None)

    compiled_step = tf.function(replicated_step, jit_compile=True)
    plain_step = tf.function(replicated_step)
    use_xla = train_config.jit_compile and replicas == 1

    def train_step(batch):
        nonlocal use_xla
        if use_xla:
            try:
                return compiled_step(batch)
            except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as error:
                if "compil" not in str(error).lower():
                    raise
                # Compilation fails before anything runs, so the plain graph can take this batch.
                use_xla = False
                logger.warning("XLA could not compile the train step (%s); using the plain graph",
                               str(error).strip().splitlines()[0][:200])
        return plain_step(batch)

    tracker = RunTracker(tracking_config, run_id=state.run_id.numpy().decode() or None)
    if tracker.run_id:
        state.run_id.assign(tracker.run_id)
    tracker.log_params({"train": dataclasses.asdict(train_config),
                        "flow": model.get_config(),
                        "data": objective.params,
                        "num_parameters": num_parameters})

    status, rollbacks = "ok", []
    trained_examples, train_time = 0, 0.0
    train_key, val_key = f"train_{metric}", f"val_{metric}"
    while int(state.epoch.numpy()) < train_config.epochs and not bool(state.stopped.numpy()):
        epoch = int(state.epoch.numpy()) + 1
        lr = train_config.learning_rate_at(epoch) * float(state.lr_scale.numpy())
        optimizer.learning_rate = lr
        data = objective.batches(epoch)
        start, values, seen = time.perf_counter(), [], 0
        for step, batch in enumerate(strategy.experimental_distribute_dataset(data), start=1):
            loss, value = train_step(batch)
            values.append(value)
            seen += train_config.batch_size
            if step % train_config.log_every_steps == 0:
                elapsed = time.perf_counter() - start
                logger.info("epoch %d step %d loss %.4f %s %.4f (%.0f examples/s)", epoch, step,
                            float(loss.numpy()), metric, float(value.numpy()), seen / max(elapsed, 1e-9))
        if epoch_hook is not None:
            epoch_hook(epoch, model)
        elapsed = time.perf_counter() - start
        train_value = float(tf.reduce_mean(tf.stack(values)).numpy()) if values else float("nan")
        val_value = objective.validate(model)
        if not (math.isfinite(train_value) and math.isfinite(val_value) and _all_finite(model.variables)):
            retries = int(state.nan_retries.numpy()) + 1
            scale = float(state.lr_scale.numpy()) * 0.5
            restored = manager.latest_checkpoint
            rollbacks.append({"epoch": epoch, train_key: train_value, val_key: val_value,
                              "restored": restored})
            if retries > train_config.max_nan_retries:
                logger.error("NON-FINITE loss or weights in epoch %d (train %s %s, val %s) after "
                             "%d rollback(s): giving up, status 'diverged'", epoch, metric, train_value,
                             val_value, retries - 1)
                checkpoint.restore(restored).assert_existing_objects_matched()
                status = "diverged"
                break
            checkpoint.restore(restored).assert_existing_objects_matched()
            state.nan_retries.assign(retries)
            state.lr_scale.assign(scale)
            logger.warning(
                "NON-FINITE loss or weights in epoch %d (train %s %s, val %s): ROLLED BACK to "
                "checkpoint %s (epoch %d) and halved the learning rate to %.3g (retry %d of %d)",
                epoch, metric, train_value, val_value, restored, int(state.epoch.numpy()),
                train_config.learning_rate_at(int(state.epoch.numpy()) + 1) * scale, retries,
                train_config.max_nan_retries)
            tracker.set_tags({f"rollback_epoch_{epoch}": f"restored {restored}, lr x{scale:g}"})
            continue
        trained_examples += seen
        train_time += elapsed
        history = state.get_history()
        record = {"epoch": epoch, train_key: train_value, val_key: val_value,
                  "learning_rate": lr, "examples_per_sec": seen / max(elapsed, 1e-9)}
        history.append(record)
        if val_value > float(state.best_val.numpy()):
            state.best_val.assign(val_value)
            state.best_epoch.assign(epoch)
            state.bad_epochs.assign(0)
            for best, v in zip(state.best_weights, model.variables):
                best.assign(v)
        else:
            state.bad_epochs.assign_add(1)
        if train_config.patience and int(state.bad_epochs.numpy()) >= train_config.patience:
            state.stopped.assign(True)
            logger.info("early stopping after epoch %d: no better validation %s for %d epochs "
                        "(best %.4f at epoch %d)", epoch, metric, train_config.patience,
                        float(state.best_val.numpy()), int(state.best_epoch.numpy()))
        state.history.assign(json.dumps(history))
        state.epoch.assign(epoch)
        manager.save(checkpoint_number=epoch)
        logger.info("epoch %d: train %s %.4f, val %s %.4f, lr %.3g, %.0f examples/s", epoch, metric,
                    train_value, metric, val_value, lr, record["examples_per_sec"])
        tracker.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=epoch)

    history = state.get_history()
    best_epoch = int(state.best_epoch.numpy())
    if best_epoch == 0:
        tracker.set_tags({"status": "diverged"})
        tracker.end("FAILED")
        raise TrainingDivergedError(
            f"training diverged: no epoch ended with finite loss and weights "
            f"({len(rollbacks)} rollback(s)); nothing was saved to {model_uri}. Lower "
            f"learning_rate (now {train_config.learning_rate}) or check the data.")
    for v, best in zip(model.variables, state.best_weights):
        v.assign(best)
    objective.finish(model)
    final_val = objective.validate(model)
    if not (_all_finite(model.variables) and math.isfinite(final_val)):
        tracker.end("FAILED")
        raise TrainingDivergedError(
            f"the best epoch's model is not finite after setting batch-norm statistics "
            f"(validation {metric} {final_val}); nothing was saved to {model_uri}")
    summary = {
        "objective": train_config.objective,
        "metric": metric,
        "status": status,
        "epochs_run": int(state.epoch.numpy()),
        "best_epoch": best_epoch,
        f"best_val_{metric}": float(state.best_val.numpy()),
        f"final_val_{metric}": final_val,
        "early_stopped": bool(state.stopped.numpy()),
        "history": history,
        "rollbacks": rollbacks,
        "nan_retries": int(state.nan_retries.numpy()),
        "train_time_s": train_time,
        "examples_per_sec": trained_examples / train_time if train_time else None,
        "num_parameters": num_parameters,
        "data_fingerprint": objective.fingerprint,
        "event_dim": d,
        "kind": "vae" if train_config.objective == "vae" else train_config.kind,
        "train_config": json.loads(train_config.to_json()),
        "checkpoint_dir": checkpoint_dir,
        "mlflow_run_id": tracker.run_id,
        **objective.summary(model),
    }
    save_flow(model, model_uri, summary)
    logger.info("saved %s model (best epoch %d, val %s %.4f, status %s) to %s", summary["kind"],
                best_epoch, metric, summary[f"best_val_{metric}"], status, model_uri)
    _log_run_end(tracker, model, summary, objective, model_uri)
    summary["mlflow_not_logged"] = sorted(set(tracker.not_logged))
    return summary


def _log_run_end(tracker: RunTracker, model: FlowModel, summary: dict, objective, model_uri: str) -> None:
    """Final metrics, the loss curve, the objective's figures and the model folder to MLflow."""
    if not tracker.config.active:
        return
    from tfflows.components.train import plots

    metric = summary["metric"]
    final = {f"best_val_{metric}": summary[f"best_val_{metric}"],
             f"final_val_{metric}": summary[f"final_val_{metric}"], "best_epoch": summary["best_epoch"]}
    for key, value in (summary.get("importance_diagnostics") or {}).items():
        final[key] = value
    tracker.log_metrics({k: v for k, v in final.items() if v is not None and math.isfinite(v)},
                        step=summary["epochs_run"])
    tracker.set_tags({"status": summary["status"], "objective": summary["objective"],
                      "data_fingerprint": summary["data_fingerprint"]})
    if tracker.enabled:
        with tempfile.TemporaryDirectory() as tmp:
            figures = []
            try:
                figures.append(plots.loss_curve(summary["history"], os.path.join(tmp, "loss_curve.png"), metric))
                figures += objective.figures(model, tmp)
            except Exception as err:  # noqa: BLE001 - a plot must not fail the training
                logger.warning("could not draw the MLflow figures: %s", err)
            for path in figures:
                if os.path.exists(path):
                    tracker.log_artifact(path, "plots")
    tracker.log_artifact(model_uri, "model")
    tracker.end("FINISHED")
