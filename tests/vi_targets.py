"""User-supplied targets for the reverse-KL tests (imported as "tests.vi_targets:<name>")."""

import math

import tensorflow as tf

SHIFT = (0.3, -0.2)


def shifted_gaussian(z):
    """log N(z; SHIFT, I) in 2-D: normalised, so log Z = 0 and KL(N(0, I) || p) = |SHIFT|² / 2."""
    return -0.5 * tf.reduce_sum(tf.square(z - tf.constant(SHIFT, z.dtype)), axis=-1) - math.log(2 * math.pi)


NOT_A_FUNCTION = 3


def py_function_gaussian(z):
    """`shifted_gaussian` run through tf.py_function: differentiable, but XLA cannot compile it."""
    log_p = tf.py_function(shifted_gaussian, [z], z.dtype)
    log_p.set_shape(z.shape[:-1])
    return log_p
