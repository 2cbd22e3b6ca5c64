"""Maximum likelihood's TensorFlow side (`components.objectives.max_likelihood` declares the
objective): its training part, scorer and serving export, reached through `Objective.runtime`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
import tensorflow as tf

from tfflows.components.ingest import read_metadata
from tfflows.components.objectives import density_notation
from tfflows.components.objectives.data import ExampleSplits, RowMean, epoch_seed, make_dataset
from tfflows.components.objectives.scoring import (category_frequencies_log_prob, conditional_gaussian_log_prob,
                                                   data_metrics, evaluation_points, finite_problem,
                                                   gaussian_log_prob, held_out_quantiles, score_model)
from tfflows.components.push.export import export_flow
from tfflows.components.train import plots
from tfflows.components.transform import (conversions, load_transform, network_context_dim, read_categories,
                                          read_preprocessing)
from tfflows.models import MixedDensity, build_flow
from tfflows.models.categorical import rule_of_succession
from tfflows.models.kinds import data_options

__all__ = ["DataScorer", "MaximumLikelihoodTraining", "export", "scorer", "training"]


class MaximumLikelihoodTraining:
    """Maximum likelihood on the transformed train split of an Examples artifact."""

    metric = "log_likelihood"

    def __init__(self, config, examples_uri: Optional[str], transform_graph_uri: Optional[str]):
        self.splits = splits = ExampleSplits(config, examples_uri)
        if not transform_graph_uri:
            raise ValueError("objective 'max_likelihood' needs the transform graph")
        self.config = config
        self.transform_graph_uri = transform_graph_uri
        self.metadata = splits.metadata
        self.event_dim, self.fingerprint, self.params = splits.event_dim, splits.fingerprint, splits.params
        self.feature_names = self.metadata.feature_names
        self.context_names = self.metadata.context_names
        self.context_categorical_names = self.metadata.context_categorical_names
        self.categorical_names = self.metadata.categorical_names
        self.num_levels = self.metadata.num_levels if self.metadata.discrete else None
        self.transform = load_transform(transform_graph_uri)
        self.context_dim = network_context_dim(transform_graph_uri)  # the network's: one-hot categories included
        self.val_data = self._dataset(splits.eval_files, config.eval_batch_size, 0).cache()
        self.validate = RowMean(self.val_data, lambda model, *batch: model.log_prob(*batch, training=False))

    def build_model(self):
        # Image kinds take the data's image shape; an explicit flow option wins.
        options = {**data_options(self.config.kind, self.metadata.image_shape), **self.config.flow_kwargs()}
        categories = read_categories(self.transform_graph_uri)
        if categories:  # K_i: the vocabulary and its out-of-vocabulary bucket; the MADE as wide as the flow's
            # No train row holds the bucket: its probability is fixed by Laplace's rule, 1 / (n_train + 2).
            return MixedDensity(self.event_dim, [len(v) + 1 for v in categories.values()], self.config.kind,
                                context_dim=self.context_dim, categorical_hidden_units=options["hidden_units"],
                                oov_probability=rule_of_succession(self.splits.n_train), **options)
        return build_flow(self.config.kind, self.event_dim, context_dim=self.context_dim, **options)

    def _dataset(self, files, batch_size, epoch, **options):
        return make_dataset(files, self.event_dim, self.transform, batch_size=batch_size,
                            seed=epoch_seed(self.config.seed, epoch), num_levels=self.num_levels,
                            spec=self.metadata.example_spec(), **options)

    def batches(self, epoch: int):
        return self._dataset(self.splits.train_files, self.config.batch_size, epoch, **self.splits.train_options())

    def initialise(self, model) -> None:
        """Glow's ActNorm layers take their parameters from the first batch of epoch 1 (read only
        when a layer needs it: it fills a shuffle buffer)."""
        if model.needs_data_initialisation:
            batch = next(iter(self.batches(1)))
            model.initialise_from_data(*(batch if isinstance(batch, tuple) else (batch,)))

    def step_values(self, model, batch):
        # z, (z, context) of a conditional flow or (z, codes[, context]) of a mixed density: log_prob's arguments
        ll = tf.reduce_mean(model.log_prob(*(batch if isinstance(batch, tuple) else (batch,)), training=True))
        return -ll, ll

    def finish(self, model) -> None:
        """Batch norm takes the whole (dequantised, transformed) train split's statistics."""
        if model.batch_norm_layers and model.config.batch_norm_statistics == "train_set":
            model.set_batch_norm_statistics(self._dataset(self.splits.train_files, self.config.eval_batch_size, 0))

    def figures(self, model) -> Dict[str, Any]:
        preprocessing = read_preprocessing(self.transform_graph_uri)
        batch = next(iter(self.val_data))
        z, *given = batch if isinstance(batch, tuple) else (batch,)  # given: [codes of a mixed density,] [context]
        mixed = isinstance(model, MixedDensity)
        context = given[-1] if len(given) > int(mixed) else None
        n = self.config.num_plot_samples
        if context is not None:  # one sample per validation row's context
            n = min(n, int(z.shape[0]))
        samples = model.sample(n, seed=self.config.seed, context=None if context is None else context[:n])
        samples = (samples[0] if mixed else samples).numpy()  # a mixed density's numeric columns
        # The density's grid at the first validation row's categories and context.
        log_prob_fn = lambda g: model.log_prob(g, *(b[:1] for b in given)).numpy()  # noqa: E731
        return {"samples.png": plots.samples_figure(
            samples, image_shape=self.metadata.image_shape, logit_lambda=preprocessing.logit_lambda if preprocessing.method == "logit" else None,
            data=z.numpy()[:500], log_prob_fn=log_prob_fn, names=self.metadata.feature_names)}

    def details(self, model) -> None:
        return None


