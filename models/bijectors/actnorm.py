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

    Data-dependent initialisation (Glow, section 3.1): `initialise(x)` sets \(m_c\) and
    \(s_c = \log \mathrm{std}_c\) from the mean and standard deviation of channel c over a batch
    (all rows and pixels), so the layer's output on that batch has zero mean and unit variance per
    channel; from then on m and s are ordinary trainable parameters. `FlowModel.initialise_from_data`
    calls it with each ActNorm's own input, and `FlowModel.fit` and the trainer call that on the
    first training batch, outside any training step (a replica of a distribution strategy cannot
    assign a mirrored variable inside a step; outside it, every replica's copy gets the same
    value). Whether that has happened is the variable `initialised`, saved and restored with the
    weights, so the initialisation happens once per model (a restored model never redoes it). An
    uninitialised layer is the identity.
    """

    def __init__(self, event_dim: int, image_shape: Sequence[int], epsilon: float = 1e-6, name: str = "actnorm",
                 dtype="float32"):
        parameters = dict(locals())
        if not epsilon > 0:
            raise ValueError(f"`epsilon` must be positive, but is {epsilon}.")
        super().__init__(event_dim, image_shape, image_shape, parameters, name)
        self.epsilon = float(epsilon)
        channels = self.data_shape[-1]
        with tf.name_scope(name):
            self.location = tf.Variable(tf.zeros([channels], dtype), name="location")
            self.log_scale = tf.Variable(tf.zeros([channels], dtype), name="log_scale")
            self.initialised = tf.Variable(False, trainable=False, name="initialised")

    def initialise(self, x) -> bool:
        """Sets m and s from the rows x [batch, D] (this layer's input) unless that was done before;
        returns whether it set them. Call it eagerly or in a strategy's cross-replica context."""
        if bool(self.initialised.numpy()):
            return False
        image = tf.reshape(tf.stop_gradient(x)[..., :self.size], [-1, *self.data_shape])
        mean, variance = tf.nn.moments(tf.cast(image, tf.float64), axes=[0, 1, 2])
        self.location.assign(tf.cast(mean, self.location.dtype))
        self.log_scale.assign(tf.cast(0.5 * tf.math.log(variance + self.epsilon), self.log_scale.dtype))
        self.initialised.assign(True)
        return True

    def _per_row(self, log_scale, batch_of):
        pixels = self.data_shape[0] * self.data_shape[1]
        return pixels * tf.reduce_sum(log_scale) * tf.ones_like(batch_of[:, 0, 0, 0])

    def _to_base(self, x, training):
        location, log_scale = tf.cast(self.location, x.dtype), tf.cast(self.log_scale, x.dtype)
        return (x - location) * tf.exp(-log_scale), -self._per_row(log_scale, x)

    def _to_data(self, u):
        location, log_scale = tf.cast(self.location, u.dtype), tf.cast(self.log_scale, u.dtype)
        return u * tf.exp(log_scale) + location, self._per_row(log_scale, u)

