"""Evaluate executor logic as plain functions: trained flow -> evaluation.json + blessing.

Scores are per-example log-likelihoods of the ``split`` (test by default), in nats:

- model space: ``log p_z(z)`` with ``z`` the transformed features (what the trainer optimises);
- data space: ``log p_x(x) = log p_z(z) + log_det`` (comparable across preprocessings);
- discrete data: ``x`` are the integer levels dequantised once with a FIXED stateless seed
  (``EvaluateConfig.dequantization_seed``), so repeated evaluations and the baseline see the
  same points; bits/dim ``= -log p_x(x) / (D ln 2)`` on ``[0, L)^D`` (MAF paper, appendix E.2).

Each reported value is a mean ± two standard errors (`conversions.mean_and_two_se`).

A VAE (objective "vae") is scored on the test split (binarised once with the fixed seed) by the
importance-sampled log-likelihood log (1/K) sum_k p(x, z_k) / q(z_k | x), K =
``importance_samples``, and by its ELBO.

A flow fitted to a target by reverse KL (objective "reverse_kl") has no test split: it is
scored on ``num_samples`` samples x ~ q drawn with a fixed seed, by the ELBO
``E_q[log p~(x) - log q(x)]`` (mean ± 2 s.e.), the effective sample size ESS/n of the importance
weights p~/q, ``log Z ≈ log mean(p~/q)`` and ``KL(q || p) ≈ log Z - ELBO`` (`models.vi`).

Blessing means "good", not just "finite". A model is blessed iff
1. its scores and weights are finite (a NaN/inf is NOT blessed, with the reason);
2. it beats its reference (margin > ``-reference_tolerance``, default 0), a closed-form model
   of its own kind scored on the same points: a flow fitted to data, the full-covariance
   Gaussian fitted by maximum likelihood to the train split in model space (the MAF paper's
   baseline; the transform's log-det is shared, so the margin is the same in data space); a
   VAE, the factorised model of the train split (independent Bernoulli pixels for binarised
   data, else a diagonal Gaussian); a reverse-KL flow, the standard-normal q (its ELBO on the
   same number of samples). The margin ``model - reference`` (nats) is in
   ``metrics["reference_margin"]`` and in the reason;
3. with a pushed model (the baseline) scored on the same points (same target):
   ``new >= baseline - tolerance`` (data-space log-likelihood or ELBO means); a baseline that is
   not comparable (another objective, dimension or target) or not finite is skipped, and the
   reason says so.
The blessing is written like the stock TFX Evaluator's ModelBlessing: an empty file
``BLESSED`` or ``NOT_BLESSED`` in the blessing folder (`components.artifacts`).
"""

from __future__ import annotations

import json
import logging
from typing import Optional

import numpy as np

from tfflows.components.artifacts import (BLESSED_FILE, EVALUATION_FILE, NOT_BLESSED_FILE,
                                         read_blessing, write_blessing, write_evaluation)
from tfflows.components.evaluate.config import EvaluateConfig

__all__ = ["BLESSED_FILE", "EVALUATION_FILE", "NOT_BLESSED_FILE", "read_blessing",
           "score_model", "run_evaluate", "gaussian_log_prob"]

logger = logging.getLogger("tfflows.evaluate")



def _evaluation_points(examples_uri: str, transform_graph_uri: str, config: EvaluateConfig,
                       split: Optional[str] = None):
    """(z, log_det, metadata) of ``split`` (default: the scored one), dequantised with the fixed
    seed if discrete."""
    import tensorflow as tf

    from tfflows.components.ingest import load_split, read_metadata
    from tfflows.components.transform import dequantize, load_transform

    metadata = read_metadata(examples_uri)
    split = split or config.split
    x = load_split(examples_uri, split)
    if metadata.discrete:
        # The scored split keeps counter 0 (the points of earlier evaluations); other splits
        # (the reference's train split) take their own noise.
        counter = 0 if split == config.split else 1
        x = dequantize(tf.constant(x), metadata.num_levels,
                       [int(config.dequantization_seed), counter]).numpy()
    transform = load_transform(transform_graph_uri)
    zs, lds = [], []
    for start in range(0, len(x), config.batch_size):
        z, ld = transform(tf.constant(x[start:start + config.batch_size]))
        zs.append(z.numpy())
        lds.append(ld.numpy())
    return np.concatenate(zs), np.concatenate(lds), metadata


