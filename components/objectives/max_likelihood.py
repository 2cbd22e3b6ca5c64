"""Maximum likelihood: a flow fitted to the transformed train split of an Examples artifact.

Training maximises the mean model-space log-likelihood ``log p_z(z)`` of the dequantised,
transformed train split (fresh dequantisation noise per epoch); validation is the same on the
eval split with fixed noise. A conditional dataset (context columns) trains a conditional flow,
``log p_z(z | c)`` with ``c`` the standardised context, on ``(z, c)`` batches, and every score
below is conditional on each row's own context. A dataset with modelled categorical columns trains a
`models.MixedDensity` on ``(z, codes[, c])`` batches: the exact log-density of the mixed row,
``log P(codes[ | c]) + log p_z(z | onehot(codes)[, c])``, with K_i = vocabulary + 1 (the out-of-vocabulary
bucket) codes per column. Evaluation scores the test split by its data-space log-likelihood
against the full-covariance Gaussian of the train split, times smoothed category frequencies for
categorical columns (`components.objectives.scoring`); push exports the transform graph and the
model (`components.push.export.export_flow`).

This module declares the objective and is read by the configuration check (no TensorFlow); its
training part, scorer and export are in `components.objectives.max_likelihood_runtime`
(`Objective.runtime`).
"""

from __future__ import annotations

from typing import Any, Dict, List

from tfflows.components.objectives import Objective

__all__ = ["OBJECTIVE", "MaximumLikelihood"]


class MaximumLikelihood(Objective):
    """A flow fitted to the ingested, transformed data (the default objective)."""

    name = "max_likelihood"
    metric = "log_likelihood"
    data_components = ("ingest", "transform")
    multi_replica = True
    conditional = True
    runtime_module = "tfflows.components.objectives.max_likelihood_runtime"

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
        if evaluation.get("categorical_names"):
            lines.append(f"mixed rows: log P({', '.join(evaluation['categorical_names'])}) + log p(numeric columns | "
                         "them), nats per row (exact; bits/dim has no meaning for a row that is part probability, "
                         "part density)")
        return lines


OBJECTIVE = MaximumLikelihood()
