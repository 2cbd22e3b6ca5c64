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
3. with a pushed model (the baseline, the champion) scored on the same points, through its own
   preprocessing: not worse beyond ``tolerance``. Flows fitted to data are compared by the mean
   per-example difference ``new - baseline`` ± 2 s.e. of the differences (paired,
   `conversions.paired_difference`), blessed when ``difference >= -tolerance``, ``tolerance``
   defaulting to the noise (the paired 2 s.e.); other objectives by their means (ELBO, same
   target; tolerance None = 0). A baseline that is not finite is skipped, and the reason says so.
   A baseline that answers another question (another objective or target; for flows fitted to
   data, a density of other columns, p(x | machine, load) against p(x), or of other categorical
   columns) cannot be compared at all: its log-likelihoods and the new model's are not of the
   same density, so no difference of them means anything. The new model is then not blessed (it
   would replace a champion it was never measured against, and change what the served endpoint
   answers), and the reason says so in one line with both densities and the fix: a line of its
   own. The drift measured before training (`components.drift`) is logged with the metrics.
The blessing is written like the stock TFX Evaluator's ModelBlessing: an empty file
``BLESSED`` or ``NOT_BLESSED`` in the blessing folder (`components.artifacts`).
"""

from __future__ import annotations

import logging
from typing import Optional

import tensorflow as tf

from tfflows.components.artifacts import (BLESSED_FILE, EVALUATION_FILE, NOT_BLESSED_FILE,
                                         read_blessing, write_blessing, write_evaluation)
from tfflows.components.evaluate.config import EvaluateConfig
from tfflows.components.objectives import get_objective
from tfflows.components.summary import ModelSummary
from tfflows.components.tracking import Tracker
from tfflows.components.transform.conversions import paired_difference

__all__ = ["BLESSED_FILE", "EVALUATION_FILE", "NOT_BLESSED_FILE", "read_blessing", "run_evaluate"]

logger = logging.getLogger("tfflows.evaluate")

# What to do about a champion of another question (`_decide`): serve the new model beside it.
INCOMPARABLE_FIX = ("fix: give it a line of its own (another --output, or its own push.push_base and "
                    "tracking.registered_model_name), or train it on the champion's columns")


def _log_to_mlflow(result: dict, split: str, tracking, run_id: Optional[str]) -> Optional[str]:
    """Metrics (step 0: push links them to the logged model), blessing and reason on the training's
    run (``run_id``; None: a run of its own). Never raises: one warning line for what was not logged."""
    tracker = Tracker(tracking, run_id=run_id, what="evaluation")
    own_run = run_id is None
    if tracker.start_run(run_name="evaluate", resume=False) is None:
        tracker.report()
        return None
    metrics = {f"{split}_{k}": v for k, v in result["metrics"].items()
               if isinstance(v, (int, float))}
    drift = result.get("drift")
    if drift is not None:
        metrics.update(drift_log_likelihood_delta=drift["delta"], drift_log_likelihood_delta_2se=drift["delta_2se"])
        tracker.set_tags({"drift.span": ", ".join(str(s) for s in drift["spans"]) or "none"})
    tracker.log_metrics({**metrics, "blessed": 1.0 if result["blessed"] else 0.0})
    tracker.set_tags({"blessing_reason": result["reason"][:500], "blessed": str(bool(result["blessed"]))})
    tracker.add_to_description("\n\n".join(([drift["line"]] if drift else []) + [f"Blessing: {result['reason']}"]))
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


def _per_example(scorer, model_uri: str):
    """A scorer's per-point scores of ``model_uri`` (None: it keeps none, e.g. reverse KL's fresh samples)."""
    per_example = getattr(scorer, "per_example", None)
    return per_example(model_uri) if per_example is not None else None


def _baseline_scorer(scorer, baseline_model_uri: str, examples_uri, transform_graph_uri, baseline_transform_graph_uri,
                     config: EvaluateConfig):
    """The baseline's scorer: the same points through the baseline's OWN preprocessing (a champion
    trained on other data standardised them with other statistics; scoring its flow through the new
    transform would score a model that never existed). Without its graph (not given, or deleted):
    the new model's scorer."""
    own = baseline_transform_graph_uri
    if not own or own == transform_graph_uri or not tf.io.gfile.exists(own):
        return scorer
    baseline = ModelSummary.read(baseline_model_uri)
    return get_objective(baseline.objective).scorer(baseline, examples_uri, own, config)


