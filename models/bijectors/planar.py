"""Planar flow (Rezende & Mohamed 2015; thesis section 3.8): a residual map along one direction."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfflows.models.bijectors.base import FlowBijector

__all__ = ["PlanarFlow"]


class PlanarFlow(FlowBijector):
    r"""One planar transformation \(f(z) = z + \hat{u} \tanh(w^\top z + b)\) (thesis eq. 3.7).

    #### Mathematical details

    ```math
    \begin{aligned}
    \hat{u} &= u + \big(m(w^\top u) - w^\top u\big) \frac{w}{\lVert w \rVert^2}, \qquad m(a) = -1 + \operatorname{softplus}(a)
      && \text{(so } w^\top \hat{u} > -1\text{)} \\
    \text{forward } (z \to x,\ \text{closed form}):&\quad x = z + \hat{u} \tanh(w^\top z + b) \\
    \log\left|\det \frac{\partial x}{\partial z}\right| &= \log\left|1 + h'(w^\top z + b)\, w^\top \hat{u}\right|, \qquad h' = 1 - \tanh^2
      && \text{(matrix determinant lemma)} \\
    \text{inverse } (x \to z,\ \text{root finding}):&\quad \text{solve } \alpha + c \tanh(\alpha + b) = w^\top x
      \text{ for } \alpha = w^\top z, \\
    &\quad c = w^\top \hat{u}; \text{ then } z = x - \hat{u} \tanh(\alpha + b)
    \end{aligned}
    ```

    With \(c > -1\) and \(0 < h' \le 1\) the scalar equation is strictly increasing in \(\alpha\), and
    its root lies in \([w^\top x - |c|,\ w^\top x + |c|]\) (\(|\tanh| \le 1\)). The inverse bisects
    that bracket (vectorised over the batch, `bisection_steps` halvings: 64 reach float64 round-off
    for |c| up to ~1e4), then takes one Newton step from the stopped-gradient root. That step
    changes the value by round-off only, but gives the exact implicit-function gradient
    \(d\alpha / d(w^\top x) = 1 / (1 + c\, h')\), so the inverse is differentiable (w.r.t. x and the
    parameters) like a closed-form one.

    Initialisation: random w, u (scale `init_scale`) with \(w^\top u\) set so that
    \(\hat{u} \perp w\), i.e. each layer starts as a volume-preserving shear close to the identity.

    Only tanh is supported: the invertibility constraint needs h' in (0, 1] and a bounded h.

    #### References
    Rezende & Mohamed, "Variational Inference with Normalizing Flows", ICML 2015, appendix A.1.
    """

    def __init__(self, event_dim: int, init_scale: float = 0.1, seed: int = 0, bisection_steps: int = 64,
                 dtype="float32", name: str = "planar"):
        parameters = dict(locals())
        if int(event_dim) < 1:
            raise ValueError(f"`event_dim` must be >= 1, but is {event_dim}.")
        if int(bisection_steps) < 1:
            raise ValueError(f"`bisection_steps` must be >= 1, but is {bisection_steps}.")
        self.bisection_steps = int(bisection_steps)
        rng = np.random.default_rng(seed)
        dtype = tf.as_dtype(dtype)
        w, u = rng.normal(0.0, init_scale, [event_dim]), rng.normal(0.0, init_scale, [event_dim])
        # Start with wᵀu = softplus^-1(1), so m(wᵀu) = 0 and u_hat ⊥ w: a volume-preserving shear
        # (log-det 0). A plain random start has wᵀu_hat ≈ m(0) = -0.31, which contracts every layer
        # and collapses a deep stack (K = 32) at initialisation.
        u = u + (math.log(math.e - 1.0) - w @ u) * w / (w @ w)
        with tf.name_scope(name):
            self.w = tf.Variable(w, dtype=dtype, name="w")
            self.u = tf.Variable(u, dtype=dtype, name="u")
            self.b = tf.Variable(0.0, dtype=dtype, name="b")
        super().__init__(event_dim, parameters, name)

    def u_hat(self):
        """u constrained so that wᵀu_hat = -1 + softplus(wᵀu) > -1 (the map is invertible)."""
        wu = tf.reduce_sum(self.w * self.u)
        m = -1.0 + tf.math.softplus(wu)
        return self.u + (m - wu) * self.w / tf.reduce_sum(tf.square(self.w))

    def forward_and_log_det(self, u, context=None, training=False):
        z = u  # the base-side input (named z in the papers)
        u_hat = self.u_hat()
        t = tf.tanh(tf.linalg.matvec(z, self.w) + self.b)
        c = tf.reduce_sum(self.w * u_hat)
        x = z + t[:, None] * u_hat
        return x, tf.math.log1p((1.0 - tf.square(t)) * c)

    def inverse_and_log_det(self, x, context=None, training=False):
        u_hat = self.u_hat()
        c = tf.reduce_sum(self.w * u_hat)
        y = tf.linalg.matvec(x, self.w)

        def g(alpha):
            return alpha + c * tf.tanh(alpha + self.b) - y

        # Bisection on the monotone scalar equation (no gradients flow through the loop).
        y_s, c_s = tf.stop_gradient(y), tf.stop_gradient(c)
        b_s = tf.stop_gradient(self.b)
        lo, hi = y_s - tf.abs(c_s) - 1.0, y_s + tf.abs(c_s) + 1.0

        def body(i, lo, hi):
            mid = 0.5 * (lo + hi)
            above = mid + c_s * tf.tanh(mid + b_s) - y_s > 0
            return i + 1, tf.where(above, lo, mid), tf.where(above, mid, hi)

        _, lo, hi = tf.while_loop(lambda i, *_: i < self.bisection_steps, body, (tf.constant(0), lo, hi),
                                  maximum_iterations=self.bisection_steps)
        root = tf.stop_gradient(0.5 * (lo + hi))
        # One Newton step: a round-off-sized correction carrying the implicit-function gradient.
        slope = 1.0 + c * (1.0 - tf.square(tf.tanh(root + self.b)))
        alpha = root - g(root) / slope
        t = tf.tanh(alpha + self.b)
        z = x - t[:, None] * u_hat
        return z, -tf.math.log1p((1.0 - tf.square(t)) * c)
