"""The four unnormalised 2-D test densities of Rezende & Mohamed (2015), thesis table 3.1.

Each `U1..U4(z)` takes z [batch, 2] and returns the unnormalised log-density log p~(z) = -U(z)
(the thesis tabulates the potentials U; `potential(name, z)` returns U itself):

```none
w1(z) = sin(2 pi z1 / 4),  w2(z) = 3 exp(-((z1 - 1) / 0.6)² / 2),  w3(z) = 3 sigmoid((z1 - 1) / 0.3)
U1(z) = ((|z| - 2) / 0.4)² / 2 - log(exp(-((z1 - 2) / 0.6)² / 2) + exp(-((z1 + 2) / 0.6)² / 2))
U2(z) = ((z2 - w1(z)) / 0.4)² / 2
U3(z) = -log(exp(-((z2 - w1) / 0.35)² / 2) + exp(-((z2 - w1 + w2) / 0.35)² / 2))
U4(z) = -log(exp(-((z2 - w1) / 0.4)² / 2) + exp(-((z2 - w1 + w3) / 0.35)² / 2))
```

(The thesis' text extraction drops the square inside w2; the original paper has it.)
Only U1 is normalisable: U2-U4 do not depend on z1 outside a bounded band, so their mass along z1
is infinite; the papers (and plots) use them on [-4, 4]². Reverse KL to them has no minimum, only
the fits after a fixed number of steps are comparable.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

__all__ = ["U1", "U2", "U3", "U4", "TARGETS", "potential", "density_grid"]


def _w1(z):
    return tf.sin(2.0 * math.pi * z[:, 0] / 4.0)


def _w2(z):
    return 3.0 * tf.exp(-0.5 * tf.square((z[:, 0] - 1.0) / 0.6))


def _w3(z):
    return 3.0 * tf.sigmoid((z[:, 0] - 1.0) / 0.3)


def _log_sum_of_two(a, b):
    return tf.reduce_logsumexp(tf.stack([a, b], axis=-1), axis=-1)


def U1(z):
    """log p~ = -U1: a ring of radius 2 with two modes at z1 = ±2."""
    z = tf.convert_to_tensor(z)
    radius = tf.sqrt(tf.reduce_sum(tf.square(z), axis=-1))
    ring = 0.5 * tf.square((radius - 2.0) / 0.4)
    modes = _log_sum_of_two(-0.5 * tf.square((z[:, 0] - 2.0) / 0.6), -0.5 * tf.square((z[:, 0] + 2.0) / 0.6))
    return -(ring - modes)


def U2(z):
    """log p~ = -U2: a sine-shaped ridge."""
    z = tf.convert_to_tensor(z)
    return -0.5 * tf.square((z[:, 1] - _w1(z)) / 0.4)


def U3(z):
    """log p~ = -U3: a ridge that splits in two around z1 = 1."""
    z = tf.convert_to_tensor(z)
    d = z[:, 1] - _w1(z)
    return _log_sum_of_two(-0.5 * tf.square(d / 0.35), -0.5 * tf.square((d + _w2(z)) / 0.35))


def U4(z):
    """log p~ = -U4: two ridges, shifted by a sigmoid step."""
    z = tf.convert_to_tensor(z)
    d = z[:, 1] - _w1(z)
    return _log_sum_of_two(-0.5 * tf.square(d / 0.4), -0.5 * tf.square((d + _w3(z)) / 0.35))


TARGETS = {"U1": U1, "U2": U2, "U3": U3, "U4": U4}


def potential(name: str, z):
    """The potential U(z) = -log p~(z) of target `name` ("U1".."U4")."""
    if name not in TARGETS:
        raise ValueError(f"`name` must be one of {sorted(TARGETS)}, but is {name!r}.")
    return -TARGETS[name](z)


def density_grid(log_density_fn, limits=(-4.0, 4.0), n: int = 200, dtype="float32"):
    """Evaluates exp(log_density_fn) on an n x n grid: (z1 [n, n], z2 [n, n], density [n, n]).

    The density is normalised to sum to 1 over the grid (for plotting side by side).
    """
    lo, hi = limits
    z1, z2 = np.meshgrid(np.linspace(lo, hi, n), np.linspace(lo, hi, n))
    points = tf.constant(np.stack([z1.ravel(), z2.ravel()], axis=1), dtype=dtype)
    log_p = np.asarray(log_density_fn(points), dtype=np.float64).reshape(n, n)
    p = np.exp(log_p - np.max(log_p[np.isfinite(log_p)]))
    p[~np.isfinite(p)] = 0.0
    return z1, z2, p / p.sum()
