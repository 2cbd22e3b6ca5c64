r"""Conversions between model-space and data-space log-likelihoods, bits/dim, error bars.

Spaces: the model sees ``z`` (logit or standardised), the data is ``x`` (raw, in
``[0, L)`` for discrete data after dequantisation). With ``log_det = log|det dz/dx|`` from the
transform graph:

```math
\log p_x(x) = \log p_z(z) + \mathrm{log\_det}.
```

Bits per dimension (MAF paper, appendix E.2, eqs. 14-17, with 256 generalised to ``L``): a
density ``p_x`` on \([0, L)^D\) with unit-width bins bounds the discrete log-probability of
the integer image (dequantisation), so

```math
\mathrm{bpd} = -\frac{\log p_x(x)}{D \ln 2}.
```

For the logit transform \(z = \operatorname{logit}(\lambda + (1 - 2\lambda)\, x / L)\) this is the paper's eq. 17:

```math
\mathrm{bpd} = -\frac{\log p_z(z)}{D \ln 2} - \log_2(1 - 2\lambda) + \log_2 L
  + \frac{1}{D} \sum_i \big[\log_2 \operatorname{sigmoid}(z_i) + \log_2\big(1 - \operatorname{sigmoid}(z_i)\big)\big],
```

and for a density \(p_u\) on \([0, 1)^D\) (\(u = x / L\)): \(\mathrm{bpd} = -\log p_u / (D \ln 2) + \log_2 L\).
"""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np

__all__ = ["data_log_prob", "bits_per_dim", "bits_per_dim_unit_interval",
           "bits_per_dim_from_logit", "mean_and_two_se", "paired_difference"]


def data_log_prob(model_log_prob, log_det):
    r"""\(\log p_x(x) = \log p_z(z) + \log|\det \partial z / \partial x|\) elementwise (per example)."""
    return np.asarray(model_log_prob, np.float64) + np.asarray(log_det, np.float64)


def _check_dim(event_dim: int) -> None:
    if not isinstance(event_dim, (int, np.integer)) or event_dim < 1:
        raise ValueError(f"`event_dim` must be a positive int, but is {event_dim!r}")


def bits_per_dim(data_log_prob_values, event_dim: int):
    r"""Bits/dim of a log density on \([0, L)^D\) (the ingested raw space): \(-\log p / (D \ln 2)\)."""
    _check_dim(event_dim)
    return -np.asarray(data_log_prob_values, np.float64) / (event_dim * math.log(2.0))


def bits_per_dim_unit_interval(log_prob_unit, event_dim: int, num_levels: int):
    r"""Bits/dim of a log density on \([0, 1)^D\) (\(u = x / L\)): \(-\log p / (D \ln 2) + \log_2 L\)."""
    return bits_per_dim(log_prob_unit, event_dim) + math.log2(num_levels)


def bits_per_dim_from_logit(logit_log_prob, z, num_levels: int, lam: float):
    """Bits/dim from the logit-space log density ``logit_log_prob`` [B] at ``z`` [B, D] (eq. 17)."""
    z = np.asarray(z, np.float64)
    d = z.shape[-1]
    _check_dim(d)
    # log sigmoid(z) + log(1 - sigmoid(z)) = -softplus(-z) - softplus(z), stable for large |z|.
    log_s_1ms = -np.logaddexp(0.0, -z) - np.logaddexp(0.0, z)
    return (-np.asarray(logit_log_prob, np.float64) / (d * math.log(2.0))
            - math.log2(1.0 - 2.0 * lam) + math.log2(num_levels)
            + log_s_1ms.sum(axis=-1) / (d * math.log(2.0)))


def mean_and_two_se(values) -> Tuple[float, float]:
    r"""Mean and two standard errors \(2\, \mathrm{std} / \sqrt{N}\) of per-example values (paper's bars).

    Uses the population std (``ddof=0``) as the MAF code does; for N = 1 the error is 0.
    """
    values = np.asarray(values, np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("`values` must hold at least one example, but is empty")
    return float(values.mean()), float(2.0 * values.std() / math.sqrt(values.size))


def paired_difference(a, b) -> Tuple[float, float]:
    r"""Mean and two standard errors of the per-example differences ``a - b`` of two models' scores
    on the SAME points (paired): the points' own spread cancels, so the error bar is that of the
    models' disagreement, far narrower than the two means' bars combined."""
    a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired scores must be of the same points, but have {a.size} and {b.size} examples")
    return mean_and_two_se(a - b)
