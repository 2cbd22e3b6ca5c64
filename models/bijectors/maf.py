"""The MAF layer: an affine autoregressive transformation whose density direction is parallel."""

from __future__ import annotations

import tensorflow as tf

from tfflows.models.bijectors.base import FlowBijector
from tfflows.models.bijectors.transformers import Affine
from tfflows.models.made import MADE

__all__ = ["MaskedAutoregressiveFlow"]


class MaskedAutoregressiveFlow(FlowBijector):
    r"""One MAF layer (Papamakarios et al. 2017, eqs. 2-5), built on a Gaussian MADE.

    #### Mathematical details

    With \((\mu_i, a_i) = \mathrm{MADE}(x)_i\), which depend on \(x_{<i}\) only (in the MADE's order), and
    \(\alpha_i = B \tanh(a_i / B)\) (B = `max_log_scale`; \(\alpha_i = a_i\) when B is None, as in the paper):

    ```math
    \begin{aligned}
    \text{forward } (u \to x,\ \text{sequential, } D \text{ steps}):&\quad x_i = u_i \exp\big(\alpha_i(x_{<i})\big) + \mu_i(x_{<i}) \\
    \text{inverse } (x \to u,\ \text{one parallel pass}):&\quad u_i = \big(x_i - \mu_i(x_{<i})\big) \exp\big(-\alpha_i(x_{<i})\big) \\
    \log\left|\det \frac{\partial u}{\partial x}\right| &= -\sum_i \alpha_i
      \qquad \text{(eq. 5; the Jacobian is triangular)}
    \end{aligned}
    ```

    Density evaluation (the inverse) is one MADE pass; sampling (the forward) runs
    `MADE.autoregressive_loop`, the incremental O(D·H) loop.

    With `transformer` (e.g. `RationalQuadraticSpline`, Durkan et al. 2019's autoregressive
    neural spline flow) the affine law above is replaced by that transformer's elementwise map,
    \(u_i = \tau(x_i; \theta_i(x_{<i}))\), with \(\theta_i\) the MADE's P = `transformer.num_params`
    outputs; \(\log|\det \partial u / \partial x| = \sum_i \log \tau'(x_i)\). `max_log_scale` is then unused.

    #### Example

    ```python
    made = MADE(event_dim=2, hidden_units=[8])
    layer = MaskedAutoregressiveFlow(made)
    u, log_det = layer.inverse_and_log_det(tf.ones([3, 2]))
    ```
    """

    def __init__(self, made: MADE, max_log_scale: float | None = None, name: str = "maf", transformer=None):
        parameters = dict(locals())
        self.transformer = transformer or Affine(max_log_scale)
        check_made_params(made, self.transformer, "MAF")
        self.made = made
        super().__init__(made.event_dim, parameters, name)

    def inverse_and_log_det(self, x, context=None, training=False):
        u, log_det = self.transformer.to_base(self.made(x, context=context), x)
        return u, tf.reduce_sum(log_det, axis=-1)

    def forward_and_log_det(self, u, context=None, training=False):
        return self.made.autoregressive_loop(self.transformer.to_data, u, context=context)


def check_made_params(made: MADE, transformer, layer: str) -> None:
    """Refuses a MADE whose outputs per dimension do not match the transformer's parameters."""
    if made.num_params != transformer.num_params:
        raise ValueError(f"{layer} with a {type(transformer).__name__} transformer needs a MADE with "
                         f"num_params={transformer.num_params}, but num_params is {made.num_params}.")
