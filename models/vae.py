"""A variational autoencoder whose approximate posterior is an inverse autoregressive flow.

Kingma et al. 2016, section 4 and Algorithm 1:

```none
[mu, log sigma, h] = EncoderNN(x)
eps ~ N(0, I);   z_0 = mu + sigma ⊙ eps;   l = -sum(log sigma + eps²/2 + log(2 pi)/2)
for t = 1..T:    [m, s] = AutoregressiveNN[t](z_{t-1}, h)          (MADE with context h)
                 sigma_t = sigmoid(s + forget_bias);  z_t = sigma_t ⊙ z_{t-1} + (1 - sigma_t) ⊙ m
                 l -= sum(log sigma_t)
log q(z_T | x) = l
ELBO(x)        = E_q [ log p(z_T) + log p(x | z_T) - log q(z_T | x) ]
log p(x)      ≈ log (1/K) sum_k p(x, z^k) / q(z^k | x),  z^k ~ q(z | x)   (importance sampling)
```

Each step is a `GatedInverseAutoregressiveFlow` (its forward is the parallel pass above); the MADE
orders alternate natural / reversed between steps. T = 0 is the diagonal-Gaussian posterior.
The decoder gives Bernoulli logits (binarised data), or a Gaussian or logistic density with a
per-pixel mean and log-scale (continuous data).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import tensorflow as tf
import tf_keras

from tfflows.models.bijectors.iaf import GatedInverseAutoregressiveFlow
from tfflows.models.kinds import VAE_LIKELIHOODS
from tfflows.models.made import MADE

__all__ = ["IAFVAE", "LIKELIHOODS"]

LIKELIHOODS = VAE_LIKELIHOODS  # declared with the kinds (`models.kinds`: no TensorFlow)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class IAFVAE(tf_keras.Model):
    """VAE with a diagonal-Gaussian (T = 0) or IAF (T > 0) posterior, on flattened data [batch, D].

    Args:
      data_dim: D (e.g. 784 for MNIST, 64 for sklearn digits).
      latent_dim: size of z (32 in the IAF paper's MNIST experiments).
      hidden_units: widths of the encoder's and the decoder's hidden layers (ELU).
      num_iaf_steps: T, the number of gated IAF steps (0: diagonal Gaussian).
      iaf_hidden_units: hidden widths of each step's MADE (the paper uses two layers).
      context_dim: size of the encoder's extra output h, fed to every MADE hidden unit.
      forget_bias: added to the gate pre-activation s (the paper: +1 or +2).
      likelihood: "bernoulli", "gaussian" or "logistic".
      dynamic_binarization: `train_step` resamples x ~ Bernoulli(x) every step (data in [0, 1]).
      seed: seed of the noise generator (and of weight initialisation).

    Methods: `elbo(x)` [batch], `importance_log_likelihood(x, k)` [batch], `posterior(x, k)`,
    `log_weights(x, k)` [k, batch], `sample(n, seed)` (x ~ p(x | z), z ~ p(z)); `fit` trains on
    the negative ELBO (`train_step`).
    """

    def __init__(self, data_dim: int, latent_dim: int = 32, hidden_units: Sequence[int] = (300, 300),
                 num_iaf_steps: int = 0, iaf_hidden_units: Sequence[int] = (128, 128), context_dim: int = 32,
                 forget_bias: float = 1.5, likelihood: str = "bernoulli", dynamic_binarization: bool = False,
                 seed: int = 0, dtype="float32", **kwargs):
        super().__init__(name=kwargs.pop("name", "iaf_vae"), dtype=dtype, **kwargs)
        self._config = dict(data_dim=int(data_dim), latent_dim=int(latent_dim), hidden_units=[int(h) for h in hidden_units],
                            num_iaf_steps=int(num_iaf_steps), iaf_hidden_units=[int(h) for h in iaf_hidden_units],
                            context_dim=int(context_dim), forget_bias=float(forget_bias), likelihood=likelihood,
                            dynamic_binarization=bool(dynamic_binarization), seed=int(seed or 0), dtype=str(dtype))
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"`likelihood` must be one of {LIKELIHOODS}, but is {likelihood!r}.")
        if int(num_iaf_steps) < 0:
            raise ValueError(f"`num_iaf_steps` must be >= 0, but is {num_iaf_steps}.")
        if int(latent_dim) < 1 or int(data_dim) < 1:
            raise ValueError(f"`latent_dim` and `data_dim` must be >= 1, but are {latent_dim} and {data_dim}.")
        self.data_dim, self.latent_dim = int(data_dim), int(latent_dim)
        self.num_iaf_steps = int(num_iaf_steps)
        self.context_dim = int(context_dim) if self.num_iaf_steps else 0
        self.likelihood = likelihood
        self.dynamic_binarization = bool(dynamic_binarization)
        seeds = iter(range(1000 * int(seed or 0), 1000 * int(seed or 0) + 1000))

        def dense(units, name, activation=None):
            init = tf_keras.initializers.GlorotUniform(seed=next(seeds))
            return tf_keras.layers.Dense(units, activation=activation, kernel_initializer=init, dtype=dtype, name=name)

        def mlp(units, out, name):
            layers = [dense(h, f"{name}_{i}", "elu") for i, h in enumerate(units)]
            return tf_keras.Sequential(layers + [dense(out, f"{name}_out")], name=name)

        self.encoder = mlp(hidden_units, 2 * self.latent_dim + self.context_dim, "encoder")
        out = self.data_dim * (1 if likelihood == "bernoulli" else 2)
        self.decoder = mlp(list(reversed(list(hidden_units))), out, "decoder")
        self.iaf_steps = [
            GatedInverseAutoregressiveFlow(
                MADE(self.latent_dim, list(iaf_hidden_units), order="natural" if t % 2 == 0 else "reversed",
                     activation="elu", context_dim=self.context_dim, name=f"made_{t}", dtype=dtype),
                forget_bias=forget_bias, name=f"iaf_{t}")
            for t in range(self.num_iaf_steps)
        ]
        self._rng = tf.random.Generator.from_seed(int(seed or 0))
        self._loss_tracker = tf_keras.metrics.Mean(name="loss")
        self._elbo_tracker = tf_keras.metrics.Mean(name="elbo")
        self.elbo(tf.zeros([1, self.data_dim], dtype), seed=0)  # creates the variables eagerly

    def get_config(self):
        """The constructor's arguments: ``IAFVAE(**vae.get_config())`` rebuilds the architecture."""
        return dict(self._config)

    # ----- posterior ----------------------------------------------------------------------
    def encode(self, x):
        """(mu, log_sigma [batch, L], h [batch, C] or None)."""
        out = self.encoder(tf.convert_to_tensor(x, self.dtype))
        mu, log_sigma = out[:, : self.latent_dim], out[:, self.latent_dim: 2 * self.latent_dim]
        return mu, log_sigma, (out[:, 2 * self.latent_dim:] if self.context_dim else None)

    def transform_noise(self, eps, mu, log_sigma, h=None):
        """Algorithm 1 from given noise eps [n, L] (rows aligned with mu, log_sigma, h): (z, log q(z|x))."""
        z = mu + tf.exp(log_sigma) * eps
        log_q = -tf.reduce_sum(log_sigma + 0.5 * tf.square(eps) + _HALF_LOG_2PI, axis=-1)
        for step in self.iaf_steps:
            z, log_det = step.forward_and_log_det(z, context=h)
            log_q -= log_det
        return z, log_q

    def _normal(self, shape, seed):
        if seed is None:
            return self._rng.normal(shape, dtype=self.dtype)
        seed = tf.constant([int(seed), 0], tf.int32) if isinstance(seed, (int, np.integer)) else seed
        return tf.random.stateless_normal(shape, seed, dtype=self.dtype)

    def posterior(self, x, k: int = 1, seed=None):
        """k samples per row: (z [k, batch, L], log q(z | x) [k, batch])."""
        mu, log_sigma, h = self.encode(x)
        batch = tf.shape(mu)[0]
        eps = self._normal([k * batch, self.latent_dim], seed)
        tile = lambda t: None if t is None else tf.tile(t, [k, 1])  # noqa: E731 (row k*batch + b)
        z, log_q = self.transform_noise(eps, tile(mu), tile(log_sigma), tile(h))
        return tf.reshape(z, [k, batch, self.latent_dim]), tf.reshape(log_q, [k, batch])

    # ----- generative model -----------------------------------------------------------------
    def log_likelihood(self, x, z):
        """log p(x | z) for x [..., D] and z [..., L] (same leading shape)."""
        lead = tf.shape(z)[:-1]
        out = self.decoder(tf.reshape(z, [-1, self.latent_dim]))
        x = tf.reshape(tf.broadcast_to(tf.convert_to_tensor(x, self.dtype), tf.concat([lead, [self.data_dim]], 0)),
                       [-1, self.data_dim])
        if self.likelihood == "bernoulli":
            ll = -tf.nn.sigmoid_cross_entropy_with_logits(labels=x, logits=out)
        else:
            mean, log_scale = out[:, : self.data_dim], tf.maximum(out[:, self.data_dim:], -7.0)
            r = (x - mean) * tf.exp(-log_scale)
            if self.likelihood == "gaussian":
                ll = -0.5 * tf.square(r) - log_scale - _HALF_LOG_2PI
            else:  # logistic density
                ll = -r - log_scale - 2.0 * tf.math.softplus(-r)
        return tf.reshape(tf.reduce_sum(ll, axis=-1), lead)

    def sample(self, n, seed=None):
        """n draws x ~ p(x | z), z ~ N(0, I) [n, D]: Bernoulli draws, or mean + scale · noise."""
        if seed is not None:
            seed = (tf.constant([int(seed), 0], tf.int32) if isinstance(seed, (int, np.integer))
                    else tf.cast(seed, tf.int32))
        z_seed, x_seed = (None, None) if seed is None else (seed, seed + tf.constant([0, 1]))
        z = self._normal([n, self.latent_dim], z_seed)
        out = self.decoder(z)
        if self.likelihood == "bernoulli":
            uniform = self._uniform(tf.shape(out), x_seed)
            return tf.cast(uniform < tf.sigmoid(out), self.dtype)
        mean, log_scale = out[:, : self.data_dim], tf.maximum(out[:, self.data_dim:], -7.0)
        u = tf.clip_by_value(self._uniform(tf.shape(mean), x_seed), 1e-6, 1.0 - 1e-6)
        noise = (tf.math.ndtri(u) if self.likelihood == "gaussian" else tf.math.log(u) - tf.math.log1p(-u))
        return mean + tf.exp(log_scale) * noise

    def _uniform(self, shape, seed):
        if seed is None:
            return self._rng.uniform(shape, dtype=self.dtype)
        return tf.random.stateless_uniform(shape, seed, dtype=self.dtype)

    def log_prior(self, z):
        return -tf.reduce_sum(0.5 * tf.square(z) + _HALF_LOG_2PI, axis=-1)

    def log_weights(self, x, k: int = 1, seed=None):
        """log p(x, z^k) - log q(z^k | x) for k posterior samples: [k, batch]."""
        z, log_q = self.posterior(x, k, seed)
        return self.log_prior(z) + self.log_likelihood(x[None], z) - log_q

    def elbo(self, x, k: int = 1, seed=None):
        """Monte Carlo ELBO per row [batch], averaged over k samples."""
        return tf.reduce_mean(self.log_weights(x, k, seed), axis=0)

    def importance_log_likelihood(self, x, k: int = 128, seed=None):
        """log (1/k) sum_k p(x, z^k) / q(z^k | x) per row [batch] (>= ELBO in expectation)."""
        return tf.reduce_logsumexp(self.log_weights(x, k, seed), axis=0) - math.log(k)

    def call(self, x, training=False):
        return self.elbo(x)

    # ----- training -------------------------------------------------------------------------
    @property
    def metrics(self):
        return [self._loss_tracker, self._elbo_tracker]

    def _prepare(self, data, training):
        x = data[0] if isinstance(data, (tuple, list)) else data
        x = tf.convert_to_tensor(x, self.dtype)
        if training and self.dynamic_binarization:
            x = tf.cast(self._rng.uniform(tf.shape(x), dtype=self.dtype) < x, self.dtype)
        return x

    def train_step(self, data):
        x = self._prepare(data, training=True)
        with tf.GradientTape() as tape:
            elbo = tf.reduce_mean(self.elbo(x))
            loss = -elbo
        variables = self.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        self._loss_tracker.update_state(loss)
        self._elbo_tracker.update_state(elbo)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        elbo = tf.reduce_mean(self.elbo(self._prepare(data, training=False)))
        self._loss_tracker.update_state(-elbo)
        self._elbo_tracker.update_state(elbo)
        return {m.name: m.result() for m in self.metrics}
