"""Executor logic of the train component: `run_train` and the `Trainer` behind it.

The loop is the same for every objective (`components.objectives`: maximum likelihood on data,
reverse KL to a target, the VAE's ELBO; each supplies its training part, `objectives.Training`);
one epoch at a time, all state in one checkpoint:

1. epoch ``e`` draws its data order and dequantisation noise (reverse KL: its samples of q)
   from seeds derived from ``(seed, e)`` only, so an interrupted run that resumes from the
   checkpoint of epoch ``e - 1`` sees exactly what an uninterrupted run sees (`Trainer.epoch_step`);
2. after the epoch's steps: the mean train value of the metric and its validation value
   (log-likelihood in model space with batch norm in evaluation mode and fixed dequantisation
   noise; reverse KL: the ELBO on fixed samples);
3. a non-finite loss, validation value or weight rolls back to the last checkpoint, halves the
   learning rate and retries, at most ``max_nan_retries`` times; one more non-finite epoch ends
   the run with status "diverged" (`Trainer.rollback_step`);
4. the best epoch's weights are kept (early stopping after ``patience`` epochs without
   improvement); a checkpoint (model, optimizer, epoch, best state, history, MLflow run id) is
   written after every epoch (`Trainer.accept_step`);
5. at the end: best weights, batch-norm statistics of the whole (dequantised, transformed)
   train split, `save_flow`, MLflow figures and artifacts (`Trainer.summary_step`).

Checkpoints: a run resumes from the newest checkpoint it can read; an unreadable one (a
truncated file after a crash or a full disk) is skipped with a warning, and an unreadable
``checkpoint`` state file is reported and worked around (the checkpoints are found from their
files). One run at a time may use a checkpoint folder: a second one refuses while the first
holds the lock file ``<checkpoint_dir>.lock`` (local folders; the lock dies with its process).

Several machines: when ``TF_CONFIG`` names more than one task (as Kubeflow's TFJob and Vertex
custom jobs set it), training runs under `tf.distribute.MultiWorkerMirroredStrategy`: every
worker reads the same global batches, takes its slice of each (``batch_size`` is the global
batch) and the gradients are all-reduced, so all workers hold identical weights. Only the chief
writes checkpoints, MLflow records and the trained model; the others write theirs to a
temporary folder (saving takes part in collective operations, so they must still save) and all
resume from the chief's checkpoints. Run one worker with
``python -m tfflows.components.train.executor`` (`main`; see ``infra/k8s/training/``).
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import time
from typing import Callable, List, Optional

import numpy as np
import tensorflow as tf
import tf_keras

from tfflows.components.errors import DataError
from tfflows.components.flow_artifact import save_flow
from tfflows.components.objectives import Training, get_objective
from tfflows.components.objectives.data import epoch_seed, make_dataset
from tfflows.components.summary import ModelSummary
from tfflows.components.tracking import Tracker
from tfflows.components.train.config import TrackingConfig, TrainConfig
from tfflows.models import FlowModel
from tfflows.models.flows import kernel_l2

__all__ = ["Trainer", "run_train", "make_dataset", "epoch_seed", "default_checkpoint_dir",
           "TrainingDivergedError"]

logger = logging.getLogger("tfflows.train")

EpochHook = Callable[[int, FlowModel], None]


class TrainingDivergedError(RuntimeError):
    """Training produced no finite model (every epoch diverged); nothing was saved."""


def default_checkpoint_dir(model_uri: str) -> str:
    """``<parent of model_uri>/checkpoints``: stable across re-runs that write the same model."""
    return os.path.join(os.path.dirname(os.path.abspath(model_uri.rstrip("/"))), "checkpoints")


def _strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy when ``TF_CONFIG`` names several tasks, else the GPUs of this
    machine (mirrored), one GPU, or the default (CPU)."""
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    tasks = resolver.cluster_spec().as_dict()
    if sum(len(tasks.get(kind, ())) for kind in ("chief", "worker")) > 1:
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    if len(gpus) == 1:
        return tf.distribute.OneDeviceStrategy("/gpu:0")
    return tf.distribute.get_strategy()


