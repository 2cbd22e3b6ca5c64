"""Learnt linear bijectors: the LU-decomposed invertible linear layer, Glow's invertible 1x1
convolution built on it, and a diagonal scaling."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import tensorflow as tf

from tfflows.models.bijectors.base import FlowBijector
from tfflows.models.bijectors.image import ImageBijector

__all__ = ["LULinear", "InvertibleConv1x1", "DiagonalScaling"]

_MIN_DIAGONAL = 1e-3


class LULinear(FlowBijector):
    r"""An invertible linear layer in LU form (Neural Spline Flows, section 3.3; Glow's 1x1 conv).

    #### Mathematical details

    \(W = P L U\) with P a fixed random permutation, L unit lower triangular and U upper triangular
    with diagonal \(d_i = \operatorname{softplus}(v_i) + 10^{-3} > 0\) (so W is always invertible);
    b is a bias:

    ```math
    \begin{aligned}
    \text{forward } (u \to x):&\quad x = W u + b, & \log\left|\det \frac{\partial x}{\partial u}\right| &= \sum_i \log d_i \\
    \text{inverse } (x \to u):&\quad u = U^{-1} L^{-1} P^\top (x - b) & &\text{(two triangular solves, } O(D^2)\text{)}
    \end{aligned}
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


class InvertibleConv1x1(ImageBijector):
    r"""Glow's invertible 1x1 convolution in LU form (Kingma & Dhariwal 2018, section 3.2, eq. 10).

    #### Mathematical details

    The same invertible C x C matrix W acts on the channel vector of every pixel of an image
    [h, w, C]; W is an `LULinear` on C dimensions, \(W = P L (U + \operatorname{diag}(d))\) (eq. 10),
    with P a fixed permutation, L unit lower triangular, U strictly upper triangular, \(d > 0\), and
    a bias b:

    ```math
    \begin{aligned}
    \text{forward } (u \to x):&\quad x_{ij} = W u_{ij} + b \\
    \text{inverse } (x \to u):&\quad u_{ij} = W^{-1} (x_{ij} - b) \qquad \text{(two triangular solves per pixel)} \\
    \log\left|\det \frac{\partial x}{\partial u}\right| &= h \cdot w \cdot \sum_c \log d_c
      \qquad \text{(Glow table 1: } h \cdot w \cdot \textstyle\sum \log|s|\text{)}
    \end{aligned}
    ```

    with \(u_{ij}, x_{ij} \in \mathbb{R}^C\) the channel vectors of pixel (i, j).

    It generalises a fixed channel permutation (the reversal of Real NVP, the shuffle Glow
    compares with) and starts as one: a random channel permutation (Glow starts at a random
    rotation; both are learnt from there). \(d > 0\) keeps W invertible (Glow's sign(s) is fixed too).
    """

    def __init__(self, event_dim: int, image_shape: Sequence[int], seed: int = 0, name: str = "conv1x1",
                 dtype="float32"):
        parameters = dict(locals())
        super().__init__(event_dim, image_shape, image_shape, parameters, name)
        self.linear = LULinear(self.data_shape[-1], seed=seed, name=f"{name}_lu", dtype=dtype)

    def _per_pixel(self, direction, image):
        h, w, c = self.data_shape
        out, log_det = direction(tf.reshape(image, [-1, c]))
        return tf.reshape(out, [-1, h, w, c]), tf.reduce_sum(tf.reshape(log_det, [-1, h * w]), axis=-1)

    def _to_base(self, x, training):
        return self._per_pixel(self.linear.inverse_and_log_det, x)

    def _to_data(self, u):
        return self._per_pixel(self.linear.forward_and_log_det, u)


class DiagonalScaling(FlowBijector):
    r"""NICE's final scaling layer (Dinh et al. 2015, section 3.3): \(h = e^{s} \odot x\) on the density side.

    ```math
    \begin{aligned}
    \text{forward } (u \to x):&\quad x = u \odot e^{-s}, & \log\left|\det \frac{\partial x}{\partial u}\right| &= -\sum_i s_i \\
    \text{inverse } (x \to u):&\quad u = x \odot e^{s}, & \log\left|\det \frac{\partial u}{\partial x}\right| &= \sum_i s_i
    \end{aligned}
    ```

    It gives volume-preserving (additive) coupling flows their only change of volume, one learnt
    scale per dimension; it starts as the identity (\(s = 0\)).
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
