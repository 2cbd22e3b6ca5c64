"""The batch-normalisation bijector of the MAF paper (appendix B)."""

from __future__ import annotations

import tensorflow as tf

from tfflows.models.bijectors.base import FlowBijector

__all__ = ["BatchNormalization"]


class BatchNormalization(FlowBijector):
    r"""Batch norm as an invertible layer (MAF paper, appendix B, eqs. 11-13).

    #### Mathematical details

    x is the side closer to the data, u the side closer to the base density; m and v are the mean
    and variance of x, \(\beta\) and \(\gamma\) are learnt:

    ```math
    \begin{aligned}
    \text{forward } (u \to x):&\quad x = (u - \beta) \odot e^{-\gamma} \odot \sqrt{v + \epsilon} + m && \text{(eq. 11)} \\
    \text{inverse } (x \to u):&\quad u = \frac{x - m}{\sqrt{v + \epsilon}} \odot e^{\gamma} + \beta && \text{(eq. 12)} \\
    \log\left|\det \frac{\partial u}{\partial x}\right| &= \sum_i \Big(\gamma_i - \tfrac{1}{2} \log(v_i + \epsilon)\Big) && \text{(eq. 13)}
    \end{aligned}
    ```

    With `training=True` the inverse uses the minibatch's mean and variance (and differentiates
    through them) and updates running averages. Otherwise the stored statistics are used: the
    running averages, or the statistics of the whole training set once a flow has written them
    with `set_statistics` (the MAF paper's choice, `FlowModel.fit` does it by default).
    """

    def __init__(self, event_dim: int, epsilon: float = 1e-5, momentum: float = 0.95, name: str = "batch_norm"):
        parameters = dict(locals())
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"`momentum` must be in [0, 1), but is {momentum}.")
        if epsilon <= 0.0:
            raise ValueError(f"`epsilon` must be positive, but is {epsilon}.")
        super().__init__(event_dim, parameters, name)
        self.epsilon = float(epsilon)
        self.momentum = float(momentum)
        with tf.name_scope(name):
            self.log_gamma = tf.Variable(tf.zeros([event_dim]), name="log_gamma")
            self.beta = tf.Variable(tf.zeros([event_dim]), name="beta")
            self.mean = tf.Variable(tf.zeros([event_dim]), trainable=False, name="mean")
            self.variance = tf.Variable(tf.ones([event_dim]), trainable=False, name="variance")

    def set_statistics(self, mean, variance):
        self.mean.assign(tf.cast(mean, self.mean.dtype))
        self.variance.assign(tf.cast(variance, self.variance.dtype))

    def _statistics(self, x, training):
        if not training:
            return tf.cast(self.mean, x.dtype), tf.cast(self.variance, x.dtype)
        mean, variance = tf.nn.moments(x, axes=[0])
        self.mean.assign(self.momentum * self.mean + (1.0 - self.momentum) * tf.cast(mean, self.mean.dtype))
        self.variance.assign(
            self.momentum * self.variance + (1.0 - self.momentum) * tf.cast(variance, self.variance.dtype)
        )
        return mean, variance

    def inverse_and_log_det(self, x, context=None, training=False):
        mean, variance = self._statistics(x, training)
        gamma, beta = tf.cast(self.log_gamma, x.dtype), tf.cast(self.beta, x.dtype)
        log_scale = gamma - 0.5 * tf.math.log(variance + self.epsilon)
        u = (x - mean) * tf.exp(log_scale) + beta
        return u, tf.reduce_sum(log_scale, axis=-1) * tf.ones_like(x[..., 0])

    def forward_and_log_det(self, u, context=None, training=False):
        mean, variance = tf.cast(self.mean, u.dtype), tf.cast(self.variance, u.dtype)
        gamma, beta = tf.cast(self.log_gamma, u.dtype), tf.cast(self.beta, u.dtype)
        log_scale = gamma - 0.5 * tf.math.log(variance + self.epsilon)
        x = (u - beta) * tf.exp(-log_scale) + mean
        return x, -tf.reduce_sum(log_scale, axis=-1) * tf.ones_like(u[..., 0])
