"""Evaluate executor logic as plain functions: trained flow -> evaluation.json + blessing.

The model's objective (`components.objectives`, read from its `ModelSummary`) supplies the
scorer. A flow fitted to data is scored by per-example log-likelihoods of the ``split`` (test
by default), in nats, model and data space, with discrete data dequantised once with a FIXED
seed and bits/dim (`components.objectives.scoring`). Each reported value is a mean ± two
standard errors (`conversions.mean_and_two_se`).

A VAE (objective "vae") is scored by its importance-sampled test log-likelihood and ELBO
(`components.objectives.vae`); a flow fitted to a target by reverse KL (objective "reverse_kl")
has no test split and is scored on samples of q by its ELBO, ESS/n, log Z and KL
(`components.objectives.reverse_kl`).

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

import logging
from typing import Optional

from tfflows.components.artifacts import (BLESSED_FILE, EVALUATION_FILE, NOT_BLESSED_FILE,
                                         read_blessing, write_blessing, write_evaluation)
from tfflows.components.evaluate.config import EvaluateConfig

__all__ = ["BLESSED_FILE", "EVALUATION_FILE", "NOT_BLESSED_FILE", "read_blessing", "run_evaluate"]

logger = logging.getLogger("tfflows.evaluate")


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


def _incomparable(scorer, objective: str, baseline) -> Optional[str]:
    """Why the baseline (its `ModelSummary`) cannot be compared with the model, or None."""
    if baseline.objective != objective:
        return f"it was fitted by {baseline.objective}"
    return scorer.incomparable(baseline)


def _decide(scorer, metrics: dict, problem: Optional[str], config: EvaluateConfig, objective: str,
            baseline_model_uri: Optional[str]):
    """(blessed, reason, reference, baseline metrics): finite, better than the reference, and not
    worse than the pushed model by more than ``tolerance`` (module docstring). The reason states
    both comparisons."""
    from tfflows.components.summary import ModelSummary

    if problem is not None:
        return False, f"not blessed: {problem}", None, None
    headline, new = scorer.headline, metrics[scorer.headline]
    reference_metrics, name = scorer.reference()
    margin = float(new - reference_metrics[headline])
    reference = {"name": name, "metrics": reference_metrics, "margin": margin}
    beats_reference = margin > -config.reference_tolerance
    verdict = "" if beats_reference else ": no better than its reference"
    if config.reference_tolerance:
        verdict += f", reference tolerance {config.reference_tolerance} nats"
    parts = [f"{scorer.where} {scorer.unit} {new:.4f} nats vs {reference_metrics[headline]:.4f} for the {name} "
             f"(margin {margin:+.4f} nats{verdict})"]
    baseline_metrics, within_tolerance = None, True
    incomparable = (_incomparable(scorer, objective, ModelSummary.read(baseline_model_uri))
                    if baseline_model_uri else None)
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
    from tfflows.components.objectives import get_objective
    from tfflows.components.summary import ModelSummary

    summary = ModelSummary.read(model_uri)
    objective = summary.objective
    scorer = get_objective(objective).scorer(summary, examples_uri, transform_graph_uri, config)
    metrics, problem = scorer.score(model_uri, "the model")
    blessed, reason, reference, baseline_metrics = _decide(scorer, metrics, problem, config, objective,
                                                           baseline_model_uri)
    if reference is not None:
        metrics["reference_margin"] = reference["margin"]
    logger.info("%s", reason)
    result = {
        "blessed": blessed, "reason": reason, "objective": objective, "metrics": metrics,
        "reference": reference, "baseline_metrics": baseline_metrics, "baseline_model_uri": baseline_model_uri,
        "model_uri": model_uri, "split": scorer.split,
        "num_examples": int(scorer.num_points), "event_dim": scorer.event_dim,
        "tolerance": config.tolerance, "mlflow_run_id": None, **scorer.extra(),
    }
    if tracking is not None and tracking.active:
        result["mlflow_run_id"] = _log_to_mlflow(result, config.split, tracking, summary.mlflow_run_id)
    # evaluation.json goes beside the blessing too, so that push can tag the registry version.
    for folder in dict.fromkeys([output_uri, blessing_uri or output_uri]):
        write_evaluation(folder, result)
    write_blessing(blessing_uri or output_uri, blessed)
    return result
