"""Checkpoints of a run: what they hold, the lock on their folder, and resuming from the newest
one that can be read.

A run resumes from the newest checkpoint it can read; an unreadable one (a truncated file after a
crash or a full disk) is skipped with a warning, and an unreadable ``checkpoint`` state file is
reported and worked around (the checkpoints are found from their files). One run at a time may
use a checkpoint folder: a second one refuses while the first holds the lock file
``<checkpoint_dir>.lock`` (local folders; the lock dies with its process). With several workers
only the chief writes to the folder; all resume from its checkpoints.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from typing import List, Optional

import numpy as np
import tensorflow as tf

from tfflows.components.errors import DataError
from tfflows.models.training import first_line

__all__ = ["FolderLock", "TrainingState", "check_signature", "checkpoints_newest_first",
           "default_checkpoint_dir", "restore_newest_readable"]

logger = logging.getLogger("tfflows.train")


def default_checkpoint_dir(model_uri: str) -> str:
    """``<parent of model_uri>/checkpoints``: stable across re-runs that write the same model."""
    return os.path.join(os.path.dirname(os.path.abspath(model_uri.rstrip("/"))), "checkpoints")


class TrainingState:
    """Everything a checkpoint holds besides the model and the optimizer."""

    def __init__(self, model):
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


def check_signature(checkpoint_dir: str, signature: dict, resume: bool) -> None:
    """Makes the folder (emptied first unless ``resume``) and refuses one that holds checkpoints
    of another training (its ``train_signature.json`` differs from ``signature``)."""
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


def checkpoints_newest_first(checkpoint_dir: str) -> List[str]:
    """``ckpt-<n>`` prefixes found from their index files (not from the ``checkpoint`` state
    file, which a crash can leave corrupt), newest first."""
    numbers = []
    for name in tf.io.gfile.listdir(checkpoint_dir) if tf.io.gfile.isdir(checkpoint_dir) else []:
        match = re.fullmatch(r"ckpt-(\d+)\.index", name)
        if match:
            numbers.append(int(match.group(1)))
    return [os.path.join(checkpoint_dir, f"ckpt-{n}") for n in sorted(numbers, reverse=True)]


def restore_newest_readable(checkpoint: tf.train.Checkpoint, checkpoint_dir: str,
                            candidates: List[str], state: TrainingState) -> Optional[str]:
    """Restores the first readable of ``candidates`` (newest first) and returns it; None when
    there are none (a fresh run).

    Raises:
      DataError: there are checkpoints, but none is readable.
    """
    state_file = os.path.join(checkpoint_dir, "checkpoint")
    if candidates and tf.io.gfile.exists(state_file) and tf.train.get_checkpoint_state(checkpoint_dir) is None:
        logger.warning("the checkpoint state file %s is unreadable (corrupt); resuming from the "
                       "checkpoint files beside it instead", state_file)
    for path in candidates:
        try:
            checkpoint.restore(path).assert_existing_objects_matched()
        except (IndexError, ValueError, AssertionError, tf.errors.OpError) as error:
            logger.warning("checkpoint %s is unreadable (%s); trying the one before it", path, first_line(error))
            continue
        logger.info("resumed from %s (epoch %d done)", path, int(state.epoch.numpy()))
        return path
    if candidates:
        raise DataError(checkpoint_dir, "", f"none of its {len(candidates)} checkpoints is readable",
                        "delete that folder or set train.resume=false to start afresh")
    return None


class FolderLock:
    """An exclusive lock on ``<folder>.lock`` for the life of a run (`fcntl.flock`: the kernel
    drops it when the process dies, so a killed run never leaves a stale lock).

    A folder in a bucket (a run's ``--output gs://...``) cannot be flocked: the lock is then a
    local file named after the folder in the temporary folder, so two runs on this machine into
    one bucket output still exclude each other (a cluster job runs one chief anyway)."""

    def __init__(self, folder: str):
        if "://" in folder:
            digest = hashlib.sha256(folder.rstrip("/").encode()).hexdigest()[:24]
            self.path = os.path.join(tempfile.gettempdir(), "tfflows-locks", f"{digest}.lock")
        else:
            self.path = folder.rstrip("/") + ".lock"
        self.handle = None
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
