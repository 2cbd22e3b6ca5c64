"""The MAF layer: an affine autoregressive transformation whose density direction is parallel."""

from __future__ import annotations

import tensorflow as tf

from tfflows.models.bijectors.base import FlowBijector, bound_log_scale
from tfflows.models.made import MADE

__all__ = ["MaskedAutoregressiveFlow", "affine_step", "shift_and_log_scale"]


def shift_and_log_scale(params, max_log_scale):
    """(mu, alpha) from a Gaussian MADE's outputs [..., 2], alpha bounded by `max_log_scale`."""
    return params[..., 0], bound_log_scale(params[..., 1], max_log_scale)


def affine_step(max_log_scale):
    """The sequential step x_i = u_i·exp(alpha_i) + mu_i, returning (x_i, alpha_i)."""

    def step(params, u_i):
        shift, log_scale = shift_and_log_scale(params, max_log_scale)
        return u_i * tf.exp(log_scale) + shift, log_scale

    return step


class MaskedAutoregressiveFlow(FlowBijector):
    """One MAF layer (Papamakarios et al. 2017, eqs. 2-5), built on a Gaussian MADE.

    #### Mathematical details

    With (mu_i, a_i) = MADE(x)_i, which depend on x_<i only (in the MADE's order), and
    alpha_i = B·tanh(a_i / B) (B = `max_log_scale`; alpha_i = a_i when B is None, as in the paper):

    ```none
    forward  (u -> x, sequential, D steps):  x_i = u_i * exp(alpha_i(x_<i)) + mu_i(x_<i)
    inverse  (x -> u, one parallel pass):    u_i = (x_i - mu_i(x_<i)) * exp(-alpha_i(x_<i))
    log|det du/dx| = -sum_i alpha_i          (eq. 5; the Jacobian is triangular)
    ```

    Density evaluation (the inverse) is one MADE pass; sampling (the forward) runs
    `MADE.autoregressive_loop`, the incremental O(D·H) loop.

    #### Example

    ```python
    made = MADE(event_dim=2, hidden_units=[8])
    layer = MaskedAutoregressiveFlow(made)
    u, log_det = layer.inverse_and_log_det(tf.ones([3, 2]))
    ```
    """

    def __init__(self, made: MADE, max_log_scale: float | None = None, name: str = "maf"):
        parameters = dict(locals())
        self.max_log_scale = max_log_scale
        if made.num_params != 2:
            raise ValueError(f"MAF needs a Gaussian MADE (num_params=2), but num_params is {made.num_params}.")
        self.made = made
        super().__init__(made.event_dim, parameters, name)

    def inverse_and_log_det(self, x, context=None, training=False):
        shift, log_scale = shift_and_log_scale(self.made(x, context=context), self.max_log_scale)
        return (x - shift) * tf.exp(-log_scale), -tf.reduce_sum(log_scale, axis=-1)

    def forward_and_log_det(self, u, context=None, training=False):
        return self.made.autoregressive_loop(affine_step(self.max_log_scale), u, context=context)
