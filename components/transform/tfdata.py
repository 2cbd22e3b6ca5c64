"""TensorFlow-side helpers for the training input pipeline: dequantisation and the graph.

Typical use (fresh noise every epoch, the transform graph applied after it)::

    transform = load_transform(transform_uri)
    gen = tf.random.Generator.from_seed(1)
    ds = ds.map(lambda x: dequantize(x, 256, gen))  # x: raw integer levels
    ds = ds.map(lambda x: transform(x)[0])            # z for the model
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple, Union

import tensorflow as tf
import tensorflow_transform as tft

from tfflows.components.transform.preprocessing import network_context, read_context_categories

__all__ = ["dequantize", "load_transform", "apply_transform"]

SeedOrGenerator = Union[int, Sequence[int], tf.Tensor, tf.random.Generator]


def _uniform(shape, seed_or_generator: SeedOrGenerator, salt: int = 0) -> tf.Tensor:
    if isinstance(seed_or_generator, tf.random.Generator):
        return seed_or_generator.uniform(shape, dtype=tf.float32)
    if isinstance(seed_or_generator, int):
        seed = tf.constant([seed_or_generator, salt], tf.int64)
    else:
        seed = tf.cast(seed_or_generator, tf.int64) + tf.constant([0, salt], tf.int64)
    return tf.random.stateless_uniform(shape, seed=seed, dtype=tf.float32)


def dequantize(x: tf.Tensor, num_levels: int, seed_or_generator: SeedOrGenerator, *,
               flip: bool = False, image_shape: Optional[Sequence[int]] = None) -> tf.Tensor:
    """Uniform dequantisation ``x + u``, ``u ~ U[0, 1)``, of integer levels in ``[0, L)``.

    The result lies in ``[0, num_levels)``, the raw space the transform graph expects. Draw it
    in the training input pipeline, fresh every epoch (not in the tf.Transform graph, not
    once at load time).

    Args:
      x: integer levels as float or int, shape ``[D]`` or ``[B, D]``.
      num_levels: L; ``x`` should hold levels in ``{0, ..., L - 1}`` (not checked here).
      seed_or_generator: a ``tf.random.Generator`` (stateful: new noise on every call, the
        way to get fresh noise per epoch), or a stateless seed: an int or a shape-[2] int
        tensor (same seed, same noise; e.g. one seed per element from ``Dataset.random``).
      flip: also flip each image horizontally with probability 1/2 (augmentation as in the
        paper's CIFAR-10 recipe, drawn per call); needs ``image_shape``.
      image_shape: ``[H, W]`` or ``[H, W, C]`` (channels last) of the flattened images.

    Returns:
      float32 tensor of the shape of ``x``.
    """
    if num_levels is None or int(num_levels) < 2:
        raise ValueError(f"`num_levels` must be an int >= 2, but is {num_levels!r}")
    x = tf.cast(x, tf.float32)
    single = x.shape.rank == 1
    batch = x[tf.newaxis] if single else x
    if flip:
        if image_shape is None or len(image_shape) not in (2, 3):
            raise ValueError(f"`image_shape` must be [H, W] or [H, W, C] when flip=True, "
                             f"but is {image_shape!r}")
        hwc = list(image_shape) + ([1] if len(image_shape) == 2 else [])
        images = tf.reshape(batch, [-1] + hwc)
        coin = _uniform(tf.shape(images)[:1], seed_or_generator, salt=1) < 0.5
        images = tf.where(coin[:, None, None, None], tf.reverse(images, axis=[2]), images)
        batch = tf.reshape(images, tf.shape(batch))
    batch = batch + _uniform(tf.shape(batch), seed_or_generator)
    return batch[0] if single else batch


def load_transform(transform_uri: str) -> Callable[..., Tuple[tf.Tensor, ...]]:
    """Loads a TransformGraph artifact; returns ``f(x [B, D]) -> (z [B, D], log_det [B])``, and for
    a graph of a conditional dataset ``f(x, context [B, C], context_categorical=[B, Sc]) -> (z,
    log_det, network context [B, C_net])`` (the raw numeric context standardised, then each
    categorical context column's one-hot code: `network_context`; such a graph needs the context
    with every x, the strings only where it has categorical context columns). A graph of a dataset
    with modelled categorical columns needs their strings too, ``categorical=[B, S]``, and returns
    their codes (int64 [B, S], the out-of-vocabulary bucket for an unseen category) last.

    Load once, outside ``Dataset.map``; the returned function works eagerly, in
    ``tf.function`` and in ``Dataset.map``.
    """
    layer = tft.TFTransformOutput(transform_uri).transform_features_layer()
    context_categories = read_context_categories(transform_uri)

    def transform(x: tf.Tensor, context: Optional[tf.Tensor] = None, categorical: Optional[tf.Tensor] = None,
                  context_categorical: Optional[tf.Tensor] = None) -> Tuple[tf.Tensor, ...]:
        inputs = {"x": tf.cast(x, tf.float32)}
        if context is not None:
            inputs["context"] = tf.cast(context, tf.float32)
        for key, strings in (("categorical", categorical), ("context_categorical", context_categorical)):
            if strings is not None:
                inputs[key] = tf.convert_to_tensor(strings, tf.string)
        out = layer(inputs)
        conditional = context is not None or context_categorical is not None
        return (out["z"], out["log_det"], *([network_context(out, context_categories)] if conditional else []),
                *([out["codes"]] if categorical is not None else []))

    # Keeps the layer (and its resources) alive with the function (a function attribute: setattr).
    setattr(transform, "layer", layer)
    return transform


def apply_transform(transform_uri: str, x) -> Tuple[tf.Tensor, tf.Tensor]:
    """One-off ``(z, log_det)`` of a float batch ``x`` [B, D] (loads the graph every call)."""
    return load_transform(transform_uri)(tf.convert_to_tensor(x, tf.float32))
