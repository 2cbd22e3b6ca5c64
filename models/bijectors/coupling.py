"""Coupling layers on index sets (Real NVP's affine coupling, any-transformer couplings) and their
conditioner networks."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf
import tf_keras

from tfflows.models.bijectors.base import FlowBijector
from tfflows.models.bijectors.transformers import Affine

__all__ = ["ConditionerNet", "AffineCoupling", "Coupling", "split_indices"]


def split_indices(event_dim: int, kind: str, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """(conditioning, transformed) index sets of a coupling split.

    kind "halves": first floor(D/2) and the rest (Real NVP, MAF paper); "parity": even and odd
    positions (HAF, thesis 6.2.3). `flip` swaps the two roles, as alternate layers do.
    """
    if event_dim < 2:
        raise ValueError(f"Coupling layers need event_dim >= 2, but event_dim is {event_dim}.")
    idx = np.arange(event_dim)
    if kind == "halves":
        first, second = idx[: event_dim // 2], idx[event_dim // 2 :]
    elif kind == "parity":
        first, second = idx[0::2], idx[1::2]
    else:
        raise ValueError(f"`kind` must be 'halves' or 'parity', but is {kind!r}.")
    return (second, first) if flip else (first, second)


class ConditionerNet(tf_keras.layers.Layer):
    """A fully connected network y = W_out·act(...act(W_1·[x, context])...) + b_out.

    The output layer starts small, so a fresh coupling layer is close to the identity.
    """

    def __init__(self, hidden_units: Sequence[int], output_dim: int, activation, **kwargs):
        super().__init__(**kwargs)
        self.hidden = [
            tf_keras.layers.Dense(int(h), activation=activation, name=f"hidden_{i}", dtype=self.dtype)
            for i, h in enumerate(hidden_units)
        ]
        self.out = tf_keras.layers.Dense(
            int(output_dim), kernel_initializer=tf_keras.initializers.VarianceScaling(0.01), name="output",
            dtype=self.dtype,
        )

    def call(self, x, context=None):
        h = x if context is None else tf.concat([x, context], axis=-1)
        for layer in self.hidden:
            h = layer(h)
        return self.out(h)


class _SplitCoupling(FlowBijector):
    """What the coupling layers on index sets share: the split into a kept part a and a transformed
    part b, the transformer applied to b, and both one-pass directions. Subclasses give the
    transformer's parameters of b from a (and the context): `_params(part_a, context)` ->
    [batch, len(transformed), transformer.num_params]."""

    def __init__(self, event_dim: int, conditioning: np.ndarray, transformed: np.ndarray, transformer,
                 context_dim: int | None, parameters: dict, name: str):
        self.transformer = transformer
        self.conditioning = np.asarray(conditioning)
        self.transformed = np.asarray(transformed)
        self._merge = np.argsort(np.concatenate([self.conditioning, self.transformed]))
        self.context_dim = context_dim
        super().__init__(event_dim, parameters, name)

    def _params(self, part_a, context):
        raise NotImplementedError

    def _merged(self, part_a, part_b):
        return tf.gather(tf.concat([part_a, part_b], axis=-1), self._merge, axis=-1)

    def forward_and_log_det(self, u, context=None, training=False):
        u_a, u_b = tf.gather(u, self.conditioning, axis=-1), tf.gather(u, self.transformed, axis=-1)
        x_b, log_det = self.transformer.to_data(self._params(u_a, context), u_b)
        return self._merged(u_a, x_b), tf.reduce_sum(log_det, axis=-1)

    def inverse_and_log_det(self, x, context=None, training=False):
        x_a, x_b = tf.gather(x, self.conditioning, axis=-1), tf.gather(x, self.transformed, axis=-1)
        u_b, log_det = self.transformer.to_base(self._params(x_a, context), x_b)
        return self._merged(x_a, u_b), tf.reduce_sum(log_det, axis=-1)


class AffineCoupling(_SplitCoupling):
    r"""Real NVP affine coupling layer (Dinh et al. 2017; thesis eq. 6.1).

    #### Mathematical details

    The input splits into a conditioning part a (kept) and a transformed part b:

    ```math
    \begin{aligned}
    \text{forward } (u \to x):&\quad x_a = u_a, \quad x_b = u_b \odot \exp\big(s(u_a)\big) + t(u_a) \\
    \text{inverse } (x \to u):&\quad u_a = x_a, \quad u_b = \big(x_b - t(x_a)\big) \odot \exp\big(-s(x_a)\big) \\
    \log\left|\det \frac{\partial x}{\partial u}\right| &= \sum_j s(x_a)_j
    \end{aligned}
    ```

    Both directions are one parallel pass (the `Affine` transformer with parameters (t, s)). As in
    the MAF paper's Real NVP, the scale network s has tanh hidden units and the shift network t
    has relu hidden units. s is bounded by `max_log_scale` (\(B \tanh(\cdot / B)\)) unless it is None.
    """

    def __init__(self, event_dim: int, hidden_units: Sequence[int], conditioning: np.ndarray, transformed: np.ndarray,
                 context_dim: int | None = None, max_log_scale: float | None = None, name: str = "coupling",
                 dtype="float32"):
        parameters = dict(locals())
        self.max_log_scale = max_log_scale
        super().__init__(event_dim, conditioning, transformed, Affine(max_log_scale), context_dim, parameters, name)
        n_out = len(self.transformed)
        self.scale_net = ConditionerNet(hidden_units, n_out, "tanh", name=f"{name}_scale", dtype=dtype)
        self.shift_net = ConditionerNet(hidden_units, n_out, "relu", name=f"{name}_shift", dtype=dtype)

    def _params(self, part_a, context):
        return tf.stack([self.shift_net(part_a, context), self.scale_net(part_a, context)], axis=-1)


class Coupling(_SplitCoupling):
    r"""A coupling layer with any elementwise transformer (NICE's additive law, a spline, ...).

    #### Mathematical details

    The input splits into a kept part a and a transformed part b; one network \(\theta\) of a (and
    of the context) gives the transformer's P parameters for every element of b:

    ```math
    \begin{aligned}
    \text{forward } (u \to x):&\quad x_a = u_a, \quad x_{b,j} = \tau^{-1}\big(u_{b,j}; \theta_j(u_a)\big)
      && \text{(`transformer.to_data`)} \\
    \text{inverse } (x \to u):&\quad u_a = x_a, \quad u_{b,j} = \tau\big(x_{b,j}; \theta_j(x_a)\big)
      && \text{(`transformer.to_base`)} \\
    \log\left|\det \frac{\partial u}{\partial x}\right| &= \sum_j \log \tau'(x_{b,j})
    \end{aligned}
    ```

    With `Additive` this is NICE's additive coupling (Dinh et al. 2015, eq. 5: \(x_b = u_b + m(u_a)\),
    \(\log|\det| = 0\)); with `RationalQuadraticSpline` the coupling neural spline flow (Durkan et al.
    2019, RQ-NSF (C)). Both directions are one parallel pass. The network's output layer starts
    near zero, so a fresh layer is (close to) the identity.
    """

    def __init__(self, event_dim: int, hidden_units: Sequence[int], conditioning: np.ndarray, transformed: np.ndarray,
                 transformer, context_dim: int | None = None, activation="relu", name: str = "coupling",
                 dtype="float32"):
        parameters = dict(locals())
        super().__init__(event_dim, conditioning, transformed, transformer, context_dim, parameters, name)
        self._shape = [len(self.transformed), transformer.num_params]
        self.net = ConditionerNet(hidden_units, int(np.prod(self._shape)), activation, name=f"{name}_net", dtype=dtype)

    def _params(self, part_a, context):
        return tf.reshape(self.net(part_a, context), [-1, *self._shape])
