"""Maximum likelihood: a flow fitted to the transformed train split of an Examples artifact.

Training maximises the mean model-space log-likelihood ``log p_z(z)`` of the dequantised,
transformed train split (fresh dequantisation noise per epoch); validation is the same on the
eval split with fixed noise. A conditional dataset (context columns) trains a conditional flow,
``log p_z(z | c)`` with ``c`` the standardised context, on ``(z, c)`` batches, and every score
below is conditional on each row's own context. Evaluation scores the test split by its data-space log-likelihood
against the full-covariance Gaussian of the train split (`components.objectives.scoring`); push
exports the transform graph and the flow (`components.push.export.export_flow`).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from tfflows.components.objectives import Objective

__all__ = ["OBJECTIVE", "MaximumLikelihood", "MaximumLikelihoodTraining", "DataScorer"]


class MaximumLikelihoodTraining:
    """Maximum likelihood on the transformed train split of an Examples artifact."""

    metric = "log_likelihood"

    def __init__(self, config, examples_uri: Optional[str], transform_graph_uri: Optional[str]):
        from tfflows.components.objectives.data import ExampleSplits, RowMean
        from tfflows.components.transform import load_transform

        self.splits = splits = ExampleSplits(config, examples_uri)
        if not transform_graph_uri:
            raise ValueError("objective 'max_likelihood' needs the transform graph")
        self.config = config
        self.transform_graph_uri = transform_graph_uri
        self.metadata = splits.metadata
        self.event_dim, self.fingerprint, self.params = splits.event_dim, splits.fingerprint, splits.params
        self.context_names = self.metadata.context_names
        self.num_levels = self.metadata.num_levels if self.metadata.discrete else None
        self.transform = load_transform(transform_graph_uri)
        self.val_data = self._dataset(splits.eval_files, config.eval_batch_size, 0).cache()
        self.validate = RowMean(self.val_data, lambda model, z, context=None: model.log_prob(z, context,
                                                                                            training=False))

    def build_model(self):
        from tfflows.models import build_flow
        from tfflows.models.kinds import data_options

        # Image kinds take the data's image shape; an explicit flow option wins.
        return build_flow(self.config.kind, self.event_dim, context_dim=self.splits.context_dim,
                          **{**data_options(self.config.kind, self.metadata.image_shape), **self.config.flow_kwargs()})

    def _dataset(self, files, batch_size, epoch, **options):
        from tfflows.components.objectives.data import epoch_seed, make_dataset

        return make_dataset(files, self.event_dim, self.transform, batch_size=batch_size,
                            seed=epoch_seed(self.config.seed, epoch), num_levels=self.num_levels,
                            context_dim=self.splits.context_dim, **options)

    def batches(self, epoch: int):
        return self._dataset(self.splits.train_files, self.config.batch_size, epoch, **self.splits.train_options())

    def initialise(self, model) -> None:
        """Glow's ActNorm layers take their parameters from the first batch of epoch 1 (read only
        when a layer needs it: it fills a shuffle buffer)."""
        if model.needs_data_initialisation:
            batch = next(iter(self.batches(1)))
            model.initialise_from_data(*(batch if isinstance(batch, tuple) else (batch,)))

    def step_values(self, model, batch):
        import tensorflow as tf

        z, context = batch if isinstance(batch, tuple) else (batch, None)  # (z, context): a conditional flow
        ll = tf.reduce_mean(model.log_prob(z, context, training=True))
        return -ll, ll

    def finish(self, model) -> None:
        """Batch norm takes the whole (dequantised, transformed) train split's statistics."""
        if model.batch_norm_layers and model.config.batch_norm_statistics == "train_set":
            model.set_batch_norm_statistics(self._dataset(self.splits.train_files, self.config.eval_batch_size, 0))

    def figures(self, model) -> Dict[str, Any]:
        from tfflows.components.train import plots
        from tfflows.components.transform import read_preprocessing

        preprocessing = read_preprocessing(self.transform_graph_uri)
        batch = next(iter(self.val_data))
        z, context = batch if isinstance(batch, tuple) else (batch, None)
        n = self.config.num_plot_samples
        if context is None:
            samples, log_prob_fn = model.sample(n, seed=self.config.seed).numpy(), lambda g: model.log_prob(g).numpy()
        else:  # one sample per validation row's context, and the density's grid at the first row's context
            n = min(n, int(z.shape[0]))
            samples = model.sample(n, seed=self.config.seed, context=context[:n]).numpy()
            log_prob_fn = lambda g: model.log_prob(g, context[:1]).numpy()  # noqa: E731
        return {"samples.png": plots.samples_figure(
            samples, image_shape=self.metadata.image_shape, logit_lambda=preprocessing.logit_lambda if preprocessing.method == "logit" else None,
            data=z.numpy()[:500], log_prob_fn=log_prob_fn, names=self.metadata.feature_names)}

    def details(self, model) -> None:
        return None


