"""The hybrid autoregressive layer of HAF (thesis ch. 6)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from tfflows.models.bijectors.base import FlowBijector
from tfflows.models.bijectors.coupling import ConditionerNet
from tfflows.models.bijectors.transformers import Affine
from tfflows.models.made import MADE

__all__ = ["HybridAutoregressive"]


class HybridAutoregressive(FlowBijector):
    r"""One HAF layer: a Gaussian MADE on x_a and an affine coupling of x_b conditioned on x_a.

    #### Mathematical details (thesis eqs. 6.3-6.5)

    x splits into the MADE part a (d elements) and the coupling part b (D - d elements). With
    \((\mu, \alpha) = \mathrm{MADE}(x_a)\) (\(\mu_i, \alpha_i\) depend on \(x_{a,<i}\)) and networks
    s, t of \(x_a\):

    ```math
    \begin{aligned}
    &\text{forward } (u \to x,\ \text{sequential over } a \text{, then parallel over } b): \\
    &\qquad x_{a,i} = \mu_i(x_{a,<i}) + u_{a,i} \exp\big(\alpha_i(x_{a,<i})\big) \\
    &\qquad x_b = t(x_a) + u_b \odot \exp\big(s(x_a)\big) \\
    &\text{inverse } (x \to u,\ \text{one parallel pass, the density direction}): \\
    &\qquad u_a = \big(x_a - \mu(x_a)\big) \odot \exp\big(-\alpha(x_a)\big) \\
    &\qquad u_b = \big(x_b - t(x_a)\big) \odot \exp\big(-s(x_a)\big) \\
    &\log\left|\det \frac{\partial x}{\partial u}\right| = \sum_i \alpha_i + \sum_j s_j
      \qquad \text{(eq. 6.5)}
    \end{aligned}
    ```

    \(\alpha\) and s are bounded by `max_log_scale` (\(B \tanh(\cdot / B)\)) unless it is None.

    The Jacobian dx/du is lower triangular in the order (a in MADE order, then b): the a-block is
    triangular, the b-block diagonal and b depends on all of a (thesis fig. 6.2). The flow builder
    alternates which positions (even/odd) form a every layer and reverses the MADE order every two
    layers (thesis 6.2.3).

    With a non-affine `transformer` (e.g. `RationalQuadraticSpline`) both halves use its
    elementwise map instead of the affine law: the MADE gives its P parameters per element of a
    (the forward still runs the O(D·H) loop), and one relu network of x_a gives those of b;
    the log-determinant is the sum of the elementwise log-derivatives of both halves.
    """

    def __init__(
        self,
        event_dim: int,
        made_indices: np.ndarray,
        coupling_indices: np.ndarray,
        made_hidden_units: Sequence[int],
        coupling_hidden_units: Sequence[int],
        made_order="natural",
        activation="relu",
        context_dim: int | None = None,
        max_log_scale: float | None = None,
        name: str = "haf",
        dtype="float32",
        transformer=None,
    ):
        parameters = dict(locals())
        self.transformer = transformer or Affine(max_log_scale)
        affine = isinstance(self.transformer, Affine)
        self.made_indices = np.asarray(made_indices)
        self.coupling_indices = np.asarray(coupling_indices)
        self._merge = np.argsort(np.concatenate([self.made_indices, self.coupling_indices]))
        n_a, n_b = len(self.made_indices), len(self.coupling_indices)
        self.made = MADE(
            n_a, made_hidden_units, num_params=self.transformer.num_params, order=made_order,
            activation=activation, context_dim=context_dim, name=f"{name}_made", dtype=dtype,
        )
        self.coupling_net = None
        if affine:  # the thesis' coupling half: a tanh scale network and a relu shift network
            self.scale_net = ConditionerNet(coupling_hidden_units, n_b, "tanh", name=f"{name}_scale", dtype=dtype)
            self.shift_net = ConditionerNet(coupling_hidden_units, n_b, "relu", name=f"{name}_shift", dtype=dtype)
        else:
            self.coupling_net = ConditionerNet(coupling_hidden_units, n_b * self.transformer.num_params, "relu",
                                               name=f"{name}_coupling", dtype=dtype)
        self._coupling_shape = [n_b, self.transformer.num_params]
        super().__init__(event_dim, parameters, name)

    def _split(self, v):
        return tf.gather(v, self.made_indices, axis=-1), tf.gather(v, self.coupling_indices, axis=-1)

    def _merged(self, part_a, part_b):
        return tf.gather(tf.concat([part_a, part_b], axis=-1), self._merge, axis=-1)

    def _coupling_params(self, x_a, context):
        """The transformer's parameters [batch, D - d, P] for the coupling half."""
        if self.coupling_net is not None:
            return tf.reshape(self.coupling_net(x_a, context), [-1, *self._coupling_shape])
        # Affine's raw log-scale is bounded by the transformer itself.
        return tf.stack([self.shift_net(x_a, context), self.scale_net(x_a, context)], axis=-1)

    def inverse_and_log_det(self, x, context=None, training=False):
        x_a, x_b = self._split(x)
        u_a, log_det_a = self.transformer.to_base(self.made(x_a, context=context), x_a)
        u_b, log_det_b = self.transformer.to_base(self._coupling_params(x_a, context), x_b)
        return self._merged(u_a, u_b), tf.reduce_sum(log_det_a, axis=-1) + tf.reduce_sum(log_det_b, axis=-1)

    def forward_and_log_det(self, u, context=None, training=False):
        u_a, u_b = self._split(u)
        x_a, log_det_a = self.made.autoregressive_loop(self.transformer.to_data, u_a, context=context)
        x_b, log_det_b = self.transformer.to_data(self._coupling_params(x_a, context), u_b)
        return self._merged(x_a, x_b), log_det_a + tf.reduce_sum(log_det_b, axis=-1)
