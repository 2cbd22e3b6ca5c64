"""Elementwise transformers: the one-dimensional invertible maps that autoregressive and coupling
layers apply to each dimension, with parameters produced by a MADE or a conditioner network.

A transformer maps parameters [..., P] and values [...] to values and elementwise log-derivatives
in two directions:

    to_base(params, x) -> (u, log|du/dx|)     the density direction
    to_data(params, u) -> (x, log|dx/du|)     the sampling direction (its exact inverse)

so a layer sums the log-derivatives over the transformed dimensions. `to_data` has the signature
of `MADE.autoregressive_loop`'s step, so the fast O(D·H) loop runs any transformer: MAF sampling
and IAF density evaluation alike.
"""

from __future__ import annotations

import math

import tensorflow as tf

from tfflows.models.bijectors.base import bound_log_scale

__all__ = ["Affine", "Additive", "RationalQuadraticSpline"]


class Affine:
    r"""\(x = u\, e^{\alpha} + \mu\); params [..., 2] = \((\mu, a)\), \(\alpha = B \tanh(a / B)\) (`bound_log_scale`).

    ```math
    \begin{aligned}
    \mathrm{to\_data}:\quad x &= u\, e^{\alpha} + \mu, & \log\left|\frac{dx}{du}\right| &= \alpha \\
    \mathrm{to\_base}:\quad u &= (x - \mu)\, e^{-\alpha}, & \log\left|\frac{du}{dx}\right| &= -\alpha
    \end{aligned}
    ```
    """

    num_params = 2

    def __init__(self, max_log_scale: float | None = None):
        self.max_log_scale = max_log_scale

    def shift_and_log_scale(self, params):
        return params[..., 0], bound_log_scale(params[..., 1], self.max_log_scale)

    def to_base(self, params, x):
        shift, log_scale = self.shift_and_log_scale(params)
        return (x - shift) * tf.exp(-log_scale), -log_scale

    def to_data(self, params, u):
        shift, log_scale = self.shift_and_log_scale(params)
        return u * tf.exp(log_scale) + shift, log_scale


class Additive:
    r"""NICE's additive coupling law (Dinh et al. 2015, eq. 5): x = u + m; params [..., 1] = m.

    Volume preserving: \(\log|dx/du| = 0\).
    """

    num_params = 1

    def to_base(self, params, x):
        return x - params[..., 0], tf.zeros_like(x)

    def to_data(self, params, u):
        return u + params[..., 0], tf.zeros_like(u)