def _non_finite_weights(model) -> list:
    return [v.name for v in model.weights if not np.all(np.isfinite(v.numpy()))]


def score_model(model_uri: str, z: np.ndarray, batch_size: int = 1000):
    """(per-example model-space log p_z(z) as float64, names of non-finite weights)."""
    import tensorflow as tf

    from tfflows.components.flow_artifact import load_flow

    model = load_flow(model_uri).frozen()
    out = [model.log_prob(tf.constant(z[s:s + batch_size]), training=False).numpy()
           for s in range(0, len(z), batch_size)]
    return np.concatenate(out).astype(np.float64), _non_finite_weights(model)


def gaussian_log_prob(train: np.ndarray, points: np.ndarray) -> np.ndarray:
    """log N(points; m, S) per row, (m, S) the maximum-likelihood full-covariance Gaussian of
    ``train`` (float64; a 1e-6 ridge keeps a degenerate covariance, e.g. a constant column,
    invertible)."""
    train, points = np.asarray(train, np.float64), np.asarray(points, np.float64)
    mean = train.mean(axis=0)
    centred = train - mean
    cov = centred.T @ centred / len(train) + 1e-6 * np.eye(train.shape[1])
    chol = np.linalg.cholesky(cov)
    white = np.linalg.solve(chol, (points - mean).T)
    return (-0.5 * np.sum(white ** 2, axis=0) - np.sum(np.log(np.diag(chol)))
            - 0.5 * train.shape[1] * np.log(2 * np.pi))


def _factorised_log_prob(train: np.ndarray, points: np.ndarray, binary: bool) -> np.ndarray:
    """Independent dimensions fitted to ``train``: Bernoulli with Laplace-smoothed frequencies
    (binary data), else a diagonal Gaussian (1e-6 variance floor)."""
    train, points = np.asarray(train, np.float64), np.asarray(points, np.float64)
    if binary:
        p = (train.sum(axis=0) + 1.0) / (len(train) + 2.0)
        return np.sum(points * np.log(p) + (1.0 - points) * np.log1p(-p), axis=1)
    mean, var = train.mean(axis=0), train.var(axis=0) + 1e-6
    return np.sum(-0.5 * ((points - mean) ** 2 / var + np.log(2 * np.pi * var)), axis=1)


def _summary(model_ll: np.ndarray, log_det: np.ndarray, metadata) -> dict:
    from tfflows.components.transform import conversions

    data_ll = conversions.data_log_prob(model_ll, log_det)
    m_mean, m_se = conversions.mean_and_two_se(model_ll)
    d_mean, d_se = conversions.mean_and_two_se(data_ll)
    out = {"model_log_likelihood": m_mean, "model_log_likelihood_2se": m_se,
           "data_log_likelihood": d_mean, "data_log_likelihood_2se": d_se}
    if metadata.discrete:
        b_mean, b_se = conversions.mean_and_two_se(
            conversions.bits_per_dim(data_ll, metadata.event_dim))
        out.update(bits_per_dim=b_mean, bits_per_dim_2se=b_se)
    return out


def _finite_problem(ll: np.ndarray, bad_weights: list, what: str) -> Optional[str]:
    if bad_weights:
        return f"{what} has non-finite weights ({', '.join(bad_weights[:3])})"
    bad = ~np.isfinite(ll)
    if bad.any():
        return (f"{what} gives non-finite log-likelihoods on {int(bad.sum())} of {ll.size} "
                f"examples (first at row {int(np.argmax(bad))})")
    return None


