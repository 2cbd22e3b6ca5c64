"""Where training runs: the `tf.distribute` strategy and the gradient step replicated under it.

When ``TF_CONFIG`` names more than one task (as Kubeflow's TFJob and Vertex custom jobs set it),
training runs under `tf.distribute.MultiWorkerMirroredStrategy`: every worker reads the same
global batches, takes its slice of each (``batch_size`` is the global batch) and the gradients are
all-reduced, so all workers hold identical weights.
"""

from __future__ import annotations

import logging
from typing import Optional

import tensorflow as tf

from tfflows.models.training import CompiledStep, gradient_step, loss_and_gradients

__all__ = ["barrier", "choose_strategy", "distribute", "replicated_step"]


def choose_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy when ``TF_CONFIG`` names several tasks, else the GPUs of this
    machine (mirrored), one GPU, or the default (CPU). Call it before TensorFlow runs any other op:
    a multi-worker strategy must exist first."""
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


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Waits for every worker (an all-reduce of one number); nothing to wait for on one machine."""
    if is_multi_worker(strategy):
        strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None)


def distribute(strategy: tf.distribute.Strategy, data: tf.data.Dataset):
    """`data` split across the replicas; every worker reads every global batch and keeps its
    slice: the same global batches as one worker, whatever the number of files."""
    if is_multi_worker(strategy):
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        data = data.with_options(options)
    return strategy.experimental_distribute_dataset(data)


def _on_replicas(strategy, replica_step):
    """``replica_step`` on every replica's slice; the mean loss and value over the replicas."""
    def step(batch):
        loss, value = strategy.run(replica_step, args=(batch,))
        mean = tf.distribute.ReduceOp.MEAN
        return strategy.reduce(mean, loss, axis=None), strategy.reduce(mean, value, axis=None)
    return step


def replicated_step(strategy, model, optimizer, objective, l2: float, jit_compile: bool,
                    logger: Optional[logging.Logger] = None) -> CompiledStep:
    """`models.training.gradient_step` (the step `FlowModel.fit` runs) on every replica.

    One replica: the whole step is one XLA program. Several: XLA cannot compile collective ops
    on CPU (TF 2.21 under MultiWorkerMirroredStrategy: UnimplementedError, and the process crashed
    after it), so only each replica's gradients are compiled; the all-reduce and the update stay
    in the plain graph. ``logger`` reports a step XLA cannot compile (default TensorFlow's).
    """
    replicas = strategy.num_replicas_in_sync

    def replica_step(batch):
        return gradient_step(model, optimizer, objective, batch, l2, replicas)

    xla_step = None
    if replicas > 1:
        xla_gradients = tf.function(lambda batch: loss_and_gradients(model, objective, batch, l2, replicas),
                                    jit_compile=True)

        def replica_step_with_xla_gradients(batch):
            loss, value, gradients = xla_gradients(batch)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            return loss, value

        xla_step = tf.function(_on_replicas(strategy, replica_step_with_xla_gradients))
    return CompiledStep(_on_replicas(strategy, replica_step), jit_compile=jit_compile, xla_step=xla_step,
                        logger=logger)
