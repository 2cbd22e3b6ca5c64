"""Evaluate executor logic as plain functions: trained flow -> evaluation.json + blessing.

Scores are per-example log-likelihoods of the ``split`` (test by default), in nats:

- model space: ``log p_z(z)`` with ``z`` the transformed features (what the trainer optimises);
- data space: ``log p_x(x) = log p_z(z) + log_det`` (comparable across preprocessings);
- discrete data: ``x`` are the integer levels dequantised once with a FIXED stateless seed
  (``EvaluateConfig.dequantization_seed``), so repeated evaluations and the baseline see the
  same points; bits/dim ``= -log p_x(x) / (D ln 2)`` on ``[0, L)^D`` (MAF paper, appendix E.2).

Each reported value is a mean ± two standard errors (`conversions.mean_and_two_se`).

Blessing: a model whose log-likelihoods or weights hold a NaN/inf is NOT blessed (with the
reason). Otherwise, with a baseline model (the currently pushed one) scored on the same points,
it is blessed iff ``new_ll >= baseline_ll - tolerance`` (data-space means); without one, it is
blessed. The blessing is written like the stock TFX Evaluator's ModelBlessing: an empty file
``BLESSED`` or ``NOT_BLESSED`` in the blessing folder.
"""

from __future__ import annotations

import json
import math
import os
from typing import Optional

import numpy as np

from components.evaluate.config import EvaluateConfig

__all__ = ["BLESSED_FILE", "EVALUATION_FILE", "NOT_BLESSED_FILE", "read_blessing",
           "score_model", "run_evaluate"]

EVALUATION_FILE = "evaluation.json"
BLESSED_FILE = "BLESSED"
NOT_BLESSED_FILE = "NOT_BLESSED"


def _evaluation_points(examples_uri: str, transform_graph_uri: str, config: EvaluateConfig):
    """(z, log_det, metadata) of the scored split, dequantised with the fixed seed if discrete."""
    import tensorflow as tf

    from components.ingest import load_split, read_metadata
    from components.transform import dequantize, load_transform

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

    from components.flow_artifact import load_flow

    model = load_flow(model_uri)
    out = [model.log_prob(tf.constant(z[s:s + batch_size]), training=False).numpy()
           for s in range(0, len(z), batch_size)]
    return np.concatenate(out).astype(np.float64), _non_finite_weights(model)


def _summary(model_ll: np.ndarray, log_det: np.ndarray, metadata) -> dict:
    from components.transform import conversions

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


def run_evaluate(examples_uri: str, transform_graph_uri: str, model_uri: str,
                 config: EvaluateConfig, output_uri: str,
                 baseline_model_uri: Optional[str] = None,
                 blessing_uri: Optional[str] = None) -> dict:
    """Scores a trained flow on a split, compares it with a baseline and writes the blessing.

    Args:
      examples_uri: ingested Examples artifact (`components.ingest.run_ingest`).
      transform_graph_uri: TransformGraph artifact (`components.transform.run_transform`).
      model_uri: trained flow (`components.flow_artifact.save_flow`).
      config: what to score and the blessing threshold.
      output_uri: folder receiving ``evaluation.json`` (and the blessing file unless
        ``blessing_uri`` is given; ``evaluation.json`` is copied beside the blessing).
      baseline_model_uri: the currently pushed model (same transform graph), or None.
      blessing_uri: folder of the ModelBlessing (default ``output_uri``).

    Returns:
      The content of ``evaluation.json``: ``blessed`` (bool), ``reason``, ``metrics``
      (mean and 2 s.e. of model- and data-space log-likelihoods in nats, bits/dim for discrete
      data), ``baseline_metrics`` (or None), ``num_examples``, ``split``,
      ``dequantization_seed`` (None for continuous data), ``mlflow_run_id``.
    """
    import tensorflow as tf

    z, log_det, metadata = _evaluation_points(examples_uri, transform_graph_uri, config)
    model_ll, bad_weights = score_model(model_uri, z, config.batch_size)
    problem = _finite_problem(model_ll, bad_weights, "the model")
    if problem is None:
        metrics = _summary(model_ll, log_det, metadata)
    else:
        finite = model_ll[np.isfinite(model_ll)]
        metrics = {"model_log_likelihood": None, "data_log_likelihood": None,
                   "non_finite_examples": int(model_ll.size - finite.size)}
    baseline_metrics = None
    if problem is not None:
        blessed, reason = False, f"not blessed: {problem}"
    elif baseline_model_uri is None:
        blessed, reason = True, "blessed: finite log-likelihoods and no baseline to compare with"
    else:
        base_ll, base_bad = score_model(baseline_model_uri, z, config.batch_size)
        base_problem = _finite_problem(base_ll, base_bad, "the baseline")
        if base_problem is not None:
            blessed, reason = True, f"blessed: the new model is finite and {base_problem}"
        else:
            baseline_metrics = _summary(base_ll, log_det, metadata)
            new, old = metrics["data_log_likelihood"], baseline_metrics["data_log_likelihood"]
            blessed = bool(new >= old - config.tolerance)
            reason = (f"{'blessed' if blessed else 'not blessed'}: {config.split} "
                      f"log-likelihood {new:.4f} nats vs baseline {old:.4f} "
                      f"(tolerance {config.tolerance} nats)")
    result = {
        "blessed": blessed, "reason": reason, "metrics": metrics,
        "baseline_metrics": baseline_metrics, "baseline_model_uri": baseline_model_uri,
        "model_uri": model_uri, "split": config.split, "num_examples": int(len(z)),
        "event_dim": metadata.event_dim, "discrete": metadata.discrete,
        "dequantization_seed": config.dequantization_seed if metadata.discrete else None,
        "tolerance": config.tolerance, "mlflow_run_id": None,
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
