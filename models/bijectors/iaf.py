"""IAF layers: autoregressive transformations whose sampling direction is parallel."""

from __future__ import annotations

import tensorflow as tf

from tfflows.models.bijectors.base import FlowBijector
from tfflows.models.bijectors.maf import check_made_params
from tfflows.models.bijectors.transformers import Affine
from tfflows.models.made import MADE

__all__ = ["InverseAutoregressiveFlow", "GatedInverseAutoregressiveFlow"]


class InverseAutoregressiveFlow(FlowBijector):
    r"""One IAF layer (Kingma et al. 2016, eq. 10), the inverse of a MAF layer with the same MADE.

    #### Mathematical details

    With \((\mu_i, \alpha_i) = \mathrm{MADE}(u)_i\) depending on \(u_{<i}\) only (\(\alpha\) bounded as in MAF):

    ```math
    \begin{aligned}
    \text{forward } (u \to x,\ \text{one parallel pass}):&\quad x_i = \big(u_i - \mu_i(u_{<i})\big) \exp\big(-\alpha_i(u_{<i})\big) \\
    \text{inverse } (x \to u,\ \text{sequential}):&\quad u_i = x_i \exp\big(\alpha_i(u_{<i})\big) + \mu_i(u_{<i}) \\
    \log\left|\det \frac{\partial x}{\partial u}\right| &= -\sum_i \alpha_i
    \end{aligned}
    ```

    This is the IAF paper's \(x = \sigma(u) \odot u + m(u)\) with \(\sigma = e^{-\alpha}\) and
    \(m = -\mu\, e^{-\alpha}\), written so that `InverseAutoregressiveFlow(made)` and
    `MaskedAutoregressiveFlow(made)` are exact inverses of each other (MAF paper, appendix A): this
    layer's forward is MAF's inverse.

    With `transformer` (e.g. `RationalQuadraticSpline`) the same holds for its elementwise map
    \(\tau\): forward \(x_i = \tau(u_i; \theta_i(u_{<i}))\) in one pass, inverse
    \(u_i = \tau^{-1}(x_i; \theta_i(u_{<i}))\) in `MADE.autoregressive_loop`,
    \(\log|\det \partial x / \partial u| = \sum_i \log \tau'(u_i)\).
    """

    def __init__(self, made: MADE, max_log_scale: float | None = None, name: str = "iaf", transformer=None):
        parameters = dict(locals())
        self.transformer = transformer or Affine(max_log_scale)
        check_made_params(made, self.transformer, "IAF")
        self.made = made
        super().__init__(made.event_dim, parameters, name)

    def forward_and_log_det(self, u, context=None, training=False):
        x, log_det = self.transformer.to_base(self.made(u, context=context), u)
        return x, tf.reduce_sum(log_det, axis=-1)

    def inverse_and_log_det(self, x, context=None, training=False):
        return self.made.autoregressive_loop(self.transformer.to_data, x, context=context)


class GatedInverseAutoregressiveFlow(FlowBijector):
    r"""The numerically stable, sigmoid-gated IAF step (Kingma et al. 2016, eqs. 11-14, Algorithm 1).

    #### Mathematical details

    With \((m_i, s_i) = \mathrm{MADE}(u)_i\) depending on \(u_{<i}\) (and on a context h, if given):

    ```math
    \begin{aligned}
    \sigma &= \operatorname{sigmoid}(s + \mathrm{forget\_bias})
      && \text{(eq. 12; the bias starts } \sigma \text{ near 1)} \\
    \text{forward } (u \to x,\ \text{parallel}):&\quad x = \sigma \odot u + (1 - \sigma) \odot m && \text{(eq. 13)} \\
    \text{inverse } (x \to u,\ \text{sequential}):&\quad u_i = \frac{x_i - (1 - \sigma_i)\, m_i}{\sigma_i} \\
    \log\left|\det \frac{\partial x}{\partial u}\right| &= \sum_i \log \sigma_i && \text{(eq. 14)}
    \end{aligned}
    ```

    `forget_bias` (the paper suggests +1 or +2) is added to s so that at initialisation the step is
    close to the identity.
    """

    def __init__(self, made: MADE, forget_bias: float = 1.0, name: str = "gated_iaf"):
        parameters = dict(locals())
        if made.num_params != 2:
            raise ValueError(f"Gated IAF needs a MADE with num_params=2, but num_params is {made.num_params}.")
        self.made = made
        self.forget_bias = float(forget_bias)
        super().__init__(made.event_dim, parameters, name)

    def _gate(self, params):
        return params[..., 0], params[..., 1] + self.forget_bias

    def forward_and_log_det(self, u, context=None, training=False):
        m, s = self._gate(self.made(u, context=context))
        sigma = tf.sigmoid(s)
        return sigma * u + (1.0 - sigma) * m, tf.reduce_sum(tf.math.log_sigmoid(s), axis=-1)

    def inverse_and_log_det(self, x, context=None, training=False):
        def step(params, x_i):
            m, s = self._gate(params)
            sigma = tf.sigmoid(s)
            return (x_i - (1.0 - sigma) * m) / sigma, -tf.math.log_sigmoid(s)

        return self.made.autoregressive_loop(step, x, context=context)
