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
is infinite; the papers (and plots) use them on [-4, 4]². `load_target(name, box=4)` multiplies a
target by the soft box exp(-sum_i (z_i / box)^8 / 2) (flat inside the box: e^-0.5 at its edge,
e^-128 at twice its width), which makes every target normalisable, so KL(q || p), log Z and the
effective sample size are defined. A user's own target is given as "package.module:function".
"""

from __future__ import annotations

import importlib
import math
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

__all__ = ["U1", "U2", "U3", "U4", "TARGETS", "potential", "box_envelope", "load_target", "density_grid"]


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


def box_envelope(z, half_width: float):
    """log of the soft box: -sum_i (z_i / half_width)^8 / 2 (0 at the centre, -D/2 at the corners)."""
    return -0.5 * tf.reduce_sum((tf.convert_to_tensor(z) / half_width) ** 8, axis=-1)


def load_target(spec: str, event_dim: Optional[int] = None, box: Optional[float] = 4.0) -> tuple[Callable, int]:
    """(log p~, D) of a target: "U1".."U4" (D = 2), or "package.module:function" (D = event_dim),
    a function taking z [n, D] (float32) and returning log p~(z) [n]; with `box`, times the soft box.

    Raises ValueError with the fix when the name is unknown, the module or function cannot be
    imported, or D is missing or contradicts a named target's.
    """
    if spec in TARGETS:
        if event_dim not in (None, 2):
            raise ValueError(f"target {spec!r} is 2-D, but event_dim is {event_dim}; leave target_dim unset")
        fn, dim = TARGETS[spec], 2
    elif isinstance(spec, str) and ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as error:
            raise ValueError(f"target {spec!r}: cannot import it ({error}); give 'package.module:function' "
                             "on the Python path") from error
        if not callable(fn):
            raise ValueError(f"target {spec!r} is not a function")
        if event_dim is None or int(event_dim) < 1:
            raise ValueError(f"target {spec!r}: its dimension is unknown; set target_dim")
        dim = int(event_dim)
    else:
        raise ValueError(f"target must be one of {sorted(TARGETS)} or 'package.module:function', but is {spec!r}")
    if box is None:
        return fn, dim
    if not box > 0:
        raise ValueError(f"the soft box's half-width must be > 0 or None, but is {box!r}")

    def boxed(z):
        z = tf.convert_to_tensor(z)
        return tf.cast(fn(z), z.dtype) + box_envelope(z, box)

    return boxed, dim


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
