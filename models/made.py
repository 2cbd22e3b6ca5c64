r"""Masked dense layers and MADE, the Masked Autoencoder for Distribution Estimation.

MADE (Germain et al. 2015; thesis ch. 4) is a feed-forward network whose output for input
dimension i depends only on the inputs that precede i in an order. Its outputs parametrise the
one-dimensional conditionals \(p(x_i \mid x_{<i})\): a shift and a log-scale for the Gaussian MADE used by
MAF and IAF, or C mixture components for MADE MoG.

The parallel pass (`MADE.__call__`) evaluates every conditional at once. The sequential direction
(generating x_1, x_2, ... one after another, as MAF sampling and IAF density evaluation need) is
`MADE.autoregressive_loop`. With one hidden layer it adds the new input's contribution to the
hidden pre-activations (a rank-one update, O(H) per row) and evaluates only the outputs of the
current dimension, so the D steps cost \(O(D H)\) per row instead of the \(O(D^2 H)\) of re-running
the network D times. With deeper networks the first layer is still updated incrementally and the
deeper layers are re-evaluated each step (\(O(D H^2)\)).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import tensorflow as tf
import tf_keras

from tfflows.models.masks import input_order, made_masks

__all__ = ["MaskedDense", "MADE", "freeze_into"]


class MaskedDense(tf_keras.layers.Layer):
    r"""Dense layer whose kernel is multiplied by a constant 0/1 mask on every call.

    ```math
    y = \operatorname{activation}\big(x\, (W \odot M) + b\big), \qquad M \in \{0, 1\}^{n_\text{in} \times n_\text{out}}
    ```

    The mask is a constant, not a constraint, so no optimiser
    update (or manual assignment) can connect units the mask keeps apart.

    `bake_mask()` stores W * M in the kernel once and drops the product from later calls. It is
    for inference copies (`FlowModel.frozen`), which are not trainable: the product is a
    memory-bound pass over every weight, 60 % of a batch-1 log_prob at D=784.
    """

    def __init__(self, mask: np.ndarray, activation=None, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.mask_value = np.asarray(mask, dtype=np.float32)
        self.units = self.mask_value.shape[1]
        self.activation = tf_keras.activations.get(activation)
        self.kernel_initializer = tf_keras.initializers.get(kernel_initializer)
        self.mask_baked = False

    def build(self, input_shape):
        fan_in = self.mask_value.shape[0]
        if input_shape[-1] is not None and input_shape[-1] != fan_in:
            raise ValueError(f"MaskedDense expects {fan_in} input features, but got {input_shape[-1]}.")
        self.kernel = self.add_weight(
            name="kernel", shape=(fan_in, self.units), initializer=self.kernel_initializer
        )
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")
        super().build(input_shape)

    def masked_kernel(self) -> tf.Tensor:
        if self.mask_baked:
            return self.kernel
        # The mask becomes a constant of whichever graph (or eager context) calls this.
        return self.kernel * tf.constant(self.mask_value, dtype=self.kernel.dtype)

    def bake_mask(self) -> None:
        """Kernel := W * M, and later calls use it as is (inference copies only)."""
        self.kernel.assign(self.masked_kernel())
        self.mask_baked = True
        self.trainable = False

    def call(self, inputs):
        return self.activation(tf.matmul(inputs, self.masked_kernel()) + self.bias)


def freeze_into(copy, source):
    """`copy` (a built model of `source`'s configuration) made the inference copy of `source`: its
    weights, every `MaskedDense` mask multiplied into its kernel once (`bake_mask`), not trainable.
    Returns `copy`."""
    for target, value in zip(copy.variables, source.variables, strict=True):
        target.assign(value)
    for module in copy.submodules:
        if isinstance(module, MaskedDense):
            module.bake_mask()
    copy.trainable = False
    return copy


class MADE(tf_keras.layers.Layer):
    r"""MADE network: x [batch, D] (and an optional context [batch, C]) -> params [batch, D, P].

    Output `params[:, i, :]` depends only on inputs whose degree m(j) is lower than input i's (and
    on the context, which every first-layer hidden unit and every output sees), whatever the
    weights (Germain et al. 2015):

    ```math
    \frac{\partial\, \mathrm{params}_{i}}{\partial x_j} = 0 \quad \text{unless } m(j) < m(i).
    ```

    P is `num_params`: 2 for a Gaussian MADE (shift \(\mu_i\), log-scale \(\alpha_i\)), 3·C for a
    MADE with C mixture components.

    Args:
      event_dim: D.
      hidden_units: widths of the hidden layers, e.g. [512] or [1024, 1024]. Each must be >= D-1.
      num_params: P, the number of parameters of each one-dimensional conditional.
      order: "natural", "reversed", "random" or a permutation of 1..D (the input degrees).
      activation: hidden activation (the papers use relu).
      context_dim: size of the conditioning vector, or None for an unconditional MADE.
      seed: seed of a "random" order.
    """

    def __init__(
        self,
        event_dim: int,
        hidden_units: Sequence[int],
        num_params: int = 2,
        order="natural",
        activation="relu",
        context_dim: int | None = None,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.event_dim = int(event_dim)
        self.hidden_units = [int(h) for h in hidden_units]
        self.num_params = int(num_params)
        self.context_dim = context_dim
        self.degrees_in = input_order(self.event_dim, order, seed)
        hidden_masks, output_mask, self.degrees = made_masks(self.degrees_in, self.hidden_units)
        self.activation = tf_keras.activations.get(activation)
        self.hidden_layers = [
            MaskedDense(mask, activation=None, name=f"hidden_{i}", dtype=self.dtype) for i, mask in enumerate(hidden_masks)
        ]
        # Output columns are laid out [D, P] (dimension-major), each with its dimension's mask.
        self.output_layer = MaskedDense(
            np.repeat(output_mask, self.num_params, axis=1),
            kernel_initializer=tf_keras.initializers.VarianceScaling(0.01),
            name="output",
            dtype=self.dtype,
        )
        self.context_layer = self.context_output = None
        if context_dim:
            first = self.hidden_units[0] if self.hidden_units else self.event_dim * self.num_params
            self.context_layer = tf_keras.layers.Dense(first, use_bias=False, name="context", dtype=self.dtype)
            if self.hidden_units:
                # The first dimension in the order sees no hidden unit (its mask row is empty), so
                # without a direct context -> output path p(x_first | c) could not depend on c.
                self.context_output = tf_keras.layers.Dense(
                    self.event_dim * self.num_params, use_bias=False, name="context_output",
                    kernel_initializer=tf_keras.initializers.VarianceScaling(0.01), dtype=self.dtype)
        self._built_nets = False

    def _ensure_built(self):
        if self._built_nets:
            return
        width = self.event_dim
        for layer in self.hidden_layers:
            layer.build((None, width))
            width = layer.units
        self.output_layer.build((None, width))
        for layer in (self.context_layer, self.context_output):
            if layer is not None:
                layer.build((None, self.context_dim))
        self._built_nets = True

    def build(self, input_shape):
        self._ensure_built()
        super().build(input_shape)

    def _context_term(self, context):
        if self.context_layer is None:
            if context is not None:
                raise ValueError("This MADE was built without `context_dim` but a context was given.")
            return 0.0
        if context is None:
            raise ValueError(f"This MADE is conditional (context_dim={self.context_dim}); pass `context`.")
        return self.context_layer(context)

    def call(self, x, context=None):
        self._ensure_built()
        h = x
        for i, layer in enumerate(self.hidden_layers):
            pre = layer(h)
            if i == 0:
                pre = pre + self._context_term(context)
            h = self.activation(pre)
        out = self.output_layer(h)
        if not self.hidden_layers:
            out = out + self._context_term(context)
        elif self.context_output is not None:
            out = out + self.context_output(context)
        return tf.reshape(out, [-1, self.event_dim, self.num_params])

    def autoregressive_loop(
        self,
        step_fn: Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]],
        noise: tf.Tensor,
        context: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        r"""The sequential direction \(y_i = \mathrm{step\_fn}(\mathrm{params}_i(y_{<i}), \mathrm{noise}_i)\), in the MADE's order.

        Args:
          step_fn: maps (params [batch, P], noise_i [batch, ...]) to (y_i [batch], log_det_i [batch]).
          noise: [batch, D, ...]: whatever step i consumes (base noise u_i, the value x_i to invert,
            uniform and normal draws for a mixture).
          context: optional [batch, C].

        Returns:
          (y [batch, D], sum_i log_det_i [batch]).
        """
        self._ensure_built()
        dtype = noise.dtype
        perm = np.argsort(self.degrees_in)  # perm[k] is the dimension generated at step k
        inv_perm = np.argsort(perm)
        perm_tensor = tf.constant(perm)
        batch = tf.shape(noise)[0]
        noise_steps = tf.gather(tf.experimental.numpy.moveaxis(noise, 1, 0), perm)  # [D, batch, ...]
        # Step k reads one contiguous [H_L, P] block of the output kernel, laid out step-major once.
        out_kernel = tf.reshape(self.output_layer.masked_kernel(), [-1, self.event_dim, self.num_params])
        out_kernel = tf.transpose(tf.gather(out_kernel, perm, axis=1), [1, 0, 2])  # [D, H_L, P]
        out_bias = tf.gather(tf.reshape(self.output_layer.bias, [self.event_dim, self.num_params]), perm)

        if self.hidden_layers:
            first = self.hidden_layers[0]
            in_rows = tf.gather(first.masked_kernel(), perm)  # [D, H_1]: input i's fan-out
            accumulator = tf.zeros([batch, first.units], dtype) + first.bias + self._context_term(context)
        else:
            in_rows = tf.gather(self.output_layer.masked_kernel(), perm)  # [D, D*P]
            accumulator = tf.zeros([batch, self.event_dim * self.num_params], dtype) + self._context_term(
                context
            )
        if self.context_output is not None:  # [D, batch, P]: the context's direct term of each step
            context_steps = tf.gather(tf.transpose(
                tf.reshape(self.context_output(context), [-1, self.event_dim, self.num_params]), [1, 0, 2]), perm)

        def params_at(k, acc):
            if not self.hidden_layers:
                # acc holds x_<k @ W_out for every output; pick dimension perm[k].
                full = tf.reshape(acc, [-1, self.event_dim, self.num_params])
                return tf.gather(full, perm_tensor[k], axis=1) + out_bias[k]
            h = self.activation(acc)
            for layer in self.hidden_layers[1:]:
                h = self.activation(layer(h))
            out = tf.matmul(h, out_kernel[k]) + out_bias[k]
            return out if self.context_output is None else out + context_steps[k]

        values = tf.TensorArray(dtype, size=self.event_dim)
        log_det0 = tf.zeros([batch], dtype)

        def body(k, acc, log_det, values):
            y_k, ld_k = step_fn(params_at(k, acc), noise_steps[k])
            acc = acc + y_k[:, None] * in_rows[k][None, :]
            return k + 1, acc, log_det + ld_k, values.write(k, y_k)

        _, _, log_det, values = tf.while_loop(
            lambda k, *_: k < self.event_dim,
            body,
            (tf.constant(0), accumulator, log_det0, values),
            maximum_iterations=self.event_dim,
        )
        y = tf.gather(tf.transpose(values.stack()), inv_perm, axis=1)
        return y, log_det