def _compare(scorer, baseline_scorer, model_uri: str, baseline_uri: str, new: float, old: float,
             config: EvaluateConfig, champion: str):
    """(within tolerance, reason part, paired comparison or None). Paired when both scorers keep
    per-point scores: mean per-example difference ± 2 s.e. on the same points, blessed unless worse
    beyond ``tolerance`` (None: the paired 2 s.e., the noise); otherwise the means (None: 0). The
    reason names the ``champion`` (its serving version)."""
    a, b = _per_example(scorer, model_uri), _per_example(baseline_scorer, baseline_uri)
    if a is None or b is None:
        tolerance = config.tolerance or 0.0
        return bool(new >= old - tolerance), f"vs baseline {old:.4f} (the champion, {champion}; tolerance {tolerance} nats)", None
    difference, two_se = paired_difference(a, b)
    tolerance = two_se if config.tolerance is None else config.tolerance
    within = bool(difference >= -tolerance)
    named = "the noise (2 s.e.)" if config.tolerance is None else "the tolerance"
    part = (f"vs baseline {old:.4f} (the champion, {champion}) on the same {len(a)} points: new - baseline "
            f"{difference:+.4f} ± {two_se:.4f} nats per example (paired mean ± 2 s.e.), "
            f"{'not worse' if within else 'worse'} beyond {named} {tolerance:.4f} nats")
    return within, part, {"difference": difference, "difference_2se": two_se, "tolerance": tolerance,
                          "points": len(a)}


def _decide(scorer, metrics: dict, problem: Optional[str], config: EvaluateConfig,
            baseline_model_uri: Optional[str], incomparable: Optional[str] = None, baseline_scorer=None,
            model_uri: str = "", baseline_version: Optional[int] = None):
    """(blessed, reason, reference, baseline metrics, paired comparison): finite, better than the
    reference, and not worse than the pushed model beyond ``tolerance``, nor a model of another
    question than the pushed one's (``incomparable``: why; module docstring). The reason states
    both comparisons with their numbers."""
    if problem is not None:
        return False, f"not blessed: {problem}", None, None, None
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
    baseline_metrics, within_tolerance, paired = None, True, None
    champion = f"serving version {baseline_version}" if baseline_version is not None else str(baseline_model_uri)
    if baseline_model_uri is None:
        parts.append("no pushed baseline to compare with")
    elif incomparable:
        within_tolerance = False
        parts.append(f"the champion ({champion}) is not comparable: {incomparable}, so no paired comparison is "
                     f"possible; {INCOMPARABLE_FIX}")
    else:
        baseline_scorer = baseline_scorer or scorer
        base_metrics, base_problem = baseline_scorer.score(baseline_model_uri, "the baseline")
        if base_problem is not None:
            parts.append(base_problem)
        else:
            baseline_metrics = base_metrics
            within_tolerance, part, paired = _compare(scorer, baseline_scorer, model_uri, baseline_model_uri, new,
                                                      base_metrics[headline], config, champion)
            parts.append(part)
    blessed = beats_reference and within_tolerance
    return (blessed, f"{'blessed' if blessed else 'not blessed'}: {'; '.join(parts)}", reference,
            baseline_metrics, paired)


