"""The MAF layer: an affine autoregressive transformation whose density direction is parallel."""

from __future__ import annotations

import tensorflow as tf

from models.bijectors.base import FlowBijector
from models.made import MADE

__all__ = ["MaskedAutoregressiveFlow", "affine_step"]


def affine_step(params, u_i):
    """One sequential step x_i = u_i·exp(alpha_i) + mu_i; returns (x_i, alpha_i)."""
    shift, log_scale = params[:, 0], params[:, 1]
    return u_i * tf.exp(log_scale) + shift, log_scale


class MaskedAutoregressiveFlow(FlowBijector):
    """One MAF layer (Papamakarios et al. 2017, eqs. 2-5), built on a Gaussian MADE.

    #### Mathematical details

    With (mu_i, alpha_i) = MADE(x)_i, which depend on x_<i only (in the MADE's order):

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

    def __init__(self, made: MADE, name: str = "maf"):
        parameters = dict(locals())
        if made.num_params != 2:
            raise ValueError(f"MAF needs a Gaussian MADE (num_params=2), but num_params is {made.num_params}.")
        self.made = made
        super().__init__(made.event_dim, parameters, name)

    def inverse_and_log_det(self, x, context=None, training=False):
        params = self.made(x, context=context)
        shift, log_scale = params[..., 0], params[..., 1]
        return (x - shift) * tf.exp(-log_scale), -tf.reduce_sum(log_scale, axis=-1)

    def forward_and_log_det(self, u, context=None, training=False):
        return self.made.autoregressive_loop(affine_step, u, context=context)
