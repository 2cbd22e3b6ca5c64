"""Executor logic of the train component as plain functions: `run_train` and its helpers.

The loop (one epoch at a time, all state in one checkpoint):

1. epoch ``e`` draws its data order and dequantisation noise from seeds derived from
   ``(seed, e)`` only, so an interrupted run that resumes from the checkpoint of epoch
   ``e - 1`` sees exactly what an uninterrupted run sees;
2. after the epoch's steps: mean train log-likelihood, validation log-likelihood (model space,
   batch norm in evaluation mode, fixed dequantisation noise);
3. a non-finite loss, validation value or weight rolls back to the last checkpoint, halves the
   learning rate and retries (at most ``max_nan_retries`` times, then status "diverged");
4. the best epoch's weights are kept (early stopping after ``patience`` epochs without
   improvement); a checkpoint (model, optimizer, epoch, best state, history, MLflow run id) is
   written after every epoch;
5. at the end: best weights, batch-norm statistics of the whole (dequantised, transformed)
   train split, `save_flow`, MLflow figures and artifacts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import tempfile
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import tensorflow as tf
import tf_keras

from components.flow_artifact import save_flow
from components.ingest import read_metadata, split_files
from components.train.config import TrackingConfig, TrainConfig
from components.train.tracking import RunTracker
from components.transform import PREPROCESSING_FILE, dequantize, load_transform
from models import FlowModel, build_flow

__all__ = ["run_train", "make_dataset", "epoch_seed", "default_checkpoint_dir",
           "TrainingDivergedError"]

logger = logging.getLogger("tfflows.train")

EpochHook = Callable[[int, FlowModel], None]


class TrainingDivergedError(RuntimeError):
    """Training produced no finite model (every epoch diverged); nothing was saved."""


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s data order and noise (epoch 0: validation and batch-norm
    statistics)."""
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + 17) % (2**31 - 1)


def default_checkpoint_dir(model_uri: str) -> str:
    """``<parent of model_uri>/checkpoints``: stable across re-runs that write the same model."""
    return os.path.join(os.path.dirname(os.path.abspath(model_uri.rstrip("/"))), "checkpoints")


def make_dataset(files: List[str], event_dim: int, transform, *, batch_size: int, seed: int,
                 num_levels: Optional[int] = None, shuffle_buffer: Optional[int] = None,
                 drop_remainder: bool = False, max_steps: Optional[int] = None) -> tf.data.Dataset:
    """Batches of model-space ``z`` from gzipped tf.Example files (feature ``x``).

    Files are read in order; with ``shuffle_buffer`` rows are shuffled with ``seed``; discrete
    data (``num_levels``) gets uniform noise from a stateless seed ``(seed, row index)``, so the
    same seed gives the same batches and another seed fresh noise. The transform graph maps the
    dequantised ``x`` to ``z`` (its log-det, constant in the flow's parameters, is dropped).
    """
    spec = {"x": tf.io.FixedLenFeature([event_dim], tf.float32)}
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP")
    ds = ds.map(lambda r: tf.io.parse_single_example(r, spec)["x"]).enumerate()
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
    if num_levels is not None:
        levels = int(num_levels)

        def noisy(i, x):
            return dequantize(x, levels, tf.stack([tf.constant(seed, tf.int64), i]))

        ds = ds.map(noisy)
    else:
        ds = ds.map(lambda i, x: x)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda x: transform(x)[0])
    if max_steps is not None:
        ds = ds.take(max_steps)
    return ds.prefetch(tf.data.AUTOTUNE)


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