def _log_to_mlflow(result: dict, split: str, tracking, run_id: Optional[str]) -> Optional[str]:
    """Metrics (step 0: push links them to the logged model), blessing and reason on the training's
    run (``run_id``; None: a run of its own). Never raises: one warning line for what was not logged."""
    from tfflows.components.tracking import Tracker

    tracker = Tracker(tracking, run_id=run_id, what="evaluation")
    own_run = run_id is None
    if tracker.start_run(run_name="evaluate", resume=False) is None:
        tracker.report()
        return None
    metrics = {f"{split}_{k}": v for k, v in result["metrics"].items()
               if isinstance(v, (int, float))}
    tracker.log_metrics({**metrics, "blessed": 1.0 if result["blessed"] else 0.0})
    tracker.set_tags({"blessing_reason": result["reason"][:500]})
    if own_run:
        tracker.end()
    else:
        tracker.report()
    return tracker.run_id


class _DataScorer:
    """Test log-likelihoods of flows fitted to data (objective "max_likelihood")."""

    headline = "data_log_likelihood"
    unit = "log-likelihood"

    def __init__(self, examples_uri: str, transform_graph_uri: str, config: EvaluateConfig):
        if not examples_uri or not transform_graph_uri:
            raise ValueError("evaluating a flow fitted to data needs the examples and the transform graph")
        self.config = config
        self.examples_uri, self.transform_graph_uri = examples_uri, transform_graph_uri
        self.z, self.log_det, self.metadata = _evaluation_points(examples_uri, transform_graph_uri, config)
        self.event_dim, self.num_points = self.metadata.event_dim, len(self.z)

    def incomparable(self, summary: dict) -> Optional[str]:
        if summary.get("objective", "max_likelihood") != "max_likelihood":
            return f"it was fitted by {summary.get('objective')}"
        if summary.get("event_dim") not in (None, self.event_dim):
            return f"it has {summary.get('event_dim')} dimensions, not {self.event_dim}"
        return None

    def score(self, model_uri: str, what: str):
        ll, bad = score_model(model_uri, self.z, self.config.batch_size)
        problem = _finite_problem(ll, bad, what)
        if problem is not None:
            return {"model_log_likelihood": None, "data_log_likelihood": None,
                    "non_finite_examples": int((~np.isfinite(ll)).sum())}, problem
        return _summary(ll, self.log_det, self.metadata), None

    def reference(self):
        """(metrics, name) of the full-covariance Gaussian fitted to the train split (model space)."""
        train_z, _, _ = _evaluation_points(self.examples_uri, self.transform_graph_uri, self.config, "train")
        return _summary(gaussian_log_prob(train_z, self.z), self.log_det, self.metadata), \
            "full-covariance Gaussian fitted to the train split"

    def extra(self) -> dict:
        return {"discrete": self.metadata.discrete,
                "dequantization_seed": self.config.dequantization_seed if self.metadata.discrete else None}


class _TargetScorer:
    """ELBO, ESS/n, log Z and KL of flows fitted to a target (objective "reverse_kl")."""

    headline = "elbo"
    unit = "ELBO"

    def __init__(self, train_summary: dict, config: EvaluateConfig):
        from tfflows.components.train.config import TrainConfig
        from tfflows.components.train.objectives import target_fingerprint

        train_config = TrainConfig.from_json(json.dumps(train_summary["train_config"]))
        self.config = config
        self.log_density, self.event_dim = train_config.target_density()
        self.target, self.fingerprint = train_config.target, target_fingerprint(train_config)
        self.num_points = config.num_samples

    def incomparable(self, summary: dict) -> Optional[str]:
        if summary.get("objective") != "reverse_kl":
            return f"it was fitted by {summary.get('objective', 'max_likelihood')}"
        if summary.get("data_fingerprint") != self.fingerprint:
            return f"it was fitted to another target ({summary.get('target')})"
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
        from tfflows.models.vi import sample_and_log_prob

        model = load_flow(model_uri)
        log_w = self._log_weights(lambda n, seed: sample_and_log_prob(model, n, seed))
        problem = _finite_problem(log_w, _non_finite_weights(model), what)
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

    def extra(self) -> dict:
        return {"target": self.target, "sample_seed": self.config.sample_seed}


