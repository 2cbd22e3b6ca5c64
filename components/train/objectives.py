"""What the trainer maximises, and on what: one class per `TrainConfig.objective`.

The training loop (`executor.run_train`: checkpoints, resume, rollback on NaN, early stopping,
MLflow) is the same for every objective; an objective supplies

- ``build_model()``: the flow (or VAE) to train;
- ``event_dim``, ``fingerprint`` (identifies the data or target: checkpoints of another one are
  refused) and ``params`` (logged to MLflow);
- ``batches(epoch)``: what one epoch's steps consume, fixed by ``(seed, epoch)`` so a resumed run
  sees what an uninterrupted one does;
- ``step_values(model, batch)``: ``(loss to minimise, the batch's value of the metric)``;
- ``validate(model)``: the validation value of the metric (higher is better);
- ``finish(model)`` (after the best weights are restored), ``figures(model, folder)`` (paths of
  the MLflow figures it drew) and ``summary(model)`` (extra entries of the run's summary).

``metric`` names what is reported: "log_likelihood" (nats per example, model space) for
maximum likelihood, "elbo" for reverse KL (E_q[log p~ - log q], nats) and for the VAE
(E_q[log p(x, z) - log q(z | x)], nats per example).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import List, Optional

import numpy as np
import tensorflow as tf

from tfflows.components.transform import PREPROCESSING_FILE, dequantize
from tfflows.models import build_flow

from tfflows.components.train.config import TrainConfig

__all__ = ["MaximumLikelihood", "ReverseKL", "VariationalAutoencoder", "make_objective", "target_fingerprint", "epoch_seed",
           "make_dataset", "logit_lambda"]

logger = logging.getLogger("tfflows.train")


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s data order and noise (epoch 0: validation and batch-norm
    statistics)."""
    return (int(seed) * 1_000_003 + int(epoch) * 7_919 + 17) % (2**31 - 1)


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