def _all_finite(variables) -> bool:
    return all(bool(tf.reduce_all(tf.math.is_finite(v)).numpy()) for v in variables
               if v.dtype.is_floating)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


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

    def get_history(self) -> list[dict]:
        return json.loads(self.history.numpy().decode())


@dataclasses.dataclass
class _Epoch:
    """What one epoch's steps gave: its learning rate, values, examples and time."""

    epoch: int
    learning_rate: float
    train_value: float
    val_value: float
    examples: int
    seconds: float
    finite: bool


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


def _checkpoints_newest_first(checkpoint_dir: str) -> List[str]:
    """``ckpt-<n>`` prefixes found from their index files (not from the ``checkpoint`` state
    file, which a crash can leave corrupt), newest first."""
    numbers = []
    for name in tf.io.gfile.listdir(checkpoint_dir) if tf.io.gfile.isdir(checkpoint_dir) else []:
        match = re.fullmatch(r"ckpt-(\d+)\.index", name)
        if match:
            numbers.append(int(match.group(1)))
    return [os.path.join(checkpoint_dir, f"ckpt-{n}") for n in sorted(numbers, reverse=True)]


class _FolderLock:
    """An exclusive lock on ``<folder>.lock`` for the life of a run (`fcntl.flock`: the kernel
    drops it when the process dies, so a killed run never leaves a stale lock)."""

    def __init__(self, folder: str):
        self.path = folder.rstrip("/") + ".lock"
        self.handle = None
        if "://" in folder:  # object stores have no flock; a cluster job runs one chief anyway
            return
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise DataError(folder, "", f"checkpoint folder in use by another training ({holder})",
                            "wait for that run to finish, or write this run to another output folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        self.handle = handle

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


class Trainer:
    """One training run. `run` = set-up and restore, then per epoch `epoch_step` followed by
    `accept_step` (finite) or `rollback_step` (not), then `summary_step`.

    Args: those of `run_train`.
    """

    def __init__(self, examples_uri: Optional[str], transform_graph_uri: Optional[str], model_uri: str,
                 train_config: TrainConfig, tracking_config: Optional[TrackingConfig] = None,
                 checkpoint_dir: Optional[str] = None, *, epoch_hook: Optional[EpochHook] = None):
        # First: a multi-worker strategy must exist before TensorFlow runs any other op.
        self.strategy = _strategy()
        self.replicas = self.strategy.num_replicas_in_sync
        self.multi_worker = isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy)
        self.chief = bool(self.strategy.extended.should_checkpoint)
        self.config = train_config
        self.examples_uri = examples_uri
        self.epoch_hook = epoch_hook
        self.objective = get_objective(train_config.objective)
        if self.replicas > 1 and not self.objective.multi_replica:
            raise ValueError(f"objective {train_config.objective!r} trains on one device (its batches carry "
                             "per-step seeds that cannot be split across replicas); run it without TF_CONFIG "
                             "on one GPU or the CPU")
        self.checkpoint_dir = checkpoint_dir or default_checkpoint_dir(model_uri)
        # Non-chief workers write what they must write to a folder of their own, deleted at the end.
        self._scratch = None if self.chief else tempfile.mkdtemp(prefix="tfflows-worker-")
        self.model_uri = model_uri if self.chief else os.path.join(self._scratch, "model")
        self.save_dir = self.checkpoint_dir if self.chief else os.path.join(self._scratch, "checkpoints")
        tracking_config = tracking_config or TrackingConfig(enabled=False)
        self.tracking_config = tracking_config if self.chief else dataclasses.replace(tracking_config, enabled=False)
        self.training = self.objective.training(train_config, examples_uri, transform_graph_uri)
        self.metric = self.training.metric
        self.train_key, self.val_key = f"train_{self.metric}", f"val_{self.metric}"
        tf_keras.utils.set_random_seed(train_config.seed)
        with self.strategy.scope():
            self.model = self.training.build_model()
            self.optimizer = tf_keras.optimizers.Adam(learning_rate=train_config.learning_rate)
            self.optimizer.build(self.model.trainable_variables)
        # Outside the scope: a multi-worker scope broadcasts initial values, which strings cannot
        # be; every worker computes the same state anyway.
        self.state = _State(self.model)
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
                                              **self.state.trackables())
        self.num_parameters = int(sum(np.prod(v.shape) for v in self.model.trainable_variables))
        self._plain_step = tf.function(lambda batch: self._replicated_step(batch, self._gradients))
        if self.replicas > 1:
            # XLA cannot compile collective ops on CPU (TF 2.21 under MultiWorkerMirroredStrategy:
            # UnimplementedError, and the process crashed after it): only each replica's
            # gradients are compiled; the all-reduce and the update stay in the plain graph.
            xla_gradients = tf.function(self._gradients, jit_compile=True)
            self._compiled_step = tf.function(lambda batch: self._replicated_step(batch, xla_gradients))
        else:
            self._compiled_step = tf.function(self._plain_step.python_function, jit_compile=True)
        self.use_xla = train_config.jit_compile
        self.status, self.rollbacks = "ok", []
        self.trained_examples, self.train_time = 0, 0.0
        self.lock = self.manager = self.tracker = self.restore_point = None
        self._candidates: List[str] = []

    # ----- set-up -------------------------------------------------------------------------
    def _barrier(self) -> None:
        """Waits for every worker (an all-reduce of one number)."""
        if self.multi_worker:
            self.strategy.reduce(tf.distribute.ReduceOp.SUM,
                                 self.strategy.run(lambda: tf.constant(1.0)), axis=None)

    def _prepare_checkpoints(self) -> None:
        if self.chief:
            self.lock = _FolderLock(self.checkpoint_dir)
            signature = {"flow": self.model.get_config(), "data_fingerprint": self.training.fingerprint,
                         "batch_size": self.config.batch_size, "seed": self.config.seed,
                         "objective": self.config.objective}
            _check_checkpoint_dir(self.checkpoint_dir, json.loads(json.dumps(signature)), self.config.resume)
        self._barrier()  # the others read the chief's folder only once it is ready ...
        self._candidates = _checkpoints_newest_first(self.checkpoint_dir)
        self._barrier()  # ... and before the chief may write its epoch-0 checkpoint there
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.save_dir, max_to_keep=3,
                                                  checkpoint_name="ckpt")

    def _restore(self) -> None:
        """Restores the newest readable checkpoint of the (chief's) folder, or saves epoch 0."""
        candidates = self._candidates
        state_file = os.path.join(self.checkpoint_dir, "checkpoint")
        if candidates and tf.io.gfile.exists(state_file) and tf.train.get_checkpoint_state(self.checkpoint_dir) is None:
            logger.warning("the checkpoint state file %s is unreadable (corrupt); resuming from the "
                           "checkpoint files beside it instead", state_file)
        for path in candidates:
            try:
                self.checkpoint.restore(path).assert_existing_objects_matched()
            except (IndexError, ValueError, AssertionError, tf.errors.OpError) as error:
                logger.warning("checkpoint %s is unreadable (%s); trying the one before it", path,
                               _first_line(error))
                continue
            self.restore_point = path
            logger.info("resumed from %s (epoch %d done)", path, int(self.state.epoch.numpy()))
            return
        if candidates:
            raise DataError(self.checkpoint_dir, "", f"none of its {len(candidates)} checkpoints is readable",
                            "delete that folder or set train.resume=false to start afresh")
        # Data-dependent initialisation (Glow's ActNorm) from epoch 1's first batch, before the
        # first rollback point and outside any replicated step.
        self.training.initialise(self.model)
        self.restore_point = self.manager.save(checkpoint_number=0)  # epoch 0: the first rollback point

    def _open_tracking(self) -> None:
        self.tracker = Tracker(self.tracking_config, run_id=self.state.run_id.numpy().decode() or None)
        if self.tracker.start_run():
            self.state.run_id.assign(self.tracker.run_id)
        self.tracker.log_params({"train": dataclasses.asdict(self.config),
                                 "flow": self.model.get_config(),
                                 "data": self.training.params,
                                 "num_parameters": self.num_parameters,
                                 "replicas": self.replicas})
        if self.examples_uri:  # the splits it is trained, validated and tested on, as the run's dataset inputs
            from tfflows.components.ingest import read_metadata

            self.tracker.log_datasets(self.training.params["name"], self.training.fingerprint,
                                      self.examples_uri, read_metadata(self.examples_uri).split_sizes)

    # ----- one step -----------------------------------------------------------------------
    def _gradients(self, batch):
        """(loss, the batch's metric value, gradients) on one replica's slice of the batch."""
        l2 = float(self.config.l2)
        with tf.GradientTape() as tape:
            objective_loss, value = self.training.step_values(self.model, batch)
            loss = objective_loss + l2 * kernel_l2(self.model.trainable_variables) if l2 else objective_loss
            # Each replica holds 1/replicas of the global batch; the all-reduce sums the gradients.
            scaled = loss / self.replicas
        return loss, value, tape.gradient(scaled, self.model.trainable_variables)

    def _replicated_step(self, batch, gradients):
        def step_fn(replica_batch):
            loss, value, grads = gradients(replica_batch)
            self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
            return loss, value

        loss, value = self.strategy.run(step_fn, args=(batch,))
        mean = tf.distribute.ReduceOp.MEAN
        return self.strategy.reduce(mean, loss, axis=None), self.strategy.reduce(mean, value, axis=None)

    def train_step(self, batch):
        """One step, XLA-compiled when ``jit_compile`` and XLA can compile it (else the plain graph)."""
        if self.use_xla:
            try:
                return self._compiled_step(batch)
            except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as error:
                if "compil" not in str(error).lower():
                    raise
                # Compilation fails before anything runs, so the plain graph can take this batch.
                self.use_xla = False
                logger.warning("XLA could not compile the train step (%s); using the plain graph",
                               _first_line(error))
        return self._plain_step(batch)

    def _distributed(self, data: tf.data.Dataset):
        if self.multi_worker:
            # Every worker reads every global batch and keeps its slice: the same global batches
            # as one worker, whatever the number of files.
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
            data = data.with_options(options)
        return self.strategy.experimental_distribute_dataset(data)

    # ----- one epoch ----------------------------------------------------------------------
    def epoch_step(self, epoch: int) -> _Epoch:
        """The epoch's steps, then its train and validation values."""
        config, metric = self.config, self.metric
        lr = config.learning_rate_at(epoch) * float(self.state.lr_scale.numpy())
        self.optimizer.learning_rate = lr
        start, values, seen = time.perf_counter(), [], 0
        for step, batch in enumerate(self._distributed(self.training.batches(epoch)), start=1):
            loss, value = self.train_step(batch)
            values.append(value)
            seen += config.batch_size
            if step % config.log_every_steps == 0:
                elapsed = time.perf_counter() - start
                logger.info("epoch %d step %d loss %.4f %s %.4f (%.0f examples/s)", epoch, step,
                            float(loss.numpy()), metric, float(value.numpy()), seen / max(elapsed, 1e-9))
        if self.epoch_hook is not None:
            self.epoch_hook(epoch, self.model)
        elapsed = time.perf_counter() - start
        train_value = float(tf.reduce_mean(tf.stack(values)).numpy()) if values else float("nan")
        val_value = self.training.validate(self.model)
        finite = math.isfinite(train_value) and math.isfinite(val_value) and _all_finite(self.model.variables)
        return _Epoch(epoch, lr, train_value, val_value, seen, elapsed, finite)

    def rollback_step(self, result: _Epoch) -> bool:
        """Back to the last checkpoint with the learning rate halved; False (status "diverged",
        the last checkpoint restored) once ``max_nan_retries`` rollbacks did not help."""
        state, metric = self.state, self.metric
        retries = int(state.nan_retries.numpy()) + 1
        restored = self.restore_point
        self.checkpoint.restore(restored).assert_existing_objects_matched()
        if retries > self.config.max_nan_retries:
            logger.error("NON-FINITE loss or weights in epoch %d (train %s %s, val %s) after "
                         "%d rollback(s): giving up, status 'diverged'", result.epoch, metric,
                         result.train_value, result.val_value, len(self.rollbacks))
            self.status = "diverged"
            return False
        scale = float(state.lr_scale.numpy()) * 0.5
        state.nan_retries.assign(retries)
        state.lr_scale.assign(scale)
        self.rollbacks.append({"epoch": result.epoch, self.train_key: result.train_value,
                               self.val_key: result.val_value, "restored": restored})
        logger.warning(
            "NON-FINITE loss or weights in epoch %d (train %s %s, val %s): ROLLED BACK to "
            "checkpoint %s (epoch %d) and halved the learning rate to %.3g (retry %d of %d)",
            result.epoch, metric, result.train_value, result.val_value, restored,
            int(state.epoch.numpy()), self.config.learning_rate_at(int(state.epoch.numpy()) + 1) * scale,
            retries, self.config.max_nan_retries)
        self.tracker.set_tags({f"rollback_epoch_{result.epoch}": f"restored {restored}, lr x{scale:g}"})
        return True

    def accept_step(self, result: _Epoch) -> None:
        """Records a finite epoch: history, best weights, early stopping, checkpoint, MLflow."""
        state, epoch = self.state, result.epoch
        self.trained_examples += result.examples
        self.train_time += result.seconds
        record = {"epoch": epoch, self.train_key: result.train_value, self.val_key: result.val_value,
                  "learning_rate": result.learning_rate,
                  "examples_per_sec": result.examples / max(result.seconds, 1e-9)}
        history = state.get_history() + [record]
        if result.val_value > float(state.best_val.numpy()):
            state.best_val.assign(result.val_value)
            state.best_epoch.assign(epoch)
            state.bad_epochs.assign(0)
            for best, v in zip(state.best_weights, self.model.variables):
                best.assign(v)
        else:
            state.bad_epochs.assign_add(1)
        if self.config.patience and int(state.bad_epochs.numpy()) >= self.config.patience:
            state.stopped.assign(True)
            logger.info("early stopping after epoch %d: no better validation %s for %d epochs "
                        "(best %.4f at epoch %d)", epoch, self.metric, self.config.patience,
                        float(state.best_val.numpy()), int(state.best_epoch.numpy()))
        state.history.assign(json.dumps(history))
        state.epoch.assign(epoch)
        self.restore_point = self.manager.save(checkpoint_number=epoch)
        logger.info("epoch %d: train %s %.4f, val %s %.4f, lr %.3g, %.0f examples/s", epoch, self.metric,
                    result.train_value, self.metric, result.val_value, result.learning_rate,
                    record["examples_per_sec"],
                    extra={"epoch": epoch, "epochs": self.config.epochs})  # the CLI's progress bar/lines
        self.tracker.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=epoch)

    # ----- the end ------------------------------------------------------------------------
    def summary_step(self) -> ModelSummary:
        """Best weights and batch-norm statistics, then the artifact, its summary and MLflow."""
        state, metric, config = self.state, self.metric, self.config
        best_epoch = int(state.best_epoch.numpy())
        if best_epoch == 0:
            self.tracker.set_tags({"status": "diverged"})
            self.tracker.end("FAILED")
            raise TrainingDivergedError(
                f"training diverged: no epoch ended with finite loss and weights "
                f"({len(self.rollbacks)} rollback(s)); nothing was saved to {self.model_uri}. Lower "
                f"learning_rate (now {config.learning_rate}) or check the data.")
        for v, best in zip(self.model.variables, state.best_weights):
            v.assign(best)
        self.training.finish(self.model)
        final_val = self.training.validate(self.model)
        if not (_all_finite(self.model.variables) and math.isfinite(final_val)):
            self.tracker.end("FAILED")
            raise TrainingDivergedError(
                f"the best epoch's model is not finite after setting batch-norm statistics "
                f"(validation {metric} {final_val}); nothing was saved to {self.model_uri}")
        summary = ModelSummary(
            objective=config.objective, metric=metric, status=self.status,
            kind=self.objective.model_kind(config), epochs_run=int(state.epoch.numpy()),
            best_epoch=best_epoch, best_val=float(state.best_val.numpy()), final_val=final_val,
            early_stopped=bool(state.stopped.numpy()), history=state.get_history(), rollbacks=self.rollbacks,
            nan_retries=int(state.nan_retries.numpy()), train_time_s=self.train_time,
            examples_per_sec=self.trained_examples / self.train_time if self.train_time else None,
            num_parameters=self.num_parameters, replicas=self.replicas,
            data_fingerprint=self.training.fingerprint, event_dim=self.training.event_dim, train_config=config,
            checkpoint_dir=self.checkpoint_dir, mlflow_run_id=self.tracker.run_id,
            details=self.training.details(self.model))
        save_flow(self.model, self.model_uri, summary.to_dict())
        logger.info("saved %s model (best epoch %d, val %s %.4f, status %s) to %s", summary.kind,
                    best_epoch, metric, summary.best_val, self.status, self.model_uri)
        _log_run_end(self.tracker, self.model, summary, self.training, self.model_uri)
        summary.mlflow_not_logged = sorted(set(self.tracker.not_logged))
        return summary

    def run(self) -> ModelSummary:
        try:
            self._prepare_checkpoints()
            self._restore()
            self._open_tracking()
            state = self.state
            while int(state.epoch.numpy()) < self.config.epochs and not bool(state.stopped.numpy()):
                result = self.epoch_step(int(state.epoch.numpy()) + 1)
                if result.finite:
                    self.accept_step(result)
                elif not self.rollback_step(result):
                    break
            return self.summary_step()
        finally:
            if self.lock is not None:
                self.lock.release()
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)


