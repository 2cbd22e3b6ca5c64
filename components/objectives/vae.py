"""The VAE: a variational autoencoder with an IAF posterior (`models.vae.IAFVAE`) on ingested data.

Training maximises the ELBO ``E_q[log p(x, z) - log q(z | x)]`` (nats per example; Kingma et al.
2016). Discrete data is scaled to [0, 1] (levels / (L - 1)); with the Bernoulli likelihood each
epoch binarises it afresh (x ~ Bernoulli(level / (L - 1)), stateless seed (seed, epoch, batch)),
the IAF paper's dynamic binarisation. Validation: the ELBO of the eval split binarised once,
with fixed posterior noise.

Evaluation scores the test split (scaled alike, binarised once with the fixed
``dequantization_seed``) by the importance-sampled log-likelihood
``log (1/K) sum_k p(x, z_k) / q(z_k | x)``, K = ``importance_samples``, and by its ELBO, against
the factorised model of the train split. Push exports ``log_prob`` (that estimate with K samples
of a fixed seed: deterministic) and ``sample`` (x ~ p(x | z), z ~ N(0, I)) on the VAE's own data
space: levels scaled to [0, 1], binary pixels {0, 1} for the Bernoulli likelihood.

This module declares the objective and is read by the configuration check (no TensorFlow); its
training part, scorer and export are in `components.objectives.vae_runtime` (`Objective.runtime`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional

from tfflows.components.config import ConfigError
from tfflows.components.objectives import Objective, SummaryDetails
from tfflows.models.kinds import VAE_LIKELIHOODS

# `TrainConfig.vae_options` keys: the `models.vae.IAFVAE` arguments that are not set elsewhere.
VAE_OPTIONS = ("latent_dim", "hidden_units", "context_dim", "forget_bias", "likelihood")

__all__ = ["OBJECTIVE", "VAE", "VAEDetails", "VAE_OPTIONS"]


@dataclasses.dataclass
class VAEDetails(SummaryDetails):
    """The VAE's entries of the model summary.

    Attributes:
      vae: the `models.vae.IAFVAE` arguments (``likelihood``, ``latent_dim``, ...).
      data_scale: the factor from stored levels to the VAE's [0, 1] data space (1 / (L - 1);
        1 for continuous data).
    """

    vae: Optional[Dict[str, Any]] = None
    data_scale: Optional[float] = None

    @property
    def binary(self) -> bool:
        """Binarised data (the Bernoulli likelihood)."""
        return (self.vae or {}).get("likelihood") == "bernoulli"


class VAE(Objective):
    """A VAE with an IAF posterior on the ingested data (no transform: it scales the levels itself)."""

    name = "vae"
    metric = "elbo"
    data_components = ("ingest",)
    details = VAEDetails
    owned_fields = ("vae_options",)
    min_num_layers = 0  # 0 IAF steps: the diagonal-Gaussian posterior
    runtime_module = "tfflows.components.objectives.vae_runtime"

    def check_config(self, config) -> None:
        unknown = sorted(set(config.vae_options) - set(VAE_OPTIONS))
        if unknown:
            raise ConfigError(f"`vae_options` has unknown option(s) {unknown}; valid ones are {list(VAE_OPTIONS)}", field="vae_options")
        if "likelihood" in config.vae_options and config.vae_options["likelihood"] not in VAE_LIKELIHOODS:
            raise ConfigError(f"`vae_options.likelihood` must be one of {VAE_LIKELIHOODS}, but is "
                             f"{config.vae_options['likelihood']!r}", field="vae_options.likelihood")

    def model_kind(self, config) -> str:
        return "vae"

    def describe(self, config, dataset: str) -> str:
        posterior = f"IAF posterior ({config.num_layers} steps)" if config.num_layers else "diagonal posterior"
        return f"{dataset} -> VAE with {posterior}"

    def report(self, evaluation: Dict[str, Any]) -> List[str]:
        metrics = evaluation.get("metrics") or {}
        if metrics.get("log_likelihood") is None:
            return []
        return [f"test log-likelihood: {metrics['log_likelihood']:.4f} ± {metrics['log_likelihood_2se']:.4f} nats "
                f"(importance-sampled, K={metrics['importance_samples']}); ELBO {metrics['elbo']:.4f} ± "
                f"{metrics['elbo_2se']:.4f}"]


OBJECTIVE = VAE()
