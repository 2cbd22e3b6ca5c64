"""Glow's activation normalisation, with its data-dependent initialisation."""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from tfflows.models.bijectors.image import ImageBijector

__all__ = ["ActNorm"]


class ActNorm(ImageBijector):
    r"""Activation normalisation: a per-channel affine map (Glow, section 3.1 and table 1).

    #### Mathematical details

    On an image [H, W, C], with a learnt location m and log-scale s per channel:

    ```math
    \begin{aligned}
    \text{inverse } (x \to u):&\quad u_{ijc} = (x_{ijc} - m_c)\, e^{-s_c} \\
    \text{forward } (u \to x):&\quad x_{ijc} = u_{ijc}\, e^{s_c} + m_c \\
    \log\left|\det \frac{\partial u}{\partial x}\right| &= -H \cdot W \cdot \sum_c s_c
    \end{aligned}
    ```

    (Glow writes \(y = \mathrm{scale} \odot x + \mathrm{bias}\) with \(\mathrm{scale} = e^{-s}\),
    \(\mathrm{bias} = -m\, e^{-s}\).)

    Data-dependent initialisation: the first call in training mode (`training=True`) sets \(m_c\)
    and \(s_c = \log \mathrm{std}_c\) from the mean and standard deviation of channel c over that batch (all
    rows and pixels), so the layer's output on its first batch has zero mean and unit variance
    per channel; from then on m and s are ordinary trainable parameters. Whether that has
    happened is the variable `initialised`, saved and restored with the weights, so the
    initialisation happens once per model (a restored or frozen model never redoes it).
    Evaluation calls (`training=False`) never initialise: an untrained layer is the identity.
    """

    def __init__(self, event_dim: int, image_shape: Sequence[int], epsilon: float = 1e-6, name: str = "actnorm",
                 dtype="float32"):
        parameters = dict(locals())
        if not epsilon > 0:
            raise ValueError(f"`epsilon` must be positive, but is {epsilon}.")
        super().__init__(event_dim, image_shape, image_shape, parameters, name)
        self.epsilon = float(epsilon)
        channels = self.data_shape[-1]
        # MEAN / ONLY_FIRST_REPLICA: the initialisation assigns in a replica's step; under a
        # mirrored strategy every replica's batch statistics are averaged into one value.
        with tf.name_scope(name):
            self.location = tf.Variable(tf.zeros([channels], dtype), name="location",
                                        aggregation=tf.VariableAggregation.MEAN)
            self.log_scale = tf.Variable(tf.zeros([channels], dtype), name="log_scale",
                                         aggregation=tf.VariableAggregation.MEAN)
            self.initialised = tf.Variable(False, trainable=False, name="initialised",
                                           aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def initialise(self, x):
        """Sets m and s from the batch x [batch, H, W, C] (once; later calls change nothing)."""

        def from_batch():
            mean, variance = tf.nn.moments(tf.stop_gradient(x), axes=[0, 1, 2])
            self.location.assign(tf.cast(mean, self.location.dtype))
            self.log_scale.assign(tf.cast(0.5 * tf.math.log(variance + self.epsilon), self.log_scale.dtype))
            self.initialised.assign(True)
            return tf.constant(True)

        return tf.cond(self.initialised, lambda: tf.constant(False), from_batch)

    def _per_row(self, log_scale, batch_of):
        pixels = self.data_shape[0] * self.data_shape[1]
        return pixels * tf.reduce_sum(log_scale) * tf.ones_like(batch_of[:, 0, 0, 0])

    def _to_base(self, x, training):
        if training:
            self.initialise(x)
        location, log_scale = tf.cast(self.location, x.dtype), tf.cast(self.log_scale, x.dtype)
        return (x - location) * tf.exp(-log_scale), -self._per_row(log_scale, x)

    def _to_data(self, u):
        location, log_scale = tf.cast(self.location, u.dtype), tf.cast(self.log_scale, u.dtype)
        return u * tf.exp(log_scale) + location, self._per_row(log_scale, u)

