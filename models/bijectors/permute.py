"""A fixed permutation of the event dimensions."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfflows.models.bijectors.base import FlowBijector

__all__ = ["Permutation"]


class Permutation(FlowBijector):
    r"""x = u[..., permutation]; volume preserving, so \(\log|\det| = 0\).

    ```math
    \text{forward: } x_i = u_{p(i)}, \qquad \text{inverse: } u_j = x_{p^{-1}(j)}, \qquad \log|\det| = 0
    ```
    """

    def __init__(self, permutation, name: str = "permutation"):
        parameters = dict(locals())
        self.permutation = np.asarray(permutation, dtype=np.int64)
        n = len(self.permutation)
        if not np.array_equal(np.sort(self.permutation), np.arange(n)):
            raise ValueError(f"`permutation` must be a permutation of 0..{n - 1}, but is {list(permutation)}.")
        self.inverse_permutation = np.argsort(self.permutation)
        super().__init__(n, parameters, name)

    def forward_and_log_det(self, u, context=None, training=False):
        return tf.gather(u, self.permutation, axis=-1), tf.zeros_like(u[..., 0])

    def inverse_and_log_det(self, x, context=None, training=False):
        return tf.gather(x, self.inverse_permutation, axis=-1), tf.zeros_like(x[..., 0])