class _VAEScorer:
    """Importance-sampled test log-likelihood and ELBO of VAEs (objective "vae").

    The test split is scaled like the training data and, for the Bernoulli likelihood, binarised
    once with the fixed ``dequantization_seed``; the posterior noise uses ``sample_seed``.
    """

    headline = "log_likelihood"
    unit = "importance-sampled log-likelihood"

    def __init__(self, examples_uri: str, train_summary: dict, config: EvaluateConfig):
        from tfflows.components.ingest import read_metadata

        if not examples_uri:
            raise ValueError("evaluating a VAE needs the examples")
        self.config = config
        self.examples_uri = examples_uri
        self.metadata = read_metadata(examples_uri)
        self.event_dim = self.metadata.event_dim
        self.scale = train_summary["data_scale"]
        self.binary = train_summary["vae"]["likelihood"] == "bernoulli"
        self.x = self._points(config.split, 0)
        self.num_points = len(self.x)

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
        from tfflows.components.transform import conversions

        ll = _factorised_log_prob(self._points("train", 1), self.x, self.binary)
        mean, two_se = conversions.mean_and_two_se(ll)
        name = "independent-Bernoulli" if self.binary else "diagonal-Gaussian"
        return {"log_likelihood": mean, "log_likelihood_2se": two_se}, f"{name} model of the train split"

    def incomparable(self, summary: dict) -> Optional[str]:
        if summary.get("objective") != "vae":
            return f"it was fitted by {summary.get('objective', 'max_likelihood')}"
        if summary.get("event_dim") != self.event_dim:
            return f"it has {summary.get('event_dim')} dimensions, not {self.event_dim}"
        return None

    def score(self, model_uri: str, what: str):
        import tensorflow as tf

        from tfflows.components.flow_artifact import load_flow
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
        problem = _finite_problem(ll, _non_finite_weights(model), what)
        if problem is not None:
            return {"log_likelihood": None, "elbo": None, "non_finite_examples": int((~np.isfinite(ll)).sum())}, problem
        ll_mean, ll_se = conversions.mean_and_two_se(ll)
        elbo_mean, elbo_se = conversions.mean_and_two_se(elbo)
        return {"log_likelihood": ll_mean, "log_likelihood_2se": ll_se, "elbo": elbo_mean, "elbo_2se": elbo_se,
                "importance_samples": k}, None

    def extra(self) -> dict:
        return {"binarization_seed": self.config.dequantization_seed, "sample_seed": self.config.sample_seed}


def _decide(scorer, metrics: dict, problem: Optional[str], config: EvaluateConfig, objective: str,
            baseline_model_uri: Optional[str]):
    """(blessed, reason, reference, baseline metrics): finite, better than the reference, and not
    worse than the pushed model by more than ``tolerance`` (module docstring). The reason states
    both comparisons."""
    from tfflows.components.flow_artifact import read_summary

    if problem is not None:
        return False, f"not blessed: {problem}", None, None
    headline, new = scorer.headline, metrics[scorer.headline]
    reference_metrics, name = scorer.reference()
    margin = float(new - reference_metrics[headline])
    reference = {"name": name, "metrics": reference_metrics, "margin": margin}
    beats_reference = margin > -config.reference_tolerance
    where = f"target {scorer.target}" if objective == "reverse_kl" else f"{config.split} split"
    verdict = "" if beats_reference else ": no better than its reference"
    if config.reference_tolerance:
        verdict += f", reference tolerance {config.reference_tolerance} nats"
    parts = [f"{where} {scorer.unit} {new:.4f} nats vs {reference_metrics[headline]:.4f} for the {name} "
             f"(margin {margin:+.4f} nats{verdict})"]
    baseline_metrics, within_tolerance = None, True
    incomparable = scorer.incomparable(read_summary(baseline_model_uri)) if baseline_model_uri else None
    if baseline_model_uri is None:
        parts.append("no pushed baseline to compare with")
    elif incomparable:
        parts.append(f"the baseline {baseline_model_uri} is not comparable ({incomparable})")
    else:
        base_metrics, base_problem = scorer.score(baseline_model_uri, "the baseline")
        if base_problem is not None:
            parts.append(base_problem)
        else:
            baseline_metrics, old = base_metrics, base_metrics[headline]
            within_tolerance = bool(new >= old - config.tolerance)
            parts.append(f"vs baseline {old:.4f} (the pushed model; tolerance {config.tolerance} nats)")
    blessed = beats_reference and within_tolerance
    return (blessed, f"{'blessed' if blessed else 'not blessed'}: {'; '.join(parts)}", reference,
            baseline_metrics)