def run_train(examples_uri: Optional[str], transform_graph_uri: Optional[str], model_uri: str,
              train_config: TrainConfig, tracking_config: Optional[TrackingConfig] = None,
              checkpoint_dir: Optional[str] = None, *,
              epoch_hook: Optional[EpochHook] = None) -> ModelSummary:
    """Trains a flow (on the transformed train split, or to a target) and writes it with `save_flow`.

    Args:
      examples_uri: an ingested Examples artifact (`components.ingest.run_ingest`); None for
        objective "reverse_kl".
      transform_graph_uri: its TransformGraph artifact (`components.transform.run_transform`);
        None for objective "reverse_kl".
      model_uri: folder of the Model artifact (written by `save_flow`; by the chief only when
        several workers train).
      train_config: the objective, the flow and the optimisation.
      tracking_config: MLflow tracking (None: none).
      checkpoint_dir: checkpoint folder; a re-run with the same folder resumes
        (default `default_checkpoint_dir(model_uri)`).
      epoch_hook: ``hook(epoch, model)`` called after each epoch's steps, before the epoch is
        checked and checkpointed (for tests: poison weights, simulate a crash).

    Returns:
      The `ModelSummary` (also ``summary.json`` in the artifact): status ("ok" or "diverged": it
      stopped after too many non-finite rollbacks and keeps the best finite epoch), the best and
      final validation values of the objective's metric, the history, rollbacks, throughput and
      the objective's details (reverse KL: the target and its importance diagnostics, ESS/n,
      log Z and KL estimates from 10,000 samples; VAE: its arguments and data scale).

    Raises:
      TrainingDivergedError: no epoch ended with a finite model; no artifact is written.
      ValueError: ``checkpoint_dir`` holds checkpoints of a different training.
      DataError: another run holds ``checkpoint_dir``, or none of its checkpoints is readable.
    """
    return Trainer(examples_uri, transform_graph_uri, model_uri, train_config, tracking_config,
                   checkpoint_dir, epoch_hook=epoch_hook).run()