def _logit_lambda(transform_graph_uri: str) -> Optional[float]:
    path = os.path.join(transform_graph_uri, PREPROCESSING_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        resolved = json.load(f)
    return resolved.get("logit_lambda") if resolved.get("method") == "logit" else None


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


def run_train(examples_uri: str, transform_graph_uri: str, model_uri: str,
              train_config: TrainConfig, tracking_config: Optional[TrackingConfig] = None,
              checkpoint_dir: Optional[str] = None, *,
              epoch_hook: Optional[EpochHook] = None) -> Dict:
    """Trains a flow on the transformed train split and writes it with `save_flow`.

    Args:
      examples_uri: an ingested Examples artifact (`components.ingest.run_ingest`).
      transform_graph_uri: its TransformGraph artifact (`components.transform.run_transform`).
      model_uri: folder of the Model artifact (written by `save_flow`).
      train_config: the flow and the optimisation.
      tracking_config: MLflow tracking (None: none).
      checkpoint_dir: checkpoint folder; a re-run with the same folder resumes
        (default `default_checkpoint_dir(model_uri)`).
      epoch_hook: ``hook(epoch, model)`` called after each epoch's steps, before the epoch is
        checked and checkpointed (for tests: poison weights, simulate a crash).

    Returns:
      The summary (also ``summary.json`` in the artifact): status ("ok" or "diverged": it
      stopped after too many non-finite rollbacks and keeps the best finite epoch), epochs_run,
      best_epoch, best_val_log_likelihood, final_val_log_likelihood (after the train-set
      batch-norm statistics), history, rollbacks, train_time_s, examples_per_sec,
      num_parameters, data_fingerprint, mlflow_run_id, ...

    Raises:
      TrainingDivergedError: no epoch ended with a finite model; no artifact is written.
      ValueError: ``checkpoint_dir`` holds checkpoints of a different training.
    """
    tracking_config = tracking_config or TrackingConfig(enabled=False)
    metadata = read_metadata(examples_uri)
    d = int(metadata.event_dim)
    num_levels = metadata.num_levels if metadata.discrete else None
    checkpoint_dir = checkpoint_dir or default_checkpoint_dir(model_uri)
    train_files, eval_files = split_files(examples_uri, "train"), split_files(examples_uri, "eval")
    if not train_files:
        raise ValueError(f"{examples_uri}: Split-train holds no TFRecord files; ingest again")
    if not eval_files:
        logger.warning("%s: no eval split; validation uses the train split", examples_uri)
        eval_files = train_files
    n_train = int(metadata.split_sizes.get("train", 0))
    drop_remainder = n_train >= train_config.batch_size
    transform = load_transform(transform_graph_uri)

    signature = {"flow": {"kind": train_config.kind, "event_dim": d, **train_config.flow_kwargs()},
                 "data_fingerprint": metadata.fingerprint, "batch_size": train_config.batch_size,
                 "seed": train_config.seed}
    _check_checkpoint_dir(checkpoint_dir, json.loads(json.dumps(signature)), train_config.resume)

    strategy = _strategy()
    tf_keras.utils.set_random_seed(train_config.seed)
    with strategy.scope():
        model = build_flow(train_config.kind, d, **train_config.flow_kwargs())
        optimizer = tf_keras.optimizers.Adam(learning_rate=train_config.learning_rate)
        optimizer.build(model.trainable_variables)
        state = _State(model)
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
    l2 = float(model.config.l2)
    replicas = strategy.num_replicas_in_sync

    def step_fn(z):
        with tf.GradientTape() as tape:
            nll = -tf.reduce_mean(model.log_prob(z, training=True))
            loss = nll + l2 * model.l2_penalty() if l2 else nll
            scaled = loss / replicas
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss, nll

    @tf.function
    def train_step(z):
        loss, nll = strategy.run(step_fn, args=(z,))
        mean = tf.distribute.ReduceOp.MEAN
        return strategy.reduce(mean, loss, axis=None), strategy.reduce(mean, nll, axis=None)

    @tf.function
    def eval_sum(z):
        return tf.reduce_sum(tf.cast(model.log_prob(z, training=False), tf.float64))

    val_data = make_dataset(eval_files, d, transform, batch_size=train_config.eval_batch_size,
                            seed=epoch_seed(train_config.seed, 0), num_levels=num_levels).cache()

    def validate() -> float:
        total, count = 0.0, 0
        for z in val_data:
            total += float(eval_sum(z).numpy())
            count += int(z.shape[0])
        return total / max(count, 1)

    tracker = RunTracker(tracking_config, run_id=state.run_id.numpy().decode() or None)
    if tracker.run_id:
        state.run_id.assign(tracker.run_id)
    tracker.log_params({"train": dataclasses.asdict(train_config),
                        "flow": dataclasses.asdict(model.config),
                        "data": {"fingerprint": metadata.fingerprint, "name": metadata.name,
                                 "event_dim": d, "discrete": metadata.discrete,
                                 "num_levels": metadata.num_levels,
                                 "train_size": n_train},
                        "num_parameters": num_parameters})

    status, rollbacks = "ok", []
    trained_examples, train_time = 0, 0.0
    while int(state.epoch.numpy()) < train_config.epochs and not bool(state.stopped.numpy()):
        epoch = int(state.epoch.numpy()) + 1
        lr = train_config.learning_rate_at(epoch) * float(state.lr_scale.numpy())
        optimizer.learning_rate = lr
        data = make_dataset(train_files, d, transform, batch_size=train_config.batch_size,
                            seed=epoch_seed(train_config.seed, epoch), num_levels=num_levels,
                            shuffle_buffer=train_config.shuffle_buffer or max(n_train, 1),
                            drop_remainder=drop_remainder,
                            max_steps=train_config.max_steps_per_epoch)
        start, losses, seen = time.perf_counter(), [], 0
        for step, z in enumerate(strategy.experimental_distribute_dataset(data), start=1):
            loss, nll = train_step(z)
            losses.append(nll)
            seen += train_config.batch_size
            if step % train_config.log_every_steps == 0:
                elapsed = time.perf_counter() - start
                logger.info("epoch %d step %d loss %.4f nll %.4f (%.0f examples/s)", epoch, step,
                            float(loss.numpy()), float(nll.numpy()), seen / max(elapsed, 1e-9))
        if epoch_hook is not None:
            epoch_hook(epoch, model)
        elapsed = time.perf_counter() - start
        train_ll = -float(tf.reduce_mean(tf.stack(losses)).numpy()) if losses else float("nan")
        val_ll = validate()
        if not (math.isfinite(train_ll) and math.isfinite(val_ll) and _all_finite(model.variables)):
            retries = int(state.nan_retries.numpy()) + 1
            scale = float(state.lr_scale.numpy()) * 0.5
            restored = manager.latest_checkpoint
            rollbacks.append({"epoch": epoch, "train_log_likelihood": train_ll,
                              "val_log_likelihood": val_ll, "restored": restored})
            if retries > train_config.max_nan_retries:
                logger.error("NON-FINITE loss or weights in epoch %d (train LL %s, val LL %s) after "
                             "%d rollback(s): giving up, status 'diverged'", epoch, train_ll, val_ll,
                             retries - 1)
                checkpoint.restore(restored).assert_existing_objects_matched()
                status = "diverged"
                break
            checkpoint.restore(restored).assert_existing_objects_matched()
            state.nan_retries.assign(retries)
            state.lr_scale.assign(scale)
            logger.warning(
                "NON-FINITE loss or weights in epoch %d (train LL %s, val LL %s): ROLLED BACK to "
                "checkpoint %s (epoch %d) and halved the learning rate to %.3g (retry %d of %d)",
                epoch, train_ll, val_ll, restored, int(state.epoch.numpy()),
                train_config.learning_rate_at(int(state.epoch.numpy()) + 1) * scale, retries,
                train_config.max_nan_retries)
            tracker.set_tags({f"rollback_epoch_{epoch}": f"restored {restored}, lr x{scale:g}"})
            continue
        trained_examples += seen
        train_time += elapsed
        history = state.get_history()
        record = {"epoch": epoch, "train_log_likelihood": train_ll, "val_log_likelihood": val_ll,
                  "learning_rate": lr, "examples_per_sec": seen / max(elapsed, 1e-9)}
        history.append(record)
        if val_ll > float(state.best_val.numpy()):
            state.best_val.assign(val_ll)
            state.best_epoch.assign(epoch)
            state.bad_epochs.assign(0)
            for best, v in zip(state.best_weights, model.variables):
                best.assign(v)
        else:
            state.bad_epochs.assign_add(1)
        if train_config.patience and int(state.bad_epochs.numpy()) >= train_config.patience:
            state.stopped.assign(True)
            logger.info("early stopping after epoch %d: no better validation log-likelihood for "
                        "%d epochs (best %.4f at epoch %d)", epoch, train_config.patience,
                        float(state.best_val.numpy()), int(state.best_epoch.numpy()))
        state.history.assign(json.dumps(history))
        state.epoch.assign(epoch)
        manager.save(checkpoint_number=epoch)
        logger.info("epoch %d: train LL %.4f, val LL %.4f, lr %.3g, %.0f examples/s", epoch,
                    train_ll, val_ll, lr, record["examples_per_sec"])
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
    if model.batch_norm_layers and model.config.batch_norm_statistics == "train_set":
        model.set_batch_norm_statistics(make_dataset(
            train_files, d, transform, batch_size=train_config.eval_batch_size,
            seed=epoch_seed(train_config.seed, 0), num_levels=num_levels))
    final_val = validate()
    if not (_all_finite(model.variables) and math.isfinite(final_val)):
        tracker.end("FAILED")
        raise TrainingDivergedError(
            f"the best epoch's model is not finite after setting batch-norm statistics "
            f"(validation LL {final_val}); nothing was saved to {model_uri}")
    summary = {
        "status": status,
        "epochs_run": int(state.epoch.numpy()),
        "best_epoch": best_epoch,
        "best_val_log_likelihood": float(state.best_val.numpy()),
        "final_val_log_likelihood": final_val,
        "early_stopped": bool(state.stopped.numpy()),
        "history": history,
        "rollbacks": rollbacks,
        "nan_retries": int(state.nan_retries.numpy()),
        "train_time_s": train_time,
        "examples_per_sec": trained_examples / train_time if train_time else None,
        "num_parameters": num_parameters,
        "data_fingerprint": metadata.fingerprint,
        "event_dim": d,
        "kind": train_config.kind,
        "train_config": json.loads(train_config.to_json()),
        "checkpoint_dir": checkpoint_dir,
        "mlflow_run_id": tracker.run_id,
    }
    save_flow(model, model_uri, summary)
    logger.info("saved %s flow (best epoch %d, val LL %.4f, status %s) to %s", train_config.kind,
                best_epoch, summary["best_val_log_likelihood"], status, model_uri)
    _log_run_end(tracker, model, summary, metadata, transform_graph_uri, val_data,
                 train_config, model_uri)
    summary["mlflow_not_logged"] = sorted(set(tracker.not_logged))
    return summary


def _log_run_end(tracker: RunTracker, model: FlowModel, summary: dict, metadata,
                 transform_graph_uri: str, val_data: tf.data.Dataset, config: TrainConfig,
                 model_uri: str) -> None:
    """Final metrics, the loss curve, the samples figure and the model folder to MLflow."""
    if not tracker.config.active:
        return
    from components.train import plots

    tracker.log_metrics({"best_val_log_likelihood": summary["best_val_log_likelihood"],
                         "final_val_log_likelihood": summary["final_val_log_likelihood"],
                         "best_epoch": summary["best_epoch"]}, step=summary["epochs_run"])
    tracker.set_tags({"status": summary["status"], "data_fingerprint": metadata.fingerprint})
    if tracker.enabled:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                plots.loss_curve(summary["history"], os.path.join(tmp, "loss_curve.png"))
                samples = model.sample(config.num_plot_samples, seed=config.seed).numpy()
                data = next(iter(val_data)).numpy()[:500]
                plots.samples_figure(
                    samples, os.path.join(tmp, "samples.png"),
                    image_shape=metadata.image_shape, logit_lambda=_logit_lambda(transform_graph_uri),
                    data=data, log_prob_fn=lambda g: model.log_prob(g).numpy())
            except Exception as err:  # noqa: BLE001 - a plot must not fail the training
                logger.warning("could not draw the MLflow figures: %s", err)
            for name in ("loss_curve.png", "samples.png"):
                path = os.path.join(tmp, name)
                if os.path.exists(path):
                    tracker.log_artifact(path, "plots")
    tracker.log_artifact(model_uri, "model")
    tracker.end("FINISHED")