def run_evaluate(examples_uri: Optional[str], transform_graph_uri: Optional[str], model_uri: str,
                 config: EvaluateConfig, output_uri: str,
                 baseline_model_uri: Optional[str] = None,
                 blessing_uri: Optional[str] = None, tracking=None) -> dict:
    """Scores a trained flow, compares it with a baseline and writes the blessing.

    Args:
      examples_uri: ingested Examples artifact (`components.ingest.run_ingest`); None for a flow
        fitted by reverse KL.
      transform_graph_uri: TransformGraph artifact (`components.transform.run_transform`); None
        for a flow fitted by reverse KL.
      model_uri: trained flow (`components.flow_artifact.save_flow`).
      config: what to score and the blessing threshold.
      output_uri: folder receiving ``evaluation.json`` (and the blessing file unless
        ``blessing_uri`` is given; ``evaluation.json`` is copied beside the blessing).
      baseline_model_uri: the currently pushed model, or None.
      blessing_uri: folder of the ModelBlessing (default ``output_uri``).
      tracking: `TrackingConfig`: the metrics go to the training's MLflow run (the model
        summary's ``mlflow_run_id``; a run of their own when the training was not tracked).
        None: no MLflow.

    Returns:
      The content of ``evaluation.json``: ``blessed`` (bool), ``reason``, ``objective``,
      ``metrics`` (data: mean and 2 s.e. of model- and data-space log-likelihoods in nats,
      bits/dim for discrete data; reverse KL: elbo, elbo_2se, ess, log_z, kl; VAE:
      log_likelihood (importance-sampled), elbo, their 2 s.e., importance_samples; and
      reference_margin, the model's headline minus its reference's), ``reference`` (name,
      metrics and margin of the closed-form reference; None for a non-finite model),
      ``baseline_metrics`` (or None), ``num_examples`` (points or samples scored), ``split``,
      ``dequantization_seed`` (None for continuous data) or ``target`` and ``sample_seed``,
      ``mlflow_run_id``.
    """
    from tfflows.components.flow_artifact import read_summary

    summary = read_summary(model_uri)
    objective = summary.get("objective", "max_likelihood")
    if objective == "reverse_kl":
        scorer = _TargetScorer(summary, config)
    elif objective == "vae":
        scorer = _VAEScorer(examples_uri, summary, config)
    else:
        scorer = _DataScorer(examples_uri, transform_graph_uri, config)
    metrics, problem = scorer.score(model_uri, "the model")
    blessed, reason, reference, baseline_metrics = _decide(scorer, metrics, problem, config, objective,
                                                           baseline_model_uri)
    if reference is not None:
        metrics["reference_margin"] = reference["margin"]
    logger.info("%s", reason)
    result = {
        "blessed": blessed, "reason": reason, "objective": objective, "metrics": metrics,
        "reference": reference, "baseline_metrics": baseline_metrics, "baseline_model_uri": baseline_model_uri,
        "model_uri": model_uri, "split": None if objective == "reverse_kl" else config.split,
        "num_examples": int(scorer.num_points), "event_dim": scorer.event_dim,
        "tolerance": config.tolerance, "mlflow_run_id": None, **scorer.extra(),
    }
    if tracking is not None and tracking.active:
        result["mlflow_run_id"] = _log_to_mlflow(result, config.split, tracking, summary.get("mlflow_run_id"))
    # evaluation.json goes beside the blessing too, so that push can tag the registry version.
    for folder in dict.fromkeys([output_uri, blessing_uri or output_uri]):
        write_evaluation(folder, result)
    write_blessing(blessing_uri or output_uri, blessed)
    return result
