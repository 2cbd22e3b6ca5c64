"""Image bijectors on flat events: the base class, squeeze and the multi-scale factor-out.

A flow's events are flat rows [batch, D] everywhere in tfflows (training, evaluation, the
SavedModel signatures). An image bijector reads the leading H·W·C entries of a row as an image
[H, W, C] (channels last, the row-major order of `np.reshape`) and passes the rest through
unchanged: after a factor-out (`FactorOut`) the later levels of a multi-scale flow act on the
leading half only, and the factored-out half rides along untouched to the base density.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from tfflows.models.bijectors.base import FlowBijector

__all__ = ["ImageBijector", "Squeeze", "FactorOut", "image_size"]


def image_size(shape: Sequence[int]) -> int:
    return int(np.prod(shape))


class ImageBijector(FlowBijector):
    """A bijector on flat rows [batch, D] that acts on an image in the leading entries.

    The leading `image_size(data_shape)` entries of a data-side row are reshaped to
    `data_shape` ([H, W, C]) and handed to `_to_base`; the base side of the same entries has
    shape `base_shape` (the same number of values: a squeeze or a factor-out changes the shape,
    not the size) and is handed to `_to_data`. Entries after them pass through both ways with
    log-determinant 0. Subclasses implement

    ```none
    _to_base(x [batch, *data_shape], training) -> (u [batch, *base_shape], log|det du/dx| [batch])
    _to_data(u [batch, *base_shape])           -> (x [batch, *data_shape], log|det dx/du| [batch])
    ```

    Image bijectors have no conditional version (`context` is not used).
    """

    def __init__(self, event_dim: int, data_shape: Sequence[int], base_shape: Sequence[int], parameters: dict,
                 name: str):
        self.data_shape = [int(s) for s in data_shape]
        self.base_shape = [int(s) for s in base_shape]
        self.size = image_size(self.data_shape)
        if image_size(self.base_shape) != self.size:
            raise ValueError(f"`base_shape` {self.base_shape} must hold as many values as `data_shape` "
                             f"{self.data_shape}.")
        if self.size > int(event_dim):
            raise ValueError(f"The image {self.data_shape} holds {self.size} values, more than `event_dim` "
                             f"{event_dim}.")
        super().__init__(event_dim, parameters, name)

    def _apply(self, z, shape, transform):
        image = tf.reshape(z[..., :self.size], [-1, *shape])
        out, log_det = transform(image)
        return tf.concat([tf.reshape(out, [-1, self.size]), z[..., self.size:]], axis=-1), log_det

    def inverse_and_log_det(self, x, context=None, training=False):
        return self._apply(x, self.data_shape, lambda image: self._to_base(image, training))

    def forward_and_log_det(self, u, context=None, training=False):
        return self._apply(u, self.base_shape, self._to_data)

    def _to_base(self, x, training):
        raise NotImplementedError

    def _to_data(self, u):
        raise NotImplementedError


def _zeros(batch_of):
    return tf.zeros_like(batch_of[:, 0, 0, 0])


class Squeeze(ImageBijector):
    r"""Space-to-depth: [H, W, C] -> [H/2, W/2, 4C] (Real NVP section 3.6, fig. 3; Glow section 3).

    #### Mathematical details

    Each 2x2 block of pixels becomes one pixel with its 4C values as channels
    (`tf.nn.space_to_depth`, block size 2); the forward direction is `tf.nn.depth_to_space`:

    ```math
    \begin{aligned}
    \text{inverse } (x \to u):&\quad u_{i,\, j,\, (2a + b) C + c} = x_{2i + a,\, 2j + b,\, c}, \qquad a, b \in \{0, 1\} \\
    \text{forward } (u \to x):&\quad \text{its inverse} \\
    \log|\det| &= 0 \qquad \text{(a permutation of the entries)}
    \end{aligned}
    ```

    It trades spatial size for channels, so the couplings that follow mix the pixels of each
    2x2 block, and it is how a multi-scale flow moves to the next level.
    """

    def __init__(self, event_dim: int, image_shape: Sequence[int], name: str = "squeeze"):
        parameters = dict(locals())
        h, w, c = (int(s) for s in image_shape)
        if h % 2 or w % 2:
            raise ValueError(f"`image_shape` {list(image_shape)}: Squeeze needs an even height and width.")
        super().__init__(event_dim, [h, w, c], [h // 2, w // 2, 4 * c], parameters, name)

    def _to_base(self, x, training):
        return tf.nn.space_to_depth(x, 2), _zeros(x)

    def _to_data(self, u):
        return tf.nn.depth_to_space(u, 2), _zeros(u)


class FactorOut(ImageBijector):
    """The multi-scale factor-out (Real NVP section 3.6, eqs. 15-16; Glow's "split").

    #### Mathematical details

    An image [H, W, C] (C even) is split along the channels into the half that continues
    through the next levels and the half that goes straight to the base density:

    ```none
    inverse (x -> u):  u = [flat(x[..., :C/2]), flat(x[..., C/2:])]    (then the untouched rest)
    forward (u -> x):  x[..., :C/2], x[..., C/2:] = the two halves of u, concatenated on channels
    log|det| = 0   (a permutation of the entries)
    ```

    After it, the next level's bijectors read the leading H·W·C/2 entries as an image
    [H, W, C/2] (`kept_shape`); the factored-out H·W·C/2 entries pass through every later layer
    and are modelled by the standard normal base, as Real NVP's z_i are (eq. 16). Glow instead
    gives the factored half a learnt Gaussian conditioned on the kept half: a `LearntPrior` just
    before the factor-out (glow's `learnt_prior` option).
    """

    def __init__(self, event_dim: int, image_shape: Sequence[int], name: str = "factor_out"):
        parameters = dict(locals())
        h, w, c = (int(s) for s in image_shape)
        if c % 2:
            raise ValueError(f"`image_shape` {list(image_shape)}: FactorOut needs an even number of channels.")
        self.kept_shape = [h, w, c // 2]
        super().__init__(event_dim, [h, w, c], [2, h, w, c // 2], parameters, name)

    def _to_base(self, x, training):
        half = self.kept_shape[-1]
        return tf.stack([x[..., :half], x[..., half:]], axis=1), _zeros(x)

    def _to_data(self, u):
        return tf.concat([u[:, 0], u[:, 1]], axis=-1), _zeros(u[:, 0])
