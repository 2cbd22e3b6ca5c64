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

Blessing: a model whose scores or weights hold a NaN/inf is NOT blessed (with the reason).
Otherwise, with a baseline model (the currently pushed one) scored on the same points (same
target), it is blessed iff ``new >= baseline - tolerance`` (data-space log-likelihood or ELBO
means); without a baseline, or with one that is not comparable (another objective, dimension
or target), it is blessed and the reason says so. The blessing is written like the stock TFX Evaluator's ModelBlessing: an empty file
``BLESSED`` or ``NOT_BLESSED`` in the blessing folder.
"""

from __future__ import annotations

import json
import math
import os
from typing import Optional

import numpy as np

from tfflows.components.evaluate.config import EvaluateConfig

__all__ = ["BLESSED_FILE", "EVALUATION_FILE", "NOT_BLESSED_FILE", "read_blessing",
           "score_model", "run_evaluate"]

EVALUATION_FILE = "evaluation.json"
BLESSED_FILE = "BLESSED"
NOT_BLESSED_FILE = "NOT_BLESSED"


def _evaluation_points(examples_uri: str, transform_graph_uri: str, config: EvaluateConfig):
    """(z, log_det, metadata) of the scored split, dequantised with the fixed seed if discrete."""
    import tensorflow as tf

    from tfflows.components.ingest import load_split, read_metadata
    from tfflows.components.transform import dequantize, load_transform

    metadata = read_metadata(examples_uri)
    x = load_split(examples_uri, config.split)
    if metadata.discrete:
        x = dequantize(tf.constant(x), metadata.num_levels,
                       [int(config.dequantization_seed), 0]).numpy()
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


def write_blessing(blessing_uri: str, blessed: bool) -> None:
    """Writes the empty ``BLESSED`` or ``NOT_BLESSED`` file (the stock Evaluator's layout)."""
    import tensorflow as tf

    tf.io.gfile.makedirs(blessing_uri)
    for name in (BLESSED_FILE, NOT_BLESSED_FILE):
        path = os.path.join(blessing_uri, name)
        if tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)
    with tf.io.gfile.GFile(os.path.join(blessing_uri,
                                        BLESSED_FILE if blessed else NOT_BLESSED_FILE), "w") as f:
        f.write("")  # GFile creates the file only on a write


def read_blessing(blessing_uri: str) -> bool:
    """True iff ``blessing_uri`` holds ``BLESSED`` (and not ``NOT_BLESSED``)."""
    import tensorflow as tf

    return (tf.io.gfile.exists(os.path.join(blessing_uri, BLESSED_FILE))
            and not tf.io.gfile.exists(os.path.join(blessing_uri, NOT_BLESSED_FILE)))


def _log_to_mlflow(result: dict, config: EvaluateConfig) -> Optional[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=config.tracking_uri)
    run_id = config.run_id
    if run_id is None:
        experiment = client.get_experiment_by_name(config.experiment_name)
        experiment_id = (experiment.experiment_id if experiment is not None
                         else client.create_experiment(config.experiment_name))
        run_id = client.create_run(experiment_id, run_name="evaluate").info.run_id
        own_run = True
    else:
        own_run = False
    for key, value in result["metrics"].items():
        if value is not None and math.isfinite(value):
            client.log_metric(run_id, f"{config.split}_{key}", float(value))
    client.log_metric(run_id, "blessed", 1.0 if result["blessed"] else 0.0)
    client.set_tag(run_id, "blessing_reason", result["reason"][:500])
    if own_run:
        client.set_terminated(run_id)
    return run_id