class RationalQuadraticSpline:
    r"""Monotonic rational-quadratic spline on [-B, B], identity outside (Durkan et al. 2019).

    #### Mathematical details (Neural Spline Flows, section 3.1; Gregory & Delbourgo 1982)

    params [..., 3K-1] are unconstrained: K bin widths, K bin heights and K-1 derivatives at the
    interior knots. Widths and heights are softmaxed (each at least `min_bin_size`·2B) and summed
    into K+1 knots \((x^k, y^k)\) from (-B, -B) to (B, B), bin k of width \(w_k\) and height \(h_k\).
    Knot derivatives are \(\delta_k = \delta_{\min} + \operatorname{softplus}(r_k + c)\)
    (\(\delta_{\min}\) = `min_derivative`, \(r_k\) the raw parameter), with c chosen so that
    \(r_k = 0\) gives \(\delta_k = 1\); the two boundary derivatives are 1, so the spline joins the
    identity tails with a continuous derivative. In bin k, with \(s_k = h_k / w_k\) and
    \(\xi = (x - x^k) / w_k \in [0, 1]\), the density direction is (NSF section 3.1)

    ```math
    \begin{aligned}
    u &= y^k + \frac{h_k \left[s_k \xi^2 + \delta_k \xi (1 - \xi)\right]}
                    {s_k + (\delta_{k+1} + \delta_k - 2 s_k)\, \xi (1 - \xi)}, \\
    \frac{du}{dx} &= \frac{s_k^2 \left[\delta_{k+1} \xi^2 + 2 s_k \xi (1 - \xi) + \delta_k (1 - \xi)^2\right]}
                          {\left[s_k + (\delta_{k+1} + \delta_k - 2 s_k)\, \xi (1 - \xi)\right]^2},
    \end{aligned}
    ```

    and the sampling direction (u -> x) takes the root in [0, 1] of \(a \xi^2 + b \xi + c = 0\)
    (NSF appendix A), with \(v = u - y^k\):

    ```math
    \begin{aligned}
    a &= h_k (s_k - \delta_k) + v\, (\delta_{k+1} + \delta_k - 2 s_k), \qquad
    b = h_k \delta_k - v\, (\delta_{k+1} + \delta_k - 2 s_k), \qquad c = -s_k v, \\
    \xi &= \frac{2c}{-b - \sqrt{b^2 - 4ac}}, \qquad x = x^k + \xi\, w_k.
    \end{aligned}
    ```

    Outside [-B, B], u = x with log-derivative 0 (linear tails).

    Both directions are closed form and one pass; the map is strictly increasing because every
    \(\delta_k > 0\) and every bin has positive width and height. With raw parameters 0 (a fresh
    network's near-zero outputs) the spline is the identity.
    """

    def __init__(self, num_bins: int = 8, tail_bound: float = 3.0, min_bin_size: float = 1e-3,
                 min_derivative: float = 1e-3):
        if int(num_bins) < 1:
            raise ValueError(f"`num_bins` must be an int >= 1, but is {num_bins!r}.")
        if not tail_bound > 0:
            raise ValueError(f"`tail_bound` must be > 0, but is {tail_bound!r}.")
        if not 0 < min_bin_size * num_bins < 1:
            raise ValueError(f"`min_bin_size` * `num_bins` must be in (0, 1), but is {min_bin_size * num_bins}.")
        self.num_bins = int(num_bins)
        self.tail_bound = float(tail_bound)
        self.min_bin_size = float(min_bin_size)
        self.min_derivative = float(min_derivative)
        # softplus(c) + min_derivative = 1: zero raw parameters give unit derivatives.
        self._derivative_offset = math.log(math.expm1(1.0 - self.min_derivative))

    @property
    def num_params(self) -> int:
        return 3 * self.num_bins - 1

    def _knots(self, raw):
        """Cumulative knot positions [..., K+1] from -B to B and bin sizes [..., K]."""
        k, bound = self.num_bins, self.tail_bound
        sizes = self.min_bin_size + (1.0 - self.min_bin_size * k) * tf.nn.softmax(raw, axis=-1)
        knots = tf.concat([tf.zeros_like(sizes[..., :1]), tf.cumsum(sizes, axis=-1)], axis=-1)
        knots = 2.0 * bound * knots - bound
        # The end knots are exactly -B and B, whatever the rounding of the cumulative sum.
        knots = tf.concat([tf.fill(tf.shape(knots[..., :1]), tf.cast(-bound, raw.dtype)), knots[..., 1:-1],
                           tf.fill(tf.shape(knots[..., :1]), tf.cast(bound, raw.dtype))], axis=-1)
        return knots, knots[..., 1:] - knots[..., :-1]

    def bins(self, params):
        """The constrained spline of raw params [..., 3K-1]: (bin widths [..., K], bin heights
        [..., K], derivatives at the K-1 interior knots), as `tfp.bijectors.RationalQuadraticSpline`
        takes them (its boundary derivatives are 1 too)."""
        k = self.num_bins
        return self._knots(params[..., :k])[1], self._knots(params[..., k:2 * k])[1], self._derivatives(params)

    def _derivatives(self, params):
        return self.min_derivative + tf.nn.softplus(params[..., 2 * self.num_bins:] + self._derivative_offset)

    def _spline(self, params, value, inverse):
        k, bound = self.num_bins, self.tail_bound
        inside = (value >= -bound) & (value <= bound)
        # Rows outside get a harmless point inside, so no NaN reaches the gradients through tf.where.
        value_in = tf.where(inside, value, tf.zeros_like(value))
        x_knots, widths = self._knots(params[..., :k])
        y_knots, heights = self._knots(params[..., k:2 * k])
        ones = tf.ones_like(params[..., :1])
        derivatives = tf.concat([ones, self._derivatives(params), ones], axis=-1)
        knots = y_knots if inverse else x_knots
        # Bin index: how many interior knots lie at or below the value (0..K-1).
        index = tf.reduce_sum(tf.cast(value_in[..., None] >= knots[..., 1:-1], tf.int32), axis=-1)[..., None]

        def pick(t):
            return tf.gather(t, index, batch_dims=len(index.shape) - 1)[..., 0]

        x_k, w_k, y_k, h_k = pick(x_knots), pick(widths), pick(y_knots), pick(heights)
        d_k, d_k1 = pick(derivatives[..., :-1]), pick(derivatives[..., 1:])
        s_k = h_k / w_k
        curvature = d_k1 + d_k - 2.0 * s_k
        if inverse:
            v = value_in - y_k
            a = h_k * (s_k - d_k) + v * curvature
            b = h_k * d_k - v * curvature
            c = -s_k * v
            xi = 2.0 * c / (-b - tf.sqrt(tf.maximum(b * b - 4.0 * a * c, 0.0)))
            out = xi * w_k + x_k
        else:
            xi = (value_in - x_k) / w_k
            out = y_k + h_k * (s_k * xi**2 + d_k * xi * (1.0 - xi)) / (s_k + curvature * xi * (1.0 - xi))
        one_minus = 1.0 - xi
        denominator = s_k + curvature * xi * one_minus
        log_derivative = (2.0 * tf.math.log(s_k) + tf.math.log(d_k1 * xi**2 + 2.0 * s_k * xi * one_minus
                                                                + d_k * one_minus**2)
                          - 2.0 * tf.math.log(denominator))  # log du/dx at x
        if inverse:
            log_derivative = -log_derivative
        return tf.where(inside, out, value), tf.where(inside, log_derivative, tf.zeros_like(value))

    def to_base(self, params, x):
        return self._spline(params, x, inverse=False)

    def to_data(self, params, u):
        return self._spline(params, u, inverse=True)

