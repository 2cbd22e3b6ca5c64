"""Reverse KL's TensorFlow side (`components.objectives.reverse_kl` declares the objective): its
training part, scorer and export, reached through `Objective.runtime`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
import tensorflow as tf

from tfflows.components.flow_artifact import load_flow
from tfflows.components.objectives.data import epoch_seed
from tfflows.components.objectives.reverse_kl import TargetDetails, target_fingerprint
from tfflows.components.objectives.scoring import finite_problem, non_finite_weights
from tfflows.components.push.export import export_flow
from tfflows.components.train import plots
from tfflows.components.transform import conversions
from tfflows.models import build_flow
from tfflows.models.vi import effective_sample_size, importance_diagnostics, sample_and_log_prob

__all__ = ["ReverseKLTraining", "TargetScorer", "export", "scorer", "training"]


class ReverseKLTraining:
    """Reverse KL to an unnormalised target: each step draws ``batch_size`` fresh samples of q.

    Step t of epoch e uses the stateless seed ``(epoch_seed(seed, e), t)`` and minimises
    ``mean(log q(x) - beta log p~(x))`` (`models.vi`); beta anneals from 0.01 to 1 over
    ``anneal_epochs``. Validation: the ELBO on ``eval_batch_size`` samples with a fixed seed.
    """

    metric = "elbo"
    feature_names: Optional[List[str]] = None  # a target's dimensions have no names
    context_names: Optional[List[str]] = None  # a target density has no context
    context_categorical_names: Optional[List[str]] = None
    categorical_names: Optional[List[str]] = None  # nor categorical columns

    def __init__(self, config):
        self.config = config
        self.log_density, self.event_dim = config.target_density()
        self.fingerprint = target_fingerprint(config)
        self.params = {"target": config.target, "event_dim": self.event_dim, "target_box": config.target_box,
                       "fingerprint": self.fingerprint}
        self.steps = config.steps_per_epoch
        self._sum_elbo = None

    def build_model(self):
        return build_flow(self.config.kind, self.event_dim, **self.config.flow_kwargs())

    def batches(self, epoch: int):
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

    def initialise(self, model) -> None:
        pass  # no kind with a data-dependent initialisation applies here

    def finish(self, model) -> None:
        pass

    def figures(self, model) -> Dict[str, Any]:
        if self.event_dim != 2:
            return {}
        return {"density.png": plots.target_fit_figure(
            self.log_density, lambda z: model.log_prob(z).numpy(), model.sample(2000, seed=self.config.seed).numpy(),
            title=f"target {self.config.target}")}

    def details(self, model, n: int = 10_000) -> TargetDetails:
        diagnostics = importance_diagnostics(self.log_density, model, n=n, seed=epoch_seed(self.config.seed, 0) + 1)
        return TargetDetails(target=self.config.target, importance_diagnostics=diagnostics)


class TargetScorer:
    """ELBO, ESS/n, log Z and KL of flows fitted to a target, on samples of q with a fixed seed."""

    headline = "elbo"
    unit = "ELBO"
    split: Optional[str] = None  # no data split: samples of q

    def __init__(self, train_config, config):
        self.config = config
        self.log_density, self.event_dim = train_config.target_density()
        self.target, self.fingerprint = train_config.target, target_fingerprint(train_config)
        self.num_points = config.num_samples
        self.where = f"target {self.target}"

    def incomparable(self, summary) -> Optional[str]:
        if summary.data_fingerprint != self.fingerprint:
            return f"it was fitted to another target ({summary.details.target})"
        return None

    def _log_weights(self, sample_and_log_q) -> np.ndarray:
        """log p~(x) - log q(x) of ``num_samples`` draws ``x, log q = sample_and_log_q(n, seed)``."""
        log_w = []
        for i, start in enumerate(range(0, self.num_points, self.config.batch_size)):
            n = min(self.config.batch_size, self.num_points - start)
            x, log_q = sample_and_log_q(n, tf.constant([self.config.sample_seed, i]))
            log_w.append((tf.cast(self.log_density(x), tf.float64) - tf.cast(log_q, tf.float64)).numpy())
        return np.concatenate(log_w)

    @staticmethod
    def _metrics(log_w: np.ndarray) -> dict:
        elbo, elbo_2se = conversions.mean_and_two_se(log_w)
        log_z = float(np.logaddexp.reduce(log_w) - np.log(len(log_w)))
        return {"elbo": elbo, "elbo_2se": elbo_2se, "ess": effective_sample_size(log_w), "log_z": log_z,
                "kl": log_z - elbo}

    def score(self, model_uri: str, what: str):
        model = load_flow(model_uri)
        log_w = self._log_weights(lambda n, seed: sample_and_log_prob(model, n, seed))
        problem = finite_problem(log_w, non_finite_weights(model), what)
        if problem is not None:
            return {"elbo": None, "non_finite_samples": int((~np.isfinite(log_w)).sum())}, problem
        return self._metrics(log_w), None

    def reference(self):
        """(metrics, name) of q = N(0, I): the ELBO any fitted flow should beat."""
        def standard_normal(n, seed):
            x = tf.random.stateless_normal([n, self.event_dim], seed)
            return x, -0.5 * tf.reduce_sum(x ** 2, axis=1) - 0.5 * self.event_dim * np.log(2 * np.pi)

        log_w = self._log_weights(standard_normal)
        # The target may vanish at a draw (log p~ = -inf): the reference's ELBO is then -inf.
        metrics = self._metrics(log_w) if np.all(np.isfinite(log_w)) else {"elbo": -np.inf}
        return metrics, "standard-normal q"

    def calibration(self, model_uri: str):
        """None: a flow fitted to a target has no held-out rows to calibrate percentiles on (its
        SavedModel has no ``score`` signature; thresholds are log-densities)."""
        return None

    def extra(self) -> dict:
        return {"target": self.target, "sample_seed": self.config.sample_seed}


def training(config, examples_uri, transform_graph_uri) -> ReverseKLTraining:
    """`Objective.training` of reverse KL (no data)."""
    return ReverseKLTraining(config)


def scorer(summary, examples_uri, transform_graph_uri, config) -> TargetScorer:
    """`Objective.scorer` of reverse KL (no data: samples of q)."""
    return TargetScorer(summary.train_config, config)


def export(model, summary, transform_graph_uri, metadata, export_dir, *, importance_samples, rows,
           calibration) -> str:
    """`Objective.export` of reverse KL: the flow with no preprocessing (its raw space is the target's)."""
    return export_flow(model, summary, transform_graph_uri, metadata, export_dir, rows,
                       target=summary.details.target, calibration=calibration)