def logit_lambda(transform_graph_uri: str) -> Optional[float]:
    path = os.path.join(transform_graph_uri, PREPROCESSING_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        resolved = json.load(f)
    return resolved.get("logit_lambda") if resolved.get("method") == "logit" else None


class _Examples:
    """The splits of an Examples artifact: metadata, train and eval files, sizes."""

    def __init__(self, config: TrainConfig, examples_uri: Optional[str]):
        from tfflows.components.ingest import read_metadata, split_files

        if not examples_uri:
            raise ValueError(f"objective {config.objective!r} needs the ingested examples")
        self.config = config
        self.metadata = read_metadata(examples_uri)
        self.event_dim = int(self.metadata.event_dim)
        self.fingerprint = self.metadata.fingerprint
        self.train_files = split_files(examples_uri, "train")
        self.eval_files = split_files(examples_uri, "eval")
        if not self.train_files:
            raise ValueError(f"{examples_uri}: Split-train holds no TFRecord files; ingest again")
        if not self.eval_files:
            logger.warning("%s: no eval split; validation uses the train split", examples_uri)
            self.eval_files = self.train_files
        self.n_train = int(self.metadata.split_sizes.get("train", 0))
        self.params = {"fingerprint": self.fingerprint, "name": self.metadata.name,
                       "event_dim": self.event_dim, "discrete": self.metadata.discrete,
                       "num_levels": self.metadata.num_levels, "train_size": self.n_train}

    def _train_options(self) -> dict:
        c = self.config
        return dict(shuffle_buffer=c.shuffle_buffer or max(self.n_train, 1),
                    drop_remainder=self.n_train >= c.batch_size, max_steps=c.steps_per_epoch)


class MaximumLikelihood(_Examples):
    """Maximum likelihood on the transformed train split of an Examples artifact."""

    metric = "log_likelihood"

    def __init__(self, config: TrainConfig, examples_uri: str, transform_graph_uri: str):
        from tfflows.components.transform import load_transform

        super().__init__(config, examples_uri)
        if not transform_graph_uri:
            raise ValueError("objective 'max_likelihood' needs the transform graph")
        self.transform_graph_uri = transform_graph_uri
        self.num_levels = self.metadata.num_levels if self.metadata.discrete else None
        self.transform = load_transform(transform_graph_uri)
        self._sum_log_prob = None
        self.val_data = self._dataset(self.eval_files, config.eval_batch_size, 0).cache()

    def build_model(self):
        return build_flow(self.config.kind, self.event_dim, **self.config.flow_kwargs())

    def _dataset(self, files, batch_size, epoch, **options):
        return make_dataset(files, self.event_dim, self.transform, batch_size=batch_size,
                            seed=epoch_seed(self.config.seed, epoch), num_levels=self.num_levels,
                            **options)

    def batches(self, epoch: int) -> tf.data.Dataset:
        return self._dataset(self.train_files, self.config.batch_size, epoch, **self._train_options())

    def step_values(self, model, z):
        ll = tf.reduce_mean(model.log_prob(z, training=True))
        return -ll, ll

    def validate(self, model) -> float:
        if self._sum_log_prob is None:
            self._sum_log_prob = tf.function(
                lambda z: tf.reduce_sum(tf.cast(model.log_prob(z, training=False), tf.float64)))
        total, count = 0.0, 0
        for z in self.val_data:
            total += float(self._sum_log_prob(z).numpy())
            count += int(z.shape[0])
        return total / max(count, 1)

    def finish(self, model) -> None:
        """Batch norm takes the whole (dequantised, transformed) train split's statistics."""
        if model.batch_norm_layers and model.config.batch_norm_statistics == "train_set":
            model.set_batch_norm_statistics(self._dataset(self.train_files, self.config.eval_batch_size, 0))

    def figures(self, model, folder: str) -> List[str]:
        from tfflows.components.train import plots

        path = os.path.join(folder, "samples.png")
        samples = model.sample(self.config.num_plot_samples, seed=self.config.seed).numpy()
        data = next(iter(self.val_data)).numpy()[:500]
        plots.samples_figure(samples, path, image_shape=self.metadata.image_shape,
                             logit_lambda=logit_lambda(self.transform_graph_uri), data=data,
                             log_prob_fn=lambda g: model.log_prob(g).numpy())
        return [path]

    def summary(self, model) -> dict:
        return {}


def target_fingerprint(config: TrainConfig) -> str:
    """Identifies a reverse-KL target (name or import path, dimension, box)."""
    key = json.dumps([config.target, config.target_density()[1], config.target_box])
    return hashlib.sha256(key.encode()).hexdigest()


class ReverseKL:
    """Reverse KL to an unnormalised target: each step draws ``batch_size`` fresh samples of q.

    Step t of epoch e uses the stateless seed ``(epoch_seed(seed, e), t)`` and minimises
    ``mean(log q(x) - beta log p~(x))`` (`models.vi`); beta anneals from 0.01 to 1 over
    ``anneal_epochs``. Validation: the ELBO on ``eval_batch_size`` samples with a fixed seed.
    """

    metric = "elbo"

    def __init__(self, config: TrainConfig):
        self.config = config
        self.log_density, self.event_dim = config.target_density()
        self.fingerprint = target_fingerprint(config)
        self.params = {"target": config.target, "event_dim": self.event_dim, "target_box": config.target_box,
                       "fingerprint": self.fingerprint}
        self.steps = config.steps_per_epoch
        self._sum_elbo = None

    def build_model(self):
        return build_flow(self.config.kind, self.event_dim, **self.config.flow_kwargs())

    def batches(self, epoch: int) -> tf.data.Dataset:
        first = (epoch - 1) * self.steps  # the global step of this epoch's first step (annealing)
        seed = epoch_seed(self.config.seed, epoch)
        return tf.data.Dataset.range(self.steps).map(
            lambda t: tf.cast(tf.stack([seed, t, first + t]), tf.int32))

    def _beta(self, global_step):
        if not self.config.anneal_epochs:
            return tf.constant(1.0)
        ramp = tf.cast(global_step, tf.float32) / float(self.config.anneal_epochs * self.steps)
        return tf.minimum(1.0, 0.01 + ramp)

    def _elbo_terms(self, model, n, seed):
        from tfflows.models.vi import sample_and_log_prob

        x, log_q = sample_and_log_prob(model, n, seed)
        return tf.cast(self.log_density(x), log_q.dtype), log_q

    def step_values(self, model, batch):
        log_p, log_q = self._elbo_terms(model, self.config.batch_size, batch[:2])
        beta = tf.cast(self._beta(batch[2]), log_q.dtype)
        return tf.reduce_mean(log_q - beta * log_p), tf.reduce_mean(log_p - log_q)

    def validate(self, model) -> float:
        n = self.config.eval_batch_size
        if self._sum_elbo is None:
            seed = tf.constant([epoch_seed(self.config.seed, 0), 0])

            @tf.function
            def sum_elbo():
                log_p, log_q = self._elbo_terms(model, n, seed)
                return tf.reduce_sum(tf.cast(log_p - log_q, tf.float64))

            self._sum_elbo = sum_elbo
        return float(self._sum_elbo().numpy()) / n

    def finish(self, model) -> None:
        pass

    def diagnostics(self, model, n: int = 10_000) -> dict:
        from tfflows.models.vi import importance_diagnostics

        return importance_diagnostics(self.log_density, model, n=n, seed=epoch_seed(self.config.seed, 0) + 1)

    def figures(self, model, folder: str) -> List[str]:
        from tfflows.components.train import plots

        path = os.path.join(folder, "density.png")
        if self.event_dim != 2:
            return []
        plots.target_fit_figure(self.log_density, lambda z: model.log_prob(z).numpy(),
                                model.sample(2000, seed=self.config.seed).numpy(), path,
                                title=f"target {self.config.target}")
        return [path]

    def summary(self, model) -> dict:
        return {"target": self.config.target, "importance_diagnostics": self.diagnostics(model)}


class VariationalAutoencoder(_Examples):
    """A VAE (`models.vae.IAFVAE`) trained on the ELBO of the ingested train split.

    Discrete data is scaled to [0, 1] (levels / (L - 1)); with the Bernoulli likelihood each
    epoch binarises it afresh (x ~ Bernoulli(level / (L - 1)), stateless seed (seed, epoch,
    batch)), the IAF paper's dynamic binarisation. Validation: the ELBO of the eval split
    binarised once, with fixed posterior noise.
    """

    metric = "elbo"

    def __init__(self, config: TrainConfig, examples_uri: str):
        super().__init__(config, examples_uri)
        self.options = config.vae_kwargs(self.event_dim)
        self.binary = self.options["likelihood"] == "bernoulli"
        if self.binary and not self.metadata.discrete:
            raise ValueError(f"{examples_uri}: the Bernoulli likelihood needs discrete data (image levels); "
                             "set train.vae_options.likelihood to gaussian or logistic")
        self.scale = 1.0 / (self.metadata.num_levels - 1) if self.metadata.discrete else 1.0
        self.val_data = self._dataset(self.eval_files, config.eval_batch_size, 0).cache()
        self._sum_elbo = None

    def _dataset(self, files, batch_size, epoch, **options):
        seed = epoch_seed(self.config.seed, epoch)
        ds = make_dataset(files, self.event_dim, lambda x: (x * self.scale, None), batch_size=batch_size,
                          seed=seed, **options)

        def binarise(i, x):  # noise of batch i: binarisation (seed, 2i), posterior noise (seed, 2i + 1)
            step = tf.cast(i, tf.int32)
            if self.binary:
                u = tf.random.stateless_uniform(tf.shape(x), tf.stack([seed, 2 * step]))
                x = tf.cast(u < x, x.dtype)
            return x, tf.stack([seed, 2 * step + 1])

        return ds.enumerate().map(binarise)

    def build_model(self):
        from tfflows.models.vae import IAFVAE

        return IAFVAE(**self.options)

    def batches(self, epoch: int) -> tf.data.Dataset:
        return self._dataset(self.train_files, self.config.batch_size, epoch, **self._train_options())

    def step_values(self, model, batch):
        x, seed = batch
        elbo = tf.reduce_mean(model.elbo(x, seed=seed))
        return -elbo, elbo

    def validate(self, model) -> float:
        if self._sum_elbo is None:
            self._sum_elbo = tf.function(
                lambda x, seed: tf.reduce_sum(tf.cast(model.elbo(x, seed=seed), tf.float64)))
        total, count = 0.0, 0
        for x, seed in self.val_data:
            total += float(self._sum_elbo(x, seed).numpy())
            count += int(x.shape[0])
        return total / max(count, 1)

    def finish(self, model) -> None:
        pass

    def figures(self, model, folder: str) -> List[str]:
        from tfflows.components.train import plots

        if self.metadata.image_shape is None:
            return []
        path = os.path.join(folder, "samples.png")
        samples = model.sample(self.config.num_plot_samples, seed=self.config.seed).numpy()
        plots.samples_figure(np.clip(samples, 0.0, 1.0), path, image_shape=self.metadata.image_shape,
                             unit_interval=True)
        return [path]

    def summary(self, model) -> dict:
        return {"vae": self.options, "data_scale": self.scale}


def make_objective(config: TrainConfig, examples_uri: Optional[str], transform_graph_uri: Optional[str]):
    if config.objective == "reverse_kl":
        return ReverseKL(config)
    if config.objective == "vae":
        return VariationalAutoencoder(config, examples_uri)
    return MaximumLikelihood(config, examples_uri, transform_graph_uri)
