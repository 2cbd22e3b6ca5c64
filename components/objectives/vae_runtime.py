"""The VAE's TensorFlow side (`components.objectives.vae` declares the objective): its training
part, scorer and serving export, reached through `Objective.runtime`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional

import numpy as np
import tensorflow as tf

from tfflows.components.flow_artifact import load_flow
from tfflows.components.ingest import load_split, read_metadata
from tfflows.components.objectives.data import ExampleSplits, RowMean, epoch_seed, make_dataset
from tfflows.components.objectives.scoring import (factorised_log_prob, finite_problem, held_out_quantiles,
                                                   non_finite_weights)
from tfflows.components.objectives.vae import VAEDetails
from tfflows.components.push.export import WARMUP_ROWS, save_serving_model
from tfflows.components.train import plots
from tfflows.components.transform import conversions
from tfflows.models.flows import totally_ordered
from tfflows.models.vae import IAFVAE

__all__ = ["VAEScorer", "VAETraining", "export", "scorer", "serving_module", "training", "vae_kwargs"]


def vae_kwargs(config, data_dim: int) -> Dict[str, Any]:
    """Arguments of `models.vae.IAFVAE` for data of ``data_dim`` dimensions."""
    options = {"latent_dim": 32, "hidden_units": [300, 300], "context_dim": 32, "forget_bias": 1.5,
               "likelihood": "bernoulli", **config.vae_options}
    return dict(options, data_dim=int(data_dim), num_iaf_steps=config.num_layers,
                iaf_hidden_units=list(config.hidden_units), dynamic_binarization=False, seed=config.seed)


class VAETraining:
    """The ELBO of the ingested train split, scaled (and dynamically binarised for Bernoulli)."""

    metric = "elbo"
    feature_names: Optional[List[str]] = None  # pixels, by position
    context_names: Optional[List[str]] = None  # refused for data with context columns (`RunConfig`)
    context_categorical_names: Optional[List[str]] = None
    categorical_names: Optional[List[str]] = None  # and for data with categorical columns

    def __init__(self, config, examples_uri: Optional[str]):
        self.splits = splits = ExampleSplits(config, examples_uri)
        self.config = config
        self.metadata = splits.metadata
        self.event_dim, self.fingerprint, self.params = splits.event_dim, splits.fingerprint, splits.params
        self.options = vae_kwargs(config, self.event_dim)
        self.binary = self.options["likelihood"] == "bernoulli"
        if self.binary and not self.metadata.discrete:
            raise ValueError(f"{examples_uri}: the Bernoulli likelihood needs discrete data (image levels); "
                             "set train.vae_options.likelihood to gaussian or logistic")
        if self.metadata.discrete:
            assert self.metadata.num_levels is not None  # ingest records the levels of discrete data
            self.scale = 1.0 / (self.metadata.num_levels - 1)
        else:
            self.scale = 1.0
        val_data = self._dataset(splits.eval_files, config.eval_batch_size, 0).cache()
        self.validate = RowMean(val_data, lambda model, x, seed: model.elbo(x, seed=seed))

    def _dataset(self, files, batch_size, epoch, **options):
        seed = epoch_seed(self.config.seed, epoch)
        ds = make_dataset(files, self.event_dim, lambda x, *_, **__: (x * self.scale, None),
                          batch_size=batch_size, seed=seed, **options)

        def binarise(i, x):  # noise of batch i: binarisation (seed, 2i), posterior noise (seed, 2i + 1)
            step = tf.cast(i, tf.int32)
            if self.binary:
                u = tf.random.stateless_uniform(tf.shape(x), tf.stack([seed, 2 * step]))
                x = tf.cast(u < x, x.dtype)
            return x, tf.stack([seed, 2 * step + 1])

        return ds.enumerate().map(binarise)

    def build_model(self):
        return IAFVAE(**self.options)

    def batches(self, epoch: int):
        return self._dataset(self.splits.train_files, self.config.batch_size, epoch, **self.splits.train_options())

    def step_values(self, model, batch):
        x, seed = batch
        elbo = tf.reduce_mean(model.elbo(x, seed=seed))
        return -elbo, elbo

    def initialise(self, model) -> None:
        pass  # no kind with a data-dependent initialisation applies here

    def finish(self, model) -> None:
        pass

    def figures(self, model) -> Dict[str, Any]:
        if self.metadata.image_shape is None:
            return {}
        samples = model.sample(self.config.num_plot_samples, seed=self.config.seed).numpy()
        return {"samples.png": plots.samples_figure(np.clip(samples, 0.0, 1.0), image_shape=self.metadata.image_shape,
                                                    unit_interval=True)}

    def details(self, model) -> VAEDetails:
        return VAEDetails(vae=self.options, data_scale=self.scale)


class VAEScorer:
    """Importance-sampled test log-likelihood and ELBO of VAEs.

    The test split is scaled like the training data and, for the Bernoulli likelihood, binarised
    once with the fixed ``dequantization_seed``; the posterior noise uses ``sample_seed``.
    """

    headline = "log_likelihood"
    unit = "importance-sampled log-likelihood"

    def __init__(self, examples_uri: Optional[str], details: VAEDetails, config):
        if not examples_uri:
            raise ValueError("evaluating a VAE needs the examples")
        self.config = config
        self.examples_uri = examples_uri
        self.metadata = read_metadata(examples_uri)
        self.event_dim = self.metadata.event_dim
        self.scale, self.binary = details.data_scale, details.binary
        self.split, self.where = config.split, f"{config.split} split"
        self.x = self._points(config.split, 0)
        self.num_points = len(self.x)
        self._ll: Dict[str, np.ndarray] = {}  # model URI -> its finite scores, for `calibration`

    def _points(self, split: str, counter: int) -> np.ndarray:
        """``split`` scaled like the training data; binarised with the fixed seed (Bernoulli)."""
        x = load_split(self.examples_uri, split) * self.scale
        if self.binary:
            u = tf.random.stateless_uniform(x.shape, [int(self.config.dequantization_seed), counter]).numpy()
            x = (u < x).astype(np.float32)
        return x.astype(np.float32)

    def reference(self):
        """(metrics, name) of the factorised model of the train split (independent dimensions)."""
        ll = factorised_log_prob(self._points("train", 1), self.x, self.binary)
        mean, two_se = conversions.mean_and_two_se(ll)
        name = "independent-Bernoulli" if self.binary else "diagonal-Gaussian"
        return {"log_likelihood": mean, "log_likelihood_2se": two_se}, f"{name} model of the train split"

    def incomparable(self, summary) -> Optional[str]:
        if summary.event_dim != self.event_dim:
            return f"it has {summary.event_dim} dimensions, not {self.event_dim}"
        return None

    def score(self, model_uri: str, what: str):
        model = load_flow(model_uri)
        k, lls, elbos = self.config.importance_samples, [], []
        step = max(1, self.config.batch_size // k)  # rows per call: K posterior samples each
        for i, start in enumerate(range(0, self.num_points, step)):
            log_w = model.log_weights(tf.constant(self.x[start:start + step]), k,
                                      seed=tf.constant([self.config.sample_seed, i])).numpy().astype(np.float64)
            lls.append(np.logaddexp.reduce(log_w, axis=0) - np.log(k))
            elbos.append(log_w.mean(axis=0))
        ll, elbo = np.concatenate(lls), np.concatenate(elbos)
        problem = finite_problem(ll, non_finite_weights(model), what)
        if problem is not None:
            return {"log_likelihood": None, "elbo": None, "non_finite_examples": int((~np.isfinite(ll)).sum())}, problem
        self._ll[model_uri] = ll
        ll_mean, ll_se = conversions.mean_and_two_se(ll)
        elbo_mean, elbo_se = conversions.mean_and_two_se(elbo)
        return {"log_likelihood": ll_mean, "log_likelihood_2se": ll_se, "elbo": elbo_mean, "elbo_2se": elbo_se,
                "importance_samples": k}, None

    def calibration(self, model_uri: str):
        """Quantiles of the importance-sampled log-likelihoods `score` gave ``model_uri`` (the served
        ``log_prob`` is the same estimator, with push's K); None when it was not finite."""
        return None if model_uri not in self._ll else held_out_quantiles(self._ll[model_uri], self.split)

    def extra(self) -> dict:
        return {"binarization_seed": self.config.dequantization_seed, "sample_seed": self.config.sample_seed}


def serving_module(vae, importance_samples: int):
    """A `tf.Module` holding ``vae`` with the serving functions ``log_prob`` (x [None, D] float32 ->
    log_prob [None], importance-sampled with K = ``importance_samples`` posterior samples of the
    fixed seed (0, 0); never NaN, see `models.flows.totally_ordered`) and ``sample`` (num_samples,
    seed [2] -> samples [num_samples, D])."""
    module = tf.Module(name="vae_serving")
    module.vae = vae  # tracked: its variables are saved with the module
    k = int(importance_samples)

    @tf.function(input_signature=[tf.TensorSpec([None, vae.data_dim], tf.float32, name="x")])
    def log_prob(x):
        lp = vae.importance_log_likelihood(x, k, seed=tf.constant([0, 0]))
        return {"log_prob": tf.identity(totally_ordered(lp), name="log_prob")}

    @tf.function(input_signature=[tf.TensorSpec([], tf.int32, name="num_samples"),
                                  tf.TensorSpec([2], tf.int32, name="seed")])
    def sample(num_samples, seed):
        return {"samples": tf.identity(vae.sample(num_samples, seed=seed), name="samples")}

    module.log_prob, module.sample = log_prob, sample
    return module


def training(config, examples_uri, transform_graph_uri) -> VAETraining:
    """`Objective.training` of the VAE (no transform: it scales the levels itself)."""
    return VAETraining(config, examples_uri)


def scorer(summary, examples_uri, transform_graph_uri, config) -> VAEScorer:
    """`Objective.scorer` of the VAE."""
    return VAEScorer(examples_uri, summary.details, config)


def export(model, summary, transform_graph_uri, metadata, export_dir, *, importance_samples, rows,
           calibration) -> str:
    """`Objective.export` of the VAE: its own data space (levels scaled to [0, 1]) with no transform."""
    scale = summary.details.data_scale
    # The served space is the VAE's own: [0, 1] (binary for Bernoulli), so images are shown as is.
    dataset = dict(dataclasses.asdict(metadata), discrete=False, num_levels=1) if metadata is not None else None
    info = {"objective": "vae", "flow_kind": "vae", "vae": summary.details.vae, "data_scale": scale,
            "importance_samples": int(importance_samples),
            "preprocessing": {"method": "scale", "factor": scale}, "dataset": dataset,
            "held_out_quantiles": calibration}
    return save_serving_model(serving_module(model, importance_samples), export_dir,
                              np.asarray(rows[:WARMUP_ROWS]) * scale if rows is not None else None, info)