class DataScorer:
    """Test log-likelihoods of flows fitted to data, model and data space; conditional ones
    (``context_names``: the model's, from its summary) given each row's context; mixed densities
    with each row's categories (nats per row: bits/dim has no meaning for a row that is part
    probability, part density)."""

    headline = "data_log_likelihood"
    unit = "log-likelihood"

    def __init__(self, examples_uri: Optional[str], transform_graph_uri: Optional[str], config,
                 context_names: Optional[List[str]] = None):
        if not examples_uri or not transform_graph_uri:
            raise ValueError("evaluating a flow fitted to data needs the examples and the transform graph")
        self.config = config
        self.examples_uri, self.transform_graph_uri = examples_uri, transform_graph_uri
        self.context_names = read_metadata(examples_uri).context_names
        self.context_categorical_names = read_metadata(examples_uri).context_categorical_names
        self.categorical_names = read_metadata(examples_uri).categorical_names
        # The context goes through the graph only for a model of it (a champion of other columns
        # is not comparable, `incomparable`, and its graph may have no context input).
        self.conditional = bool(context_names) and context_names == self.context_names
        self.z, self.log_det, self.context, self.metadata, self.codes = evaluation_points(
            examples_uri, transform_graph_uri, config, conditional=self.conditional)
        self.event_dim, self.num_points = self.metadata.event_dim, len(self.z)
        self.split, self.where = config.split, f"{config.split} split"
        self._data_ll: Dict[str, Any] = {}  # model URI -> its finite data-space scores (arrays), for `calibration`

    def incomparable(self, summary) -> Optional[str]:
        """Why a model of ``summary`` answers another question than a model of these data, or None:
        the two densities, when their numeric columns (their number, and their names where both are
        recorded), context columns (or which of them are categorical) or modelled categorical columns
        differ (a log-likelihood ratio needs densities of the same variables given the same ones)."""
        features = self.metadata.feature_names
        same = (summary.event_dim in (None, self.event_dim) and summary.feature_names in (None, list(features))
                and (summary.context_names or None) == (self.context_names or None)
                and (summary.context_categorical_names or None) == (self.context_categorical_names or None)
                and (summary.categorical_names or None) == (self.categorical_names or None))
        if same:
            return None
        theirs = density_notation(summary.feature_names, summary.context_names, summary.categorical_names)
        ours = density_notation(features, self.context_names, self.categorical_names)
        if summary.event_dim not in (None, self.event_dim):
            ours += f" ({summary.event_dim} numeric columns against {self.event_dim})"
        elif (summary.categorical_names or None) != (self.categorical_names or None):
            ours += " (a mixed density's score is not a density of the numeric columns alone)"
        elif (summary.context_categorical_names or None) != (self.context_categorical_names or None):
            ours += (f" (categorical context {', '.join(self.context_categorical_names or ()) or 'none'} "
                     f"against {', '.join(summary.context_categorical_names or ()) or 'none'})")
        return f"it models {theirs}, this run {ours}"

    def score(self, model_uri: str, what: str):
        ll, bad = score_model(model_uri, self.z, self.config.batch_size, self.context, self.codes)
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
        scores = self._data_ll.get(model_uri)
        return None if scores is None else held_out_quantiles(scores, self.split)

    def reference(self):
        """(metrics, name) of the full-covariance Gaussian fitted to the train split (model space);
        for a conditional model, that Gaussian's conditional given the context (linear-Gaussian); for
        a mixed density, times independent categorical columns with smoothed train frequencies (a
        mixed density too, on the same measure)."""
        train = evaluation_points(self.examples_uri, self.transform_graph_uri, self.config, "train", self.conditional)
        if self.context is None:
            ll, name = gaussian_log_prob(train.z, self.z), "full-covariance Gaussian fitted to the train split"
        else:
            ll = conditional_gaussian_log_prob(train.z, train.context, self.z, self.context)
            name = "full-covariance Gaussian of the train split, conditioned on the context"
        if self.codes is not None:
            categories = read_categories(self.transform_graph_uri) or {}
            ll = ll + category_frequencies_log_prob(train.codes, self.codes, [len(v) + 1 for v in categories.values()])
            name += ", times independent categories with smoothed train frequencies"
        return data_metrics(ll, self.log_det, self.metadata), name

    def extra(self) -> dict:
        return {"discrete": self.metadata.discrete, "categorical_names": self.categorical_names,
                "dequantization_seed": self.config.dequantization_seed if self.metadata.discrete else None}


def training(config, examples_uri, transform_graph_uri) -> MaximumLikelihoodTraining:
    """`Objective.training` of maximum likelihood."""
    return MaximumLikelihoodTraining(config, examples_uri, transform_graph_uri)


def scorer(summary, examples_uri, transform_graph_uri, config) -> DataScorer:
    """`Objective.scorer` of maximum likelihood (conditional on the model's context columns)."""
    return DataScorer(examples_uri, transform_graph_uri, config, summary.context_names)


def export(model, summary, transform_graph_uri, metadata, export_dir, *, importance_samples, rows,
           calibration) -> str:
    """`Objective.export` of maximum likelihood: the transform graph and the model (`export_flow`)."""
    return export_flow(model, summary, transform_graph_uri, metadata, export_dir, rows, calibration=calibration)
