"""`Trainer`: one training run, the same for every objective (`components.objectives`: maximum
likelihood on data, reverse KL to a target, the VAE's ELBO; each supplies its training part,
`objectives.Training`). All its state is in one checkpoint per epoch.

`run`: the checkpoint folder is locked and checked, the newest readable checkpoint restored (a
fresh run: data-dependent initialisation, then the epoch-0 checkpoint), the MLflow run opened;
then the epoch loop (`loop.train_epochs`) and the end (`finish.finish`).

Several machines (`strategy`): only the chief writes checkpoints, MLflow records and the trained
model; the others write theirs to a temporary folder (saving takes part in collective operations,
so they must still save) and all resume from the chief's checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import tensorflow as tf
import tf_keras

from tfflows.components.objectives import get_objective
from tfflows.components.summary import ModelSummary
from tfflows.components.tracking import Tracker
from tfflows.components.train.checkpoints import (FolderLock, TrainingState, check_signature,
                                                  checkpoints_newest_first, default_checkpoint_dir,
                                                  restore_newest_readable)
from tfflows.components.train.config import TrackingConfig, TrainConfig
from tfflows.components.train.finish import finish
from tfflows.components.train.loop import train_epochs
from tfflows.components.train.run_tracking import open_run
from tfflows.components.train.strategy import barrier, choose_strategy, replicated_step
from tfflows.models import FlowModel

__all__ = ["EpochHook", "Trainer"]

logger = logging.getLogger("tfflows.train")

EpochHook = Callable[[int, FlowModel], None]


class Trainer:
    """One training run: `run` = checkpoints and tracking set up, the epoch loop, the end.

    Args: those of `executor.run_train`.
    """

    def __init__(self, examples_uri: Optional[str], transform_graph_uri: Optional[str], model_uri: str,
                 train_config: TrainConfig, tracking_config: Optional[TrackingConfig] = None,
                 checkpoint_dir: Optional[str] = None, *, epoch_hook: Optional[EpochHook] = None):
        # First: a multi-worker strategy must exist before TensorFlow runs any other op.
        self.strategy = choose_strategy()
        self.replicas = self.strategy.num_replicas_in_sync
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
        self._scratch = scratch = None if self.chief else tempfile.mkdtemp(prefix="tfflows-worker-")
        self.model_uri = model_uri if scratch is None else os.path.join(scratch, "model")
        self.save_dir = self.checkpoint_dir if scratch is None else os.path.join(scratch, "checkpoints")
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
        self.state = TrainingState(self.model)
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
                                              **self.state.trackables())
        self.num_parameters = int(sum(np.prod(v.shape) for v in self.model.trainable_variables))
        self.gradient_step = replicated_step(self.strategy, self.model, self.optimizer, self.training.step_values,
                                             float(train_config.l2), train_config.jit_compile, logger)
        self.status = "ok"
        self.rollbacks: List[Dict[str, Any]] = []  # one entry per non-finite epoch (`loop.roll_back`)
        self.trained_examples, self.train_time = 0, 0.0
        self.lock: Optional[FolderLock] = None
        self.manager: Optional[tf.train.CheckpointManager] = None  # set by _open_checkpoints
        self.tracker: Optional[Tracker] = None  # set by run
        self.restore_point: Optional[str] = None

    def _open_checkpoints(self) -> List[str]:
        """Locks and checks the chief's folder; its checkpoints, newest first."""
        if self.chief:
            self.lock = FolderLock(self.checkpoint_dir)
            signature = {"flow": self.model.get_config(), "data_fingerprint": self.training.fingerprint,
                         "batch_size": self.config.batch_size, "seed": self.config.seed,
                         "objective": self.config.objective}
            check_signature(self.checkpoint_dir, json.loads(json.dumps(signature)), self.config.resume)
        barrier(self.strategy)  # the others read the chief's folder only once it is ready ...
        candidates = checkpoints_newest_first(self.checkpoint_dir)
        barrier(self.strategy)  # ... and before the chief may write its epoch-0 checkpoint there
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.save_dir, max_to_keep=3,
                                                  checkpoint_name="ckpt")
        return candidates

    def _resume_or_start(self, candidates: List[str]) -> None:
        """Restores the newest readable checkpoint, or starts afresh with the epoch-0 checkpoint."""
        self.restore_point = restore_newest_readable(self.checkpoint, self.checkpoint_dir, candidates, self.state)
        if self.restore_point is None:
            # Data-dependent initialisation (Glow's ActNorm) from epoch 1's first batch, before the
            # first rollback point and outside any replicated step.
            self.training.initialise(self.model)
            assert self.manager is not None  # run opens the checkpoints first
            self.restore_point = self.manager.save(checkpoint_number=0)  # epoch 0: the first rollback point

    def run(self) -> ModelSummary:
        try:
            self._resume_or_start(self._open_checkpoints())
            self.tracker = open_run(self)
            train_epochs(self)
            return finish(self)
        finally:
            if self.lock is not None:
                self.lock.release()
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)