class _DataScorer:
    """Test log-likelihoods of flows fitted to data (objective "max_likelihood")."""

    headline = "data_log_likelihood"
    unit = "log-likelihood"

    def __init__(self, examples_uri: str, transform_graph_uri: str, config: EvaluateConfig):
        if not examples_uri or not transform_graph_uri:
            raise ValueError("evaluating a flow fitted to data needs the examples and the transform graph")
        self.config = config
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

    def score(self, model_uri: str, what: str):
        import tensorflow as tf

        from tfflows.components.flow_artifact import load_flow
        from tfflows.components.transform import conversions
        from tfflows.models.vi import effective_sample_size, sample_and_log_prob

        model = load_flow(model_uri)
        log_w = []
        for i, start in enumerate(range(0, self.num_points, self.config.batch_size)):
            n = min(self.config.batch_size, self.num_points - start)
            x, log_q = sample_and_log_prob(model, n, tf.constant([self.config.sample_seed, i]))
            log_w.append((tf.cast(self.log_density(x), tf.float64) - tf.cast(log_q, tf.float64)).numpy())
        log_w = np.concatenate(log_w)
        problem = _finite_problem(log_w, _non_finite_weights(model), what)
        if problem is not None:
            return {"elbo": None, "non_finite_samples": int((~np.isfinite(log_w)).sum())}, problem
        elbo, elbo_2se = conversions.mean_and_two_se(log_w)
        log_z = float(np.logaddexp.reduce(log_w) - np.log(len(log_w)))
        return {"elbo": elbo, "elbo_2se": elbo_2se, "ess": effective_sample_size(log_w), "log_z": log_z,
                "kl": log_z - elbo}, None

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
        import tensorflow as tf

        from tfflows.components.ingest import load_split, read_metadata

        if not examples_uri:
            raise ValueError("evaluating a VAE needs the examples")
        self.config = config
        self.metadata = read_metadata(examples_uri)
        self.event_dim = self.metadata.event_dim
        x = load_split(examples_uri, config.split) * train_summary["data_scale"]
        if train_summary["vae"]["likelihood"] == "bernoulli":
            u = tf.random.stateless_uniform(x.shape, [int(config.dequantization_seed), 0]).numpy()
            x = (u < x).astype(np.float32)
        self.x, self.num_points = x.astype(np.float32), len(x)

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


def run_evaluate(examples_uri: Optional[str], transform_graph_uri: Optional[str], model_uri: str,
                 config: EvaluateConfig, output_uri: str,
                 baseline_model_uri: Optional[str] = None,
                 blessing_uri: Optional[str] = None) -> dict:
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

    Returns:
      The content of ``evaluation.json``: ``blessed`` (bool), ``reason``, ``objective``,
      ``metrics`` (data: mean and 2 s.e. of model- and data-space log-likelihoods in nats,
      bits/dim for discrete data; reverse KL: elbo, elbo_2se, ess, log_z, kl; VAE:
      log_likelihood (importance-sampled), elbo, their 2 s.e., importance_samples),
      ``baseline_metrics`` (or None), ``num_examples`` (points or samples scored), ``split``,
      ``dequantization_seed`` (None for continuous data) or ``target`` and ``sample_seed``,
      ``mlflow_run_id``.
    """
    import tensorflow as tf

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
    baseline_metrics = None
    incomparable = scorer.incomparable(read_summary(baseline_model_uri)) if baseline_model_uri else None
    if problem is not None:
        blessed, reason = False, f"not blessed: {problem}"
    elif baseline_model_uri is None:
        blessed, reason = True, f"blessed: finite {scorer.unit} and no baseline to compare with"
    elif incomparable:
        blessed, reason = True, f"blessed: the baseline {baseline_model_uri} is not comparable ({incomparable})"
    else:
        base_metrics, base_problem = scorer.score(baseline_model_uri, "the baseline")
        if base_problem is not None:
            blessed, reason = True, f"blessed: the new model is finite and {base_problem}"
        else:
            baseline_metrics = base_metrics
            new, old = metrics[scorer.headline], baseline_metrics[scorer.headline]
            blessed = bool(new >= old - config.tolerance)
            where = f"target {scorer.target}" if objective == "reverse_kl" else config.split
            reason = (f"{'blessed' if blessed else 'not blessed'}: {where} {scorer.unit} {new:.4f} nats "
                      f"vs baseline {old:.4f} (tolerance {config.tolerance} nats)")
    result = {
        "blessed": blessed, "reason": reason, "objective": objective, "metrics": metrics,
        "baseline_metrics": baseline_metrics, "baseline_model_uri": baseline_model_uri,
        "model_uri": model_uri, "split": None if objective == "reverse_kl" else config.split,
        "num_examples": int(scorer.num_points), "event_dim": scorer.event_dim,
        "tolerance": config.tolerance, "mlflow_run_id": None, **scorer.extra(),
    }
    if config.tracking_uri:
        result["mlflow_run_id"] = _log_to_mlflow(result, config)
    # evaluation.json goes beside the blessing too, so that push can tag the registry version.
    for folder in dict.fromkeys([output_uri, blessing_uri or output_uri]):
        tf.io.gfile.makedirs(folder)
        with tf.io.gfile.GFile(os.path.join(folder, EVALUATION_FILE), "w") as f:
            json.dump(result, f, indent=2, sort_keys=True)
    write_blessing(blessing_uri or output_uri, blessed)
    return result