def run_evaluate(examples_uri: Optional[str], transform_graph_uri: Optional[str], model_uri: str,
                 config: EvaluateConfig, output_uri: str,
                 baseline_model_uri: Optional[str] = None,
                 blessing_uri: Optional[str] = None, tracking=None,
                 baseline_transform_graph_uri: Optional[str] = None,
                 drift: Optional[dict] = None, baseline_version: Optional[int] = None) -> dict:
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
      baseline_model_uri: the champion (the pushed model it must not be worse than), or None.
      blessing_uri: folder of the ModelBlessing (default ``output_uri``).
      tracking: `TrackingConfig`: the metrics go to the training's MLflow run (the model
        summary's ``mlflow_run_id``; a run of their own when the training was not tracked).
        None: no MLflow.
      baseline_transform_graph_uri: the transform graph the baseline was trained with (None: the
        new one); the baseline scores the same points through it.
      drift: the drift measured before training (`components.drift.run_drift`), reported and
        logged with the metrics; None: none measured.
      baseline_version: the baseline's serving version (the reason names it), or None.

    Returns:
      The content of ``evaluation.json``: ``blessed`` (bool), ``reason``, ``objective``,
      ``metrics`` (data: mean and 2 s.e. of model- and data-space log-likelihoods in nats,
      bits/dim for discrete data; reverse KL: elbo, elbo_2se, ess, log_z, kl; VAE:
      log_likelihood (importance-sampled), elbo, their 2 s.e., importance_samples; and
      reference_margin, the model's headline minus its reference's), ``reference`` (name,
      metrics and margin of the closed-form reference; None for a non-finite model),
      ``baseline_metrics`` (or None), ``num_examples`` (points or samples scored), ``split``,
      ``dequantization_seed`` (None for continuous data) or ``target`` and ``sample_seed``,
      ``mlflow_run_id``, ``paired`` (difference, difference_2se, tolerance, points of the paired
      comparison with the baseline, or None), ``drift`` (as given), ``held_out_quantiles`` (`scoring.held_out_quantiles` of the model's scores
      on the split; None for a model that is not finite or has no held-out rows).
    """
    summary = ModelSummary.read(model_uri)
    objective = summary.objective
    scorer = get_objective(objective).scorer(summary, examples_uri, transform_graph_uri, config)
    metrics, problem = scorer.score(model_uri, "the model")
    # A baseline of another question is not scored at all (its graph may not even read these data).
    incomparable = (_incomparable(scorer, objective, ModelSummary.read(baseline_model_uri))
                    if baseline_model_uri else None)
    baseline_scorer = (_baseline_scorer(scorer, baseline_model_uri, examples_uri, transform_graph_uri,
                                        baseline_transform_graph_uri, config)
                       if baseline_model_uri and not incomparable else None)
    blessed, reason, reference, baseline_metrics, paired = _decide(
        scorer, metrics, problem, config, baseline_model_uri, incomparable, baseline_scorer, model_uri,
        baseline_version)
    if reference is not None:
        metrics["reference_margin"] = reference["margin"]
    if paired is not None:
        metrics.update(baseline_difference=paired["difference"], baseline_difference_2se=paired["difference_2se"])
    logger.info("%s", reason)
    result = {
        "blessed": blessed, "reason": reason, "objective": objective, "metrics": metrics,
        "reference": reference, "baseline_metrics": baseline_metrics, "baseline_model_uri": baseline_model_uri,
        "model_uri": model_uri, "split": scorer.split,
        "num_examples": int(scorer.num_points), "event_dim": scorer.event_dim,
        "tolerance": config.tolerance, "paired": paired, "drift": drift, "mlflow_run_id": None, **scorer.extra(),
        "held_out_quantiles": scorer.calibration(model_uri),  # travels with the pushed model (percentiles)
    }
    if tracking is not None and tracking.active:
        result["mlflow_run_id"] = _log_to_mlflow(result, config.split, tracking, summary.mlflow_run_id)
    # evaluation.json goes beside the blessing too, so that push can tag the registry version.
    for folder in dict.fromkeys([output_uri, blessing_uri or output_uri]):
        write_evaluation(folder, result)
    write_blessing(blessing_uri or output_uri, blessed)
    return result
