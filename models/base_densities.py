"""Base densities of a flow: the standard Gaussian and the MADE mixture of Gaussians (MADE MoG)."""

from __future__ import annotations

import math
from typing import Sequence

import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfflows.models.made import MADE

tfd = tfp.distributions

__all__ = ["StandardNormal", "MixtureMADE", "MixtureMADEDistribution"]


def _uniform_and_normal(shape, seed, dtype):
    seeds = tf.random.experimental.stateless_split(seed, 2)
    return (
        tf.random.stateless_uniform(shape, seeds[0], dtype=dtype),
        tf.random.stateless_normal(shape, seeds[1], dtype=dtype),
    )


class StandardNormal(tf.Module):
    r"""\(\mathcal{N}(0, I_D)\): \(\log p(u) = -\tfrac{1}{2} \left(\lVert u \rVert^2 + D \log 2\pi\right)\)."""

    def __init__(self, event_dim: int, name: str = "standard_normal"):
        super().__init__(name=name)
        self.event_dim = int(event_dim)

    def log_prob(self, u, context=None):
        return -0.5 * (tf.reduce_sum(tf.square(u), axis=-1) + self.event_dim * math.log(2.0 * math.pi))

    def sample(self, n, seed, context=None, dtype=tf.float32):
        return tf.random.stateless_normal([n, self.event_dim], seed, dtype=dtype)

    def distribution(self, dtype=tf.float32):
        return tfd.Sample(tfd.Normal(tf.zeros([], dtype), tf.ones([], dtype)), [self.event_dim])


class MixtureMADE(tf_keras.layers.Layer):
    r"""MADE MoG (MAF paper, section 3.3): each conditional is a mixture of C Gaussians.

    ```math
    p(u) = \prod_i \sum_c \pi_{ic}(u_{<i})\, \mathcal{N}\Big(u_i;\ \mu_{ic}(u_{<i}),\ \exp\big(\alpha_{ic}(u_{<i})\big)^2\Big)
    ```

    One MADE outputs, per dimension, C mixture logits, C means and C log-scales. Density
    evaluation is one pass; sampling is sequential (`MADE.autoregressive_loop`).
    """

    def __init__(self, event_dim: int, hidden_units: Sequence[int], num_components: int, order="natural",
                 activation="relu", context_dim=None, **kwargs):
        super().__init__(**kwargs)
        if num_components < 1:
            raise ValueError(f"`num_components` must be >= 1, but is {num_components}.")
        self.event_dim = int(event_dim)
        self.num_components = int(num_components)
        self.made = MADE(event_dim, hidden_units, num_params=3 * num_components, order=order,
                         activation=activation, context_dim=context_dim, name="made", dtype=self.dtype)

    def _split(self, params):
        c = self.num_components
        return params[..., :c], params[..., c : 2 * c], params[..., 2 * c :]

    def call(self, u, context=None):
        return self.log_prob(u, context)

    def log_prob(self, u, context=None):
        logits, mean, log_scale = self._split(self.made(u, context=context))
        z = (u[..., None] - mean) * tf.exp(-log_scale)
        log_normal = -0.5 * tf.square(z) - log_scale - 0.5 * math.log(2.0 * math.pi)
        per_dim = tf.reduce_logsumexp(tf.nn.log_softmax(logits, axis=-1) + log_normal, axis=-1)
        return tf.reduce_sum(per_dim, axis=-1)

    def sample(self, n, seed, context=None, dtype=tf.float32):
        uniform, normal = _uniform_and_normal([n, self.event_dim], seed, dtype)
        noise = tf.stack([uniform, normal], axis=-1)

        def step(params, noise_i):
            logits, mean, log_scale = self._split(params)
            cdf = tf.cumsum(tf.nn.softmax(logits, axis=-1), axis=-1)
            component = tf.minimum(
                tf.reduce_sum(tf.cast(cdf < noise_i[:, :1], tf.int32), axis=-1), self.num_components - 1
            )
            pick = lambda t: tf.gather(t, component, axis=1, batch_dims=1)  # noqa: E731
            return pick(mean) + pick(tf.exp(log_scale)) * noise_i[:, 1], tf.zeros_like(noise_i[:, 0])

        return self.made.autoregressive_loop(step, noise, context=context)[0]

    def distribution(self, dtype=tf.float32):
        return MixtureMADEDistribution(self, dtype)


class MixtureMADEDistribution(tfp.distributions.Distribution):
    """A TFP distribution view of a `MixtureMADE` (for TransformedDistribution and friends)."""

    def __init__(self, mixture: MixtureMADE, dtype=tf.float32, name: str = "MixtureMADE"):
        parameters = dict(locals())
        self._mixture = mixture
        super().__init__(dtype=dtype, reparameterization_type=tfd.NOT_REPARAMETERIZED, validate_args=False,
                         allow_nan_stats=True, parameters=parameters, name=name)

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return {}

    def _event_shape(self):
        return tf.TensorShape([self._mixture.event_dim])

    def _event_shape_tensor(self):
        return tf.constant([self._mixture.event_dim])

    def _batch_shape(self):
        return tf.TensorShape([])

    def _batch_shape_tensor(self):
        return tf.constant([], tf.int32)

    def _log_prob(self, x, context=None):
        return self._mixture.log_prob(x, context)

    def _sample_n(self, n, seed=None, context=None):
        seed = tfp.random.sanitize_seed(seed)
        return self._mixture.sample(n, seed, context, self.dtype)
