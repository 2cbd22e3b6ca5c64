"""Learnt linear bijectors: the LU-decomposed invertible linear layer and a diagonal scaling."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfflows.models.bijectors.base import FlowBijector

__all__ = ["LULinear", "DiagonalScaling"]

_MIN_DIAGONAL = 1e-3


class LULinear(FlowBijector):
    """An invertible linear layer in LU form (Neural Spline Flows, section 3.3; Glow's 1x1 conv).

    #### Mathematical details

    W = P L U with P a fixed random permutation, L unit lower triangular and U upper triangular
    with diagonal d_i = softplus(v_i) + 1e-3 > 0 (so W is always invertible); b is a bias:

    ```none
    forward  (u -> x):  x = W u + b                        log|det dx/du| = sum_i log d_i
    inverse  (x -> u):  u = U^-1 L^-1 P^T (x - b)           (two triangular solves, O(D^2))
    ```

    Both directions are one parallel pass. It starts as the permutation P (L = U = I, b = 0), and
    learning L, U and b generalises the fixed permutations between layers, as the NSF paper does.
    """

    def __init__(self, event_dim: int, seed: int = 0, name: str = "lu_linear", dtype="float32"):
        parameters = dict(locals())
        super().__init__(event_dim, parameters, name)
        d = self.event_dim
        self.permutation = np.random.default_rng(seed).permutation(d)
        self.inverse_permutation = np.argsort(self.permutation)
        self._strict_lower = np.tril(np.ones((d, d)), -1)
        # softplus(v) + min = 1 at v = log(expm1(1 - min)): U starts as the identity.
        start = math.log(math.expm1(1.0 - _MIN_DIAGONAL))
        with tf.name_scope(name):
            self.lower = tf.Variable(tf.zeros([d, d], dtype), name="lower")
            self.upper = tf.Variable(tf.zeros([d, d], dtype), name="upper")
            self.unconstrained_diagonal = tf.Variable(tf.fill([d], tf.constant(start, dtype)), name="diagonal")
            self.bias = tf.Variable(tf.zeros([d], dtype), name="bias")

    def _factors(self, dtype):
        mask = tf.constant(self._strict_lower, dtype)
        diagonal = tf.nn.softplus(tf.cast(self.unconstrained_diagonal, dtype)) + _MIN_DIAGONAL
        lower = tf.cast(self.lower, dtype) * mask + tf.eye(self.event_dim, dtype=dtype)
        upper = tf.cast(self.upper, dtype) * tf.transpose(mask) + tf.linalg.diag(diagonal)
        return lower, upper, tf.reduce_sum(tf.math.log(diagonal))

    def forward_and_log_det(self, u, context=None, training=False):
        lower, upper, log_det = self._factors(u.dtype)
        lu_u = tf.matmul(tf.matmul(u, upper, transpose_b=True), lower, transpose_b=True)  # rows: (L U u)^T
        x = tf.gather(lu_u, self.permutation, axis=-1) + tf.cast(self.bias, u.dtype)
        return x, log_det * tf.ones_like(u[..., 0])

    def inverse_and_log_det(self, x, context=None, training=False):
        lower, upper, log_det = self._factors(x.dtype)
        z = tf.transpose(tf.gather(x - tf.cast(self.bias, x.dtype), self.inverse_permutation, axis=-1))
        w = tf.linalg.triangular_solve(lower, z, lower=True)
        u = tf.transpose(tf.linalg.triangular_solve(upper, w, lower=False))
        return u, -log_det * tf.ones_like(x[..., 0])


class DiagonalScaling(FlowBijector):
    """NICE's final scaling layer (Dinh et al. 2015, section 3.3): h = exp(s) ⊙ x on the density side.

    ```none
    forward  (u -> x):  x = u * exp(-s)     log|det dx/du| = -sum_i s_i
    inverse  (x -> u):  u = x * exp(s)      log|det du/dx| =  sum_i s_i
    ```

    It gives volume-preserving (additive) coupling flows their only change of volume, one learnt
    scale per dimension; it starts as the identity (s = 0).
    """

    def __init__(self, event_dim: int, name: str = "scaling", dtype="float32"):
        parameters = dict(locals())
        super().__init__(event_dim, parameters, name)
        with tf.name_scope(name):
            self.log_scale = tf.Variable(tf.zeros([self.event_dim], dtype), name="log_scale")

    def forward_and_log_det(self, u, context=None, training=False):
        s = tf.cast(self.log_scale, u.dtype)
        return u * tf.exp(-s), -tf.reduce_sum(s) * tf.ones_like(u[..., 0])

    def inverse_and_log_det(self, x, context=None, training=False):
        s = tf.cast(self.log_scale, x.dtype)
        return x * tf.exp(s), tf.reduce_sum(s) * tf.ones_like(x[..., 0])
