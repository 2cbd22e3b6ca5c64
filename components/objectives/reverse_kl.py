"""Reverse KL: a flow q fitted to an unnormalised target density p~ (variational inference).

Training minimises ``KL(q || p) = E_q[log q(x) - log p~(x)] + log Z`` with the
reparameterisation trick on fresh samples of q (Rezende & Mohamed 2015, eq. 15, with their
annealing of the target's weight beta); its metric is the ELBO ``E_q[log p~ - log q]``. There is
no data: evaluation draws ``num_samples`` samples of q with a fixed seed and reports the ELBO
(mean ± 2 s.e.), the effective sample size ESS/n of the importance weights p~/q,
``log Z ≈ log mean(p~/q)`` and ``KL(q || p) ≈ log Z - ELBO`` (`models.vi`), against the
standard-normal q. Push exports the flow with no preprocessing: its raw space is the target's
(`components.push.export.export_flow`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Dict, List, Optional

import numpy as np

from tfflows.components.config import ConfigError
from tfflows.components.objectives import Objective, SummaryDetails

# Flows whose sampling direction (the one reverse KL differentiates through) is one parallel pass.
REVERSE_KL_KINDS = ("planar", "iaf", "realnvp")

__all__ = ["OBJECTIVE", "ReverseKL", "ReverseKLTraining", "TargetDetails", "TargetScorer", "target_fingerprint"]


def target_fingerprint(config) -> str:
    """Identifies a reverse-KL target (name or import path, dimension, box)."""
    key = json.dumps([config.target, config.target_density()[1], config.target_box])
    return hashlib.sha256(key.encode()).hexdigest()


@dataclasses.dataclass
class TargetDetails(SummaryDetails):
    """Reverse KL's entries of the model summary.

    Attributes:
      target: the target's name or import path (`TrainConfig.target`).
      importance_diagnostics: ESS/n, log Z and KL estimates from 10,000 samples of q
        (`models.vi.importance_diagnostics`).
    """

    target: Optional[str] = None
    importance_diagnostics: Optional[Dict[str, float]] = None

    def metrics(self) -> Dict[str, float]:
        return dict(self.importance_diagnostics or {})


class ReverseKLTraining:
    """Reverse KL to an unnormalised target: each step draws ``batch_size`` fresh samples of q.

    Step t of epoch e uses the stateless seed ``(epoch_seed(seed, e), t)`` and minimises
    ``mean(log q(x) - beta log p~(x))`` (`models.vi`); beta anneals from 0.01 to 1 over
    ``anneal_epochs``. Validation: the ELBO on ``eval_batch_size`` samples with a fixed seed.
    """

    metric = "elbo"
    context_names: Optional[List[str]] = None  # a target density has no context

    def __init__(self, config):
        self.config = config
        self.log_density, self.event_dim = config.target_density()
        self.fingerprint = target_fingerprint(config)
        self.params = {"target": config.target, "event_dim": self.event_dim, "target_box": config.target_box,
                       "fingerprint": self.fingerprint}
        self.steps = config.steps_per_epoch
        self._sum_elbo = None

    def build_model(self):
        from tfflows.models import build_flow

        return build_flow(self.config.kind, self.event_dim, **self.config.flow_kwargs())

    def batches(self, epoch: int):
        import tensorflow as tf

        from tfflows.components.objectives.data import epoch_seed

        first = (epoch - 1) * self.steps  # the global step of this epoch's first step (annealing)
        seed = epoch_seed(self.config.seed, epoch)
        return tf.data.Dataset.range(self.steps).map(
            lambda t: tf.cast(tf.stack([seed, t, first + t]), tf.int32))

    def _beta(self, global_step):
        import tensorflow as tf

        if not self.config.anneal_epochs:
            return tf.constant(1.0)
        ramp = tf.cast(global_step, tf.float32) / float(self.config.anneal_epochs * self.steps)
        return tf.minimum(1.0, 0.01 + ramp)

    def _elbo_terms(self, model, n, seed):
        import tensorflow as tf

        from tfflows.models.vi import sample_and_log_prob

        x, log_q = sample_and_log_prob(model, n, seed)
        return tf.cast(self.log_density(x), log_q.dtype), log_q

    def step_values(self, model, batch):
        import tensorflow as tf

        log_p, log_q = self._elbo_terms(model, self.config.batch_size, batch[:2])
        beta = tf.cast(self._beta(batch[2]), log_q.dtype)
        return tf.reduce_mean(log_q - beta * log_p), tf.reduce_mean(log_p - log_q)

    def validate(self, model) -> float:
        import tensorflow as tf

        from tfflows.components.objectives.data import epoch_seed

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
        from tfflows.components.train import plots

        if self.event_dim != 2:
            return {}
        return {"density.png": plots.target_fit_figure(
            self.log_density, lambda z: model.log_prob(z).numpy(), model.sample(2000, seed=self.config.seed).numpy(),
            title=f"target {self.config.target}")}

    def details(self, model, n: int = 10_000) -> TargetDetails:
        from tfflows.components.objectives.data import epoch_seed
        from tfflows.models.vi import importance_diagnostics

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
        import tensorflow as tf

        log_w = []
        for i, start in enumerate(range(0, self.num_points, self.config.batch_size)):
            n = min(self.config.batch_size, self.num_points - start)
            x, log_q = sample_and_log_q(n, tf.constant([self.config.sample_seed, i]))
            log_w.append((tf.cast(self.log_density(x), tf.float64) - tf.cast(log_q, tf.float64)).numpy())
        return np.concatenate(log_w)

    @staticmethod
    def _metrics(log_w: np.ndarray) -> dict:
        from tfflows.components.transform import conversions
        from tfflows.models.vi import effective_sample_size

        elbo, elbo_2se = conversions.mean_and_two_se(log_w)
        log_z = float(np.logaddexp.reduce(log_w) - np.log(len(log_w)))
        return {"elbo": elbo, "elbo_2se": elbo_2se, "ess": effective_sample_size(log_w), "log_z": log_z,
                "kl": log_z - elbo}

    def score(self, model_uri: str, what: str):
        from tfflows.components.flow_artifact import load_flow
        from tfflows.components.objectives.scoring import finite_problem, non_finite_weights
        from tfflows.models.vi import sample_and_log_prob

        model = load_flow(model_uri)
        log_w = self._log_weights(lambda n, seed: sample_and_log_prob(model, n, seed))
        problem = finite_problem(log_w, non_finite_weights(model), what)
        if problem is not None:
            return {"elbo": None, "non_finite_samples": int((~np.isfinite(log_w)).sum())}, problem
        return self._metrics(log_w), None

    def reference(self):
        """(metrics, name) of q = N(0, I): the ELBO any fitted flow should beat."""
        import tensorflow as tf

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


class ReverseKL(Objective):
    """A flow fitted to an unnormalised target density by reverse KL; no data."""

    name = "reverse_kl"
    metric = "elbo"
    data_components = ()
    details = TargetDetails
    owned_fields = ("target", "target_dim", "target_box", "anneal_epochs")
    default_steps_per_epoch = 100
    flow_defaults = {"batch_norm": False}  # batch norm's statistics come from data; there is none

    def check_config(self, config) -> None:
        if config.target is None:
            raise ConfigError("objective 'reverse_kl' needs `target`: U1, U2, U3, U4 or "
                             "'package.module:function'", field="target")
        if config.kind not in REVERSE_KL_KINDS:
            raise ConfigError(f"objective 'reverse_kl' needs a flow that samples in one pass: `kind` "
                             f"must be one of {REVERSE_KL_KINDS}, but is {config.kind!r}", field="kind")
        if config.batch_norm:
            raise ConfigError("objective 'reverse_kl' needs `batch_norm` False or None: batch norm's "
                             "statistics come from data, and reverse KL has none", field="batch_norm")
        if not isinstance(config.anneal_epochs, int) or config.anneal_epochs < 0:
            raise ConfigError(f"`anneal_epochs` must be an int >= 0, but is {config.anneal_epochs!r}", field="anneal_epochs")
        config.target_density()  # unknown names, failing imports and missing dimensions fail here

    def describe(self, config, dataset: str) -> str:
        return f"target {config.target} -> {config.kind} flow by reverse KL"

    def data_fingerprint(self, config, examples_uri: Optional[str]) -> str:
        return target_fingerprint(config)

    def training(self, config, examples_uri, transform_graph_uri) -> ReverseKLTraining:
        return ReverseKLTraining(config)

    def scorer(self, summary, examples_uri, transform_graph_uri, config) -> TargetScorer:
        return TargetScorer(summary.train_config, config)

    def export(self, model, summary, transform_graph_uri, metadata, export_dir, *, importance_samples, rows,
               calibration) -> str:
        from tfflows.components.push.export import export_flow

        return export_flow(model, summary, transform_graph_uri, metadata, export_dir, rows,
                           target=summary.details.target, calibration=calibration)

    def report(self, evaluation: Dict[str, Any]) -> List[str]:
        metrics = evaluation.get("metrics") or {}
        if metrics.get("elbo") is None:
            return []
        return [f"target {evaluation.get('target')}: ELBO {metrics['elbo']:.4f} ± {metrics['elbo_2se']:.4f} nats, "
                f"ESS/n {metrics['ess']:.3f}, log Z ≈ {metrics['log_z']:.4f}, KL(q||p) ≈ {metrics['kl']:.4f} nats "
                f"({evaluation.get('num_examples')} samples)"]


OBJECTIVE = ReverseKL()
