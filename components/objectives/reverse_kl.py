"""Reverse KL: a flow q fitted to an unnormalised target density p~ (variational inference).

Training minimises ``KL(q || p) = E_q[log q(x) - log p~(x)] + log Z`` with the
reparameterisation trick on fresh samples of q (Rezende & Mohamed 2015, eq. 15, with their
annealing of the target's weight beta); its metric is the ELBO ``E_q[log p~ - log q]``. There is
no data: evaluation draws ``num_samples`` samples of q with a fixed seed and reports the ELBO
(mean ± 2 s.e.), the effective sample size ESS/n of the importance weights p~/q,
``log Z ≈ log mean(p~/q)`` and ``KL(q || p) ≈ log Z - ELBO`` (`models.vi`), against the
standard-normal q. Push exports the flow with no preprocessing: its raw space is the target's
(`components.push.export.export_flow`).

This module declares the objective and is read by the configuration check (no TensorFlow of its
own: checking a target loads it, `TrainConfig.target_density`); its training part, scorer and
export are in `components.objectives.reverse_kl_runtime` (`Objective.runtime`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Dict, List, Optional

from tfflows.components.config import ConfigError
from tfflows.components.objectives import Objective, SummaryDetails

# Flows whose sampling direction (the one reverse KL differentiates through) is one parallel pass.
REVERSE_KL_KINDS = ("planar", "iaf", "realnvp")

__all__ = ["OBJECTIVE", "REVERSE_KL_KINDS", "ReverseKL", "TargetDetails", "target_fingerprint"]


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


class ReverseKL(Objective):
    """A flow fitted to an unnormalised target density by reverse KL; no data."""

    name = "reverse_kl"
    metric = "elbo"
    data_components = ()
    details = TargetDetails
    owned_fields = ("target", "target_dim", "target_box", "anneal_epochs")
    default_steps_per_epoch = 100
    flow_defaults = {"batch_norm": False}  # batch norm's statistics come from data; there is none
    runtime_module = "tfflows.components.objectives.reverse_kl_runtime"

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

    def data_fingerprint(self, config) -> Optional[str]:
        return target_fingerprint(config)

    def report(self, evaluation: Dict[str, Any]) -> List[str]:
        metrics = evaluation.get("metrics") or {}
        if metrics.get("elbo") is None:
            return []
        return [f"target {evaluation.get('target')}: ELBO {metrics['elbo']:.4f} ± {metrics['elbo_2se']:.4f} nats, "
                f"ESS/n {metrics['ess']:.3f}, log Z ≈ {metrics['log_z']:.4f}, KL(q||p) ≈ {metrics['kl']:.4f} nats "
                f"({evaluation.get('num_examples')} samples)"]


OBJECTIVE = ReverseKL()