class DataScorer:
    """Test log-likelihoods of flows fitted to data, model and data space; conditional ones
    (``context_names``: the model's, from its summary) given each row's context."""

    headline = "data_log_likelihood"
    unit = "log-likelihood"

    def __init__(self, examples_uri: Optional[str], transform_graph_uri: Optional[str], config,
                 context_names: Optional[List[str]] = None):
        from tfflows.components.ingest import read_metadata
        from tfflows.components.objectives.scoring import evaluation_points

        if not examples_uri or not transform_graph_uri:
            raise ValueError("evaluating a flow fitted to data needs the examples and the transform graph")
        self.config = config
        self.examples_uri, self.transform_graph_uri = examples_uri, transform_graph_uri
        self.context_names = read_metadata(examples_uri).context_names
        # The context goes through the graph only for a model of it (a champion of other columns
        # is not comparable, `incomparable`, and its graph may have no context input).
        self.conditional = bool(context_names) and context_names == self.context_names
        self.z, self.log_det, self.context, self.metadata = evaluation_points(
            examples_uri, transform_graph_uri, config, conditional=self.conditional)
        self.event_dim, self.num_points = self.metadata.event_dim, len(self.z)
        self.split, self.where = config.split, f"{config.split} split"
        self._data_ll: Dict[str, Any] = {}  # model URI -> its finite data-space scores (arrays), for `calibration`

    def incomparable(self, summary) -> Optional[str]:
        if summary.event_dim not in (None, self.event_dim):
            return f"it has {summary.event_dim} dimensions, not {self.event_dim}"
        if (summary.context_names or None) != (self.context_names or None):
            given = lambda names: ", ".join(names) if names else "nothing"  # noqa: E731
            return (f"it is conditioned on {given(summary.context_names)}, these data on "
                    f"{given(self.context_names)}")
        return None

    def score(self, model_uri: str, what: str):
        import numpy as np

        from tfflows.components.objectives.scoring import data_metrics, finite_problem, score_model
        from tfflows.components.transform import conversions

        ll, bad = score_model(model_uri, self.z, self.config.batch_size, self.context)
        problem = finite_problem(ll, bad, what)
        if problem is not None:
            return {"model_log_likelihood": None, "data_log_likelihood": None,
                    "non_finite_examples": int((~np.isfinite(ll)).sum())}, problem
        self._data_ll[model_uri] = conversions.data_log_prob(ll, self.log_det)
        return data_metrics(ll, self.log_det, self.metadata), None

    def per_example(self, model_uri: str):
        """The data-space log-likelihoods `score` gave ``model_uri``, one per point (None: not
        finite or not scored): evaluate pairs the new model's with the baseline's on the same points."""
        return self._data_ll.get(model_uri)

    def calibration(self, model_uri: str):
        """Quantiles of the data-space log-densities `score` gave ``model_uri`` on the scored split
        (what the served ``log_prob`` returns for those rows); None when it was not finite."""
        from tfflows.components.objectives.scoring import held_out_quantiles

        scores = self._data_ll.get(model_uri)
        return None if scores is None else held_out_quantiles(scores, self.split)

    def reference(self):
        """(metrics, name) of the full-covariance Gaussian fitted to the train split (model space);
        for a conditional model, that Gaussian's conditional given the context (linear-Gaussian)."""
        from tfflows.components.objectives.scoring import (conditional_gaussian_log_prob, data_metrics,
                                                           evaluation_points, gaussian_log_prob)

        train = evaluation_points(self.examples_uri, self.transform_graph_uri, self.config, "train", self.conditional)
        if self.context is None:
            return data_metrics(gaussian_log_prob(train.z, self.z), self.log_det, self.metadata), \
                "full-covariance Gaussian fitted to the train split"
        return data_metrics(conditional_gaussian_log_prob(train.z, train.context, self.z, self.context), self.log_det,
                            self.metadata), "full-covariance Gaussian of the train split, conditioned on the context"

    def extra(self) -> dict:
        return {"discrete": self.metadata.discrete,
                "dequantization_seed": self.config.dequantization_seed if self.metadata.discrete else None}


class MaximumLikelihood(Objective):
    """A flow fitted to the ingested, transformed data (the default objective)."""

    name = "max_likelihood"
    metric = "log_likelihood"
    data_components = ("ingest", "transform")
    multi_replica = True
    conditional = True

    def training(self, config, examples_uri, transform_graph_uri) -> MaximumLikelihoodTraining:
        return MaximumLikelihoodTraining(config, examples_uri, transform_graph_uri)

    def scorer(self, summary, examples_uri, transform_graph_uri, config) -> DataScorer:
        return DataScorer(examples_uri, transform_graph_uri, config, summary.context_names)

    def export(self, model, summary, transform_graph_uri, metadata, export_dir, *, importance_samples, rows,
               calibration) -> str:
        from tfflows.components.push.export import export_flow

        return export_flow(model, summary, transform_graph_uri, metadata, export_dir, rows, calibration=calibration)

    def report(self, evaluation: Dict[str, Any]) -> List[str]:
        metrics = evaluation.get("metrics") or {}
        if metrics.get("data_log_likelihood") is None:
            return []
        lines = [f"test log-likelihood: {metrics['data_log_likelihood']:.4f} ± "
                 f"{metrics['data_log_likelihood_2se']:.4f} nats (data space, mean ± 2 s.e.); "
                 f"model space {metrics['model_log_likelihood']:.4f} ± "
                 f"{metrics['model_log_likelihood_2se']:.4f}"]
        if "bits_per_dim" in metrics:
            lines.append(f"bits/dim: {metrics['bits_per_dim']:.4f} ± {metrics['bits_per_dim_2se']:.4f}")
        return lines


OBJECTIVE = MaximumLikelihood()