def _log_run_end(tracker: Tracker, model: FlowModel, summary: ModelSummary, training: Training,
                 model_uri: str) -> None:
    """Final metrics, the loss curve, the objective's figures and the model folder to MLflow."""
    if not tracker.config.active:
        return
    from tfflows.components.train import plots

    metric = summary.metric
    final = {f"best_val_{metric}": summary.best_val, f"final_val_{metric}": summary.final_val,
             "best_epoch": summary.best_epoch, **(summary.details.metrics() if summary.details else {})}
    tracker.log_metrics({k: v for k, v in final.items() if v is not None and math.isfinite(v)},
                        step=summary.epochs_run)
    tracker.set_tags({"status": summary.status, "objective": summary.objective,
                      "data_fingerprint": summary.data_fingerprint})
    if tracker.enabled:
        figures = {}
        try:
            figures["loss_curve.png"] = plots.loss_curve(summary.history, metric)
            figures.update(training.figures(model))
        except Exception as err:  # noqa: BLE001 - a plot must not fail the training
            logger.warning("could not draw the MLflow figures: %s", err)
        for name, figure in figures.items():
            tracker.log_figure(figure, f"plots/{name}")
    tracker.log_artifact(model_uri, "model")
    tracker.end("FINISHED")


def main(argv: Optional[List[str]] = None) -> int:
    """One training worker (the command of each task of a TFJob / Vertex custom job).

    ``python -m tfflows.components.train.executor --examples DIR --transform-graph DIR --model DIR
    --train-config train.json [--tracking-config tracking.json] [--checkpoint-dir DIR]``: the
    config files hold `TrainConfig` / `TrackingConfig` JSON (their ``to_json``); the folders are
    artifacts of an earlier ``tfflows run`` on storage every worker sees. ``TF_CONFIG`` decides
    the workers; prints the summary's status line.
    """
    parser = argparse.ArgumentParser(prog="python -m tfflows.components.train.executor")
    parser.add_argument("--examples", help="ingested Examples folder (not for reverse_kl)")
    parser.add_argument("--transform-graph", help="TransformGraph folder (not for reverse_kl)")
    parser.add_argument("--model", required=True, help="output folder of the trained model (chief)")
    parser.add_argument("--train-config", required=True, help="TrainConfig JSON file")
    parser.add_argument("--tracking-config", help="TrackingConfig JSON file (default: no MLflow)")
    parser.add_argument("--checkpoint-dir", help="shared checkpoint folder (default: beside --model)")
    args = parser.parse_args(argv)

    def read(path):
        with open(path) as f:
            return f.read()

    tracking = TrackingConfig.from_json(read(args.tracking_config)) if args.tracking_config else None
    summary = run_train(args.examples, args.transform_graph, args.model,
                        TrainConfig.from_json(read(args.train_config)), tracking, args.checkpoint_dir)
    print(f"status {summary.status}: {summary.epochs_run} epochs on {summary.replicas} replica(s), "
          f"best val {summary.metric} {summary.best_val:.4f} (epoch {summary.best_epoch})")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
