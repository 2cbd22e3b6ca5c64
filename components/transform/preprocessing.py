"""The tf.Transform ``preprocessing_fn``: raw ``x`` -> model ``z`` and its log-determinant.

Conventions: ``x`` is the raw feature (dequantised already for discrete data: the noise
``x + U[0, 1)`` is drawn per epoch in the training input pipeline by `dequantize`, never
here), ``z`` the model's feature, and ``log_det = log|det dz/dx|`` per row, so that

    log p_x(x) = log p_z(z) + log_det.

Logit (discrete data, ``L = num_levels``), with ``y = lam + (1 - 2 lam) x / L``:

    z_i = logit(y_i) = log y_i - log(1 - y_i),
    log_det = sum_i [log(1 - 2 lam) - log L - log y_i - log(1 - y_i)]
            = sum_i [log(1 - 2 lam) - log L - log(sigmoid(z_i) (1 - sigmoid(z_i)))],

the paper's eqs. 14-15 (appendix E.2) with 256 generalised to L. Standardisation
(continuous data): ``z = (x - mean) / std`` with mean and population variance from tft
analyzers, ``log_det = -sum_i log std_i``. Identity: ``z = x``, ``log_det = 0``.
"""

from __future__ import annotations

import math
from typing import Callable, Dict

import tensorflow as tf

__all__ = ["make_preprocessing_fn", "logit_transform"]


def logit_transform(x: tf.Tensor, num_levels: int, lam: float):
    """(z, log_det) of the logit transform of a float batch ``x`` [B, D] (float64 inside)."""
    x64 = tf.cast(x, tf.float64)
    y = lam + (1.0 - 2.0 * lam) * x64 / float(num_levels)
    log_y, log_1my = tf.math.log(y), tf.math.log1p(-y)
    z = log_y - log_1my
    per_dim = math.log(1.0 - 2.0 * lam) - math.log(num_levels) - log_y - log_1my
    return tf.cast(z, tf.float32), tf.cast(tf.reduce_sum(per_dim, axis=-1), tf.float32)


def make_preprocessing_fn(method: str, num_levels=None, lam: float = 1e-6,
                          min_std: float = 1e-12) -> Callable[[Dict[str, tf.Tensor]], Dict]:
    """The ``preprocessing_fn`` for one method: ``"logit"``, ``"standardize"``, ``"identity"``.

    For ``"standardize"`` a column whose std is ``<= min_std`` gets std = NaN, so that the
    executor's probe of the written graph finds it and refuses the dataset (`DataError`).
    """

    def preprocessing_fn(inputs: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        import tensorflow_transform as tft

        x = tf.cast(inputs["x"], tf.float32)
        if method == "logit":
            z, log_det = logit_transform(x, num_levels, lam)
        elif method == "standardize":
            x64 = tf.cast(x, tf.float64)
            mean = tft.mean(x64, reduce_instance_dims=False)
            var = tft.var(x64, reduce_instance_dims=False)
            std = tf.sqrt(var)
            std = tf.where(std > min_std, std, tf.constant(float("nan"), tf.float64))
            z = tf.cast((x64 - mean) / std, tf.float32)
            log_det = tf.cast(-tf.reduce_sum(tf.math.log(std)), tf.float32) * tf.ones_like(
                x[:, 0])
        elif method == "identity":
            z, log_det = tf.identity(x), tf.zeros_like(x[:, 0])
        else:
            raise ValueError(f"`method` must be 'logit', 'standardize' or 'identity', "
                             f"but is {method!r}")
        return {"z": z, "log_det": log_det}

    return preprocessing_fn
