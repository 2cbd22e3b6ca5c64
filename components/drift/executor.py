"""Drift executor logic as plain functions: before training, the champion (the serving version
TF Serving's ``stable`` label names, `artifacts.champion_push_info`) scores the new data's test split.

Its mean log-likelihood there is compared with its own recorded test log-likelihood (the metrics
its push recorded): ``delta = champion on new - champion on its own`` ± 2 s.e., the two error
bars in quadrature (different points: unpaired, both sets' spreads count). The champion is scored
through its OWN preprocessing (its transform graph): the new transform was fitted to the new
data and would hide the shift. A negative delta beyond its error bar means the data moved away
from what the champion knew.

``EvaluateConfig.drift_limit`` bounds it: beyond the limit, ``drift_action`` "warn" says so and
goes on, "fail" stops the run here, before training (`DataError`, one line, exit status 2).
Written to ``drift.json`` in the output folder; evaluate logs it to the training's MLflow run.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from tfflows.components.artifacts import write_drift
from tfflows.components.errors import DataError
from tfflows.components.evaluate.config import EvaluateConfig
from tfflows.components.ingest import read_metadata
from tfflows.components.objectives import get_objective
from tfflows.components.summary import ModelSummary
from tfflows.components.transform.conversions import mean_and_two_se

__all__ = ["measure_drift", "run_drift"]


def measure_drift(scores: np.ndarray, own: float, own_2se: float, config: EvaluateConfig,
                  spans: Sequence[int], version: Optional[int] = None) -> dict:
    """The drift of the champion's per-example ``scores`` on the new split from its own recorded
    mean ``own`` ± ``own_2se``; ``line`` is what the run prints (naming the champion's serving
    ``version``)."""
    mean, two_se = mean_and_two_se(scores)
    delta, delta_2se = mean - own, math.hypot(two_se, own_2se)
    exceeded = config.drift_limit is not None and delta + delta_2se < -config.drift_limit
    span = f" (span {', '.join(str(s) for s in spans)})" if spans else ""
    champion = "champion" if version is None else f"champion (serving version {version})"
    line = (f"data drift: {champion} scores the new {config.split} split {delta:+.2f} ± {delta_2se:.2f} nats "
            f"{'below' if delta < 0 else 'above'} its own {config.split} split{span}")
    if exceeded:
        line += (f"; beyond the drift limit of {config.drift_limit} nats: "
                 + ("the run stops before training" if config.drift_action == "fail" else "warning only"))
    return {"delta": delta, "delta_2se": delta_2se, "champion_mean": mean, "champion_mean_2se": two_se,
            "champion_own": own, "champion_own_2se": own_2se, "spans": list(spans), "exceeded": bool(exceeded),
            "failed": bool(exceeded and config.drift_action == "fail"), "line": line}


def _champion_scores(examples_uri: str, transform_graph_uri: Optional[str], config: EvaluateConfig, pushed: dict):
    """(per-example scores of the champion on the new split, headline metric name), or (None, why not)."""
    model_uri = pushed.get("model_uri")
    own_graph = pushed.get("transform_graph_uri") or transform_graph_uri
    if not model_uri or not tf.io.gfile.exists(model_uri) or (own_graph and not tf.io.gfile.exists(own_graph)):
        return None, "the champion's trained model or transform graph is no longer there"
    summary = ModelSummary.read(model_uri)
    scorer = get_objective(summary.objective).scorer(summary, examples_uri, own_graph, config)
    if not hasattr(scorer, "per_example"):
        return None, f"champions fitted by {summary.objective} keep no per-example scores"
    if (incomparable := scorer.incomparable(summary)) is not None:
        return None, f"the champion is not comparable ({incomparable})"
    _, problem = scorer.score(model_uri, "the champion")
    return (None, problem) if problem else (scorer.per_example(model_uri), scorer.headline)


def run_drift(examples_uri: str, transform_graph_uri: Optional[str], config: EvaluateConfig,
              pushed: Optional[dict], output_uri: str) -> Optional[dict]:
    """Measures the drift of the new data from the champion (its push record ``pushed``, with its
    ``version``; None: none yet; `measure_drift`) and writes ``<output_uri>/drift.json``
    (`artifacts.write_drift`: the drift, or why none).

    Returns:
      The drift, or None (no champion, no recorded test score, not comparable: ``note`` says).

    Raises:
      DataError: the drift exceeds ``config.drift_limit`` and ``config.drift_action`` is "fail".
    """
    drift, note = None, "no champion yet"
    if pushed is not None:
        scores, headline = _champion_scores(examples_uri, transform_graph_uri, config, pushed)
        record = pushed.get("metrics") or {}
        if scores is None:
            note = headline
        elif record.get(headline) is None or record.get(f"{headline}_2se") is None:
            note = f"the champion (version {pushed['version']}) has no recorded {config.split} score"
        else:
            spans = (read_metadata(examples_uri).inputs or {}).get("spans") or []
            drift = {**measure_drift(scores, record[headline], record[f"{headline}_2se"], config, spans,
                                     pushed["version"]), "champion_version": pushed["version"]}
    write_drift(output_uri, drift, None if drift is not None else note)
    if drift is not None and drift["failed"]:
        raise DataError(f"{config.split} split", "evaluate.drift_limit", drift["line"],
                        "check the new data, or raise evaluate.drift_limit or set evaluate.drift_action=warn")
    return drift
