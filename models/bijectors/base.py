"""The bijector base class shared by every tfflows transformation.

Convention (as in TFP): `forward` maps base noise u to data x, `inverse` maps data x to noise u.
Each transformation computes a value and its log-determinant in one pass, so subclasses implement
`forward_and_log_det(u)` -> (x, log|det dx/du|) and `inverse_and_log_det(x)` -> (u, log|det du/dx|),
both per example (shape [batch]). TFP's `_forward`, `_inverse` and `_*_log_det_jacobian` are
derived from them, so the classes work everywhere a `tfp.bijectors.Bijector` does (Chain,
TransformedDistribution); flows call the one-pass methods directly and skip the duplicate work.

Keyword arguments reach the transformations as TFP "conditional" kwargs: `context` (a conditioning
vector [batch, C]) and `training` (batch norm's minibatch statistics), both optional.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

__all__ = ["FlowBijector", "bound_log_scale"]


def bound_log_scale(raw, bound):
    """alpha = bound * tanh(raw / bound): a smooth, exact bound |alpha| < bound (identity if None).

    Unbounded log-scales overflow a few standard deviations away from the data (exp of a network
    output that grows linearly in |x|), so out-of-distribution rows got NaN instead of a very low
    log-density. The bound keeps every layer's scale within [exp(-bound), exp(bound)]; the
    log-determinants use the bounded alpha, so the density stays exact.
    """
    return raw if bound is None else bound * tf.tanh(raw / bound)


class FlowBijector(tfp.bijectors.Bijector):
    """A bijector on vectors (event rank 1) that returns values and log-dets together."""

    def __init__(self, event_dim: int, parameters: dict, name: str):
        self.event_dim = int(event_dim)
        super().__init__(
            forward_min_event_ndims=1,
            validate_args=False,
            parameters=parameters,
            name=name,
        )

    def forward_and_log_det(self, u, context=None, training=False):
        raise NotImplementedError

    def inverse_and_log_det(self, x, context=None, training=False):
        raise NotImplementedError

    def _forward(self, u, **kwargs):
        return self.forward_and_log_det(u, **kwargs)[0]

    def _inverse(self, x, **kwargs):
        return self.inverse_and_log_det(x, **kwargs)[0]

    def _forward_log_det_jacobian(self, u, **kwargs):
        return self.forward_and_log_det(u, **kwargs)[1]

    def _inverse_log_det_jacobian(self, x, **kwargs):
        return self.inverse_and_log_det(x, **kwargs)[1]
