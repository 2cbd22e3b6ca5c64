"""The VAE: a variational autoencoder with an IAF posterior (`models.vae.IAFVAE`) on ingested data.

Training maximises the ELBO ``E_q[log p(x, z) - log q(z | x)]`` (nats per example; Kingma et al.
2016). Discrete data is scaled to [0, 1] (levels / (L - 1)); with the Bernoulli likelihood each
epoch binarises it afresh (x ~ Bernoulli(level / (L - 1)), stateless seed (seed, epoch, batch)),
the IAF paper's dynamic binarisation. Validation: the ELBO of the eval split binarised once,
with fixed posterior noise.

Evaluation scores the test split (scaled alike, binarised once with the fixed
``dequantization_seed``) by the importance-sampled log-likelihood
``log (1/K) sum_k p(x, z_k) / q(z_k | x)``, K = ``importance_samples``, and by its ELBO, against
the factorised model of the train split. Push exports ``log_prob`` (that estimate with K samples
of a fixed seed: deterministic) and ``sample`` (x ~ p(x | z), z ~ N(0, I)) on the VAE's own data
space: levels scaled to [0, 1], binary pixels {0, 1} for the Bernoulli likelihood.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional

import numpy as np

from tfflows.components.config import ConfigError
from tfflows.components.objectives import Objective, SummaryDetails

# `TrainConfig.vae_options` keys: the `models.vae.IAFVAE` arguments that are not set elsewhere.
VAE_OPTIONS = ("latent_dim", "hidden_units", "context_dim", "forget_bias", "likelihood")


def vae_kwargs(config, data_dim: int) -> Dict[str, Any]:
    """Arguments of `models.vae.IAFVAE` for data of ``data_dim`` dimensions."""
    options = {"latent_dim": 32, "hidden_units": [300, 300], "context_dim": 32, "forget_bias": 1.5,
               "likelihood": "bernoulli", **config.vae_options}
    return dict(options, data_dim=int(data_dim), num_iaf_steps=config.num_layers,
                iaf_hidden_units=list(config.hidden_units), dynamic_binarization=False, seed=config.seed)

__all__ = ["OBJECTIVE", "VAE", "VAEDetails", "VAEScorer", "VAETraining", "serving_module"]


@dataclasses.dataclass
class VAEDetails(SummaryDetails):
    """The VAE's entries of the model summary.

    Attributes:
      vae: the `models.vae.IAFVAE` arguments (``likelihood``, ``latent_dim``, ...).
      data_scale: the factor from stored levels to the VAE's [0, 1] data space (1 / (L - 1);
        1 for continuous data).
    """

    vae: Optional[Dict[str, Any]] = None
    data_scale: Optional[float] = None

    @property
    def binary(self) -> bool:
        """Binarised data (the Bernoulli likelihood)."""
        return (self.vae or {}).get("likelihood") == "bernoulli"


class VAETraining:
    """The ELBO of the ingested train split, scaled (and dynamically binarised for Bernoulli)."""

    metric = "elbo"
    context_names: Optional[List[str]] = None  # refused for data with context columns (`RunConfig`)

    def __init__(self, config, examples_uri: Optional[str]):
        from tfflows.components.objectives.data import ExampleSplits, RowMean

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
        import tensorflow as tf

        from tfflows.components.objectives.data import epoch_seed, make_dataset

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

    def batches(self, epoch: int):
        return self._dataset(self.splits.train_files, self.config.batch_size, epoch, **self.splits.train_options())

    def step_values(self, model, batch):
        import tensorflow as tf

        x, seed = batch
        elbo = tf.reduce_mean(model.elbo(x, seed=seed))
        return -elbo, elbo

    def initialise(self, model) -> None:
        pass  # no kind with a data-dependent initialisation applies here

    def finish(self, model) -> None:
        pass

    def figures(self, model) -> Dict[str, Any]:
        from tfflows.components.train import plots

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
        from tfflows.components.ingest import read_metadata

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
        import tensorflow as tf

        from tfflows.components.ingest import load_split

        x = load_split(self.examples_uri, split) * self.scale
        if self.binary:
            u = tf.random.stateless_uniform(x.shape, [int(self.config.dequantization_seed), counter]).numpy()
            x = (u < x).astype(np.float32)
        return x.astype(np.float32)

    def reference(self):
        """(metrics, name) of the factorised model of the train split (independent dimensions)."""
        from tfflows.components.objectives.scoring import factorised_log_prob
        from tfflows.components.transform import conversions

        ll = factorised_log_prob(self._points("train", 1), self.x, self.binary)
        mean, two_se = conversions.mean_and_two_se(ll)
        name = "independent-Bernoulli" if self.binary else "diagonal-Gaussian"
        return {"log_likelihood": mean, "log_likelihood_2se": two_se}, f"{name} model of the train split"

    def incomparable(self, summary) -> Optional[str]:
        if summary.event_dim != self.event_dim:
            return f"it has {summary.event_dim} dimensions, not {self.event_dim}"
        return None

    def score(self, model_uri: str, what: str):
        import tensorflow as tf

        from tfflows.components.flow_artifact import load_flow
        from tfflows.components.objectives.scoring import finite_problem, non_finite_weights
        from tfflows.components.transform import conversions

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
        from tfflows.components.objectives.scoring import held_out_quantiles

        return None if model_uri not in self._ll else held_out_quantiles(self._ll[model_uri], self.split)

    def extra(self) -> dict:
        return {"binarization_seed": self.config.dequantization_seed, "sample_seed": self.config.sample_seed}


def serving_module(vae, importance_samples: int):
    """A `tf.Module` holding ``vae`` with the serving functions ``log_prob`` (x [None, D] float32 ->
    log_prob [None], importance-sampled with K = ``importance_samples`` posterior samples of the
    fixed seed (0, 0); never NaN, see `models.flows.totally_ordered`) and ``sample`` (num_samples,
    seed [2] -> samples [num_samples, D])."""
    import tensorflow as tf

    from tfflows.models.flows import totally_ordered

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


class VAE(Objective):
    """A VAE with an IAF posterior on the ingested data (no transform: it scales the levels itself)."""

    name = "vae"
    metric = "elbo"
    data_components = ("ingest",)
    details = VAEDetails
    owned_fields = ("vae_options",)
    min_num_layers = 0  # 0 IAF steps: the diagonal-Gaussian posterior

    def check_config(self, config) -> None:
        unknown = sorted(set(config.vae_options) - set(VAE_OPTIONS))
        if unknown:
            raise ConfigError(f"`vae_options` has unknown option(s) {unknown}; valid ones are {list(VAE_OPTIONS)}", field="vae_options")
        if "likelihood" in config.vae_options:  # models.vae imports TensorFlow: read only when set
            from tfflows.models.vae import LIKELIHOODS

            if config.vae_options["likelihood"] not in LIKELIHOODS:
                raise ConfigError(f"`vae_options.likelihood` must be one of {LIKELIHOODS}, but is "
                                 f"{config.vae_options['likelihood']!r}", field="vae_options.likelihood")

    def model_kind(self, config) -> str:
        return "vae"

    def describe(self, config, dataset: str) -> str:
        posterior = f"IAF posterior ({config.num_layers} steps)" if config.num_layers else "diagonal posterior"
        return f"{dataset} -> VAE with {posterior}"

    def training(self, config, examples_uri, transform_graph_uri) -> VAETraining:
        return VAETraining(config, examples_uri)

    def scorer(self, summary, examples_uri, transform_graph_uri, config) -> VAEScorer:
        return VAEScorer(examples_uri, summary.details, config)

    def export(self, model, summary, transform_graph_uri, metadata, export_dir, *, importance_samples, rows,
               calibration) -> str:
        from tfflows.components.push.export import WARMUP_ROWS, save_serving_model

        scale = summary.details.data_scale
        # The served space is the VAE's own: [0, 1] (binary for Bernoulli), so images are shown as is.
        dataset = dict(dataclasses.asdict(metadata), discrete=False, num_levels=1) if metadata is not None else None
        info = {"objective": self.name, "flow_kind": "vae", "vae": summary.details.vae, "data_scale": scale,
                "importance_samples": int(importance_samples),
                "preprocessing": {"method": "scale", "factor": scale}, "dataset": dataset,
                "held_out_quantiles": calibration}
        return save_serving_model(serving_module(model, importance_samples), export_dir,
                                  np.asarray(rows[:WARMUP_ROWS]) * scale if rows is not None else None, info)

    def report(self, evaluation: Dict[str, Any]) -> List[str]:
        metrics = evaluation.get("metrics") or {}
        if metrics.get("log_likelihood") is None:
            return []
        return [f"test log-likelihood: {metrics['log_likelihood']:.4f} ± {metrics['log_likelihood_2se']:.4f} nats "
                f"(importance-sampled, K={metrics['importance_samples']}); ELBO {metrics['elbo']:.4f} ± "
                f"{metrics['elbo_2se']:.4f}"]


OBJECTIVE = VAE()
