"""Coupling layers on images: binary masks (checkerboard, channel-wise) and convolutional conditioners."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf
import tf_keras

from tfflows.models.bijectors.image import ImageBijector
from tfflows.models.bijectors.transformers import Affine

__all__ = ["ConvNet", "ImageCoupling", "LearntPrior", "checkerboard_mask", "channel_mask"]


def checkerboard_mask(image_shape: Sequence[int], flip: bool = False) -> np.ndarray:
    """Real NVP's spatial checkerboard (section 3.4, fig. 3 left): True (kept) where i + j is even
    (odd when `flip`), the same for every channel. Boolean [H, W, C]."""
    h, w, c = image_shape
    board = (np.arange(h)[:, None] + np.arange(w)[None, :]) % 2 == (1 if flip else 0)
    return np.repeat(board[:, :, None], c, axis=2)


def channel_mask(image_shape: Sequence[int], flip: bool = False) -> np.ndarray:
    """The channel-wise mask (Real NVP section 3.4, fig. 3 right; Glow's split of the channels):
    True (kept) on the second half of the channels (the first half when `flip`). Boolean [H, W, C]."""
    h, w, c = image_shape
    if c < 2:
        raise ValueError(f"`image_shape` {list(image_shape)}: a channel-wise mask needs at least 2 channels.")
    kept = np.arange(c) < c // 2 if flip else np.arange(c) >= c // 2
    return np.broadcast_to(kept, (h, w, c)).copy()


class ConvNet(tf_keras.layers.Layer):
    """The couplings' conditioner: a small convolutional network, same spatial size in and out.

    ```none
    h = relu(conv3x3(x))                                  hidden_channels
    h = relu(h + conv3x3(relu(conv3x3(h))))               residual_blocks times (Real NVP's ResNet)
    y = conv3x3_zero(relu(conv1x1(h)))                    output_channels, zero-initialised
    ```

    With no residual block this is Glow's NN() (section 3.3: 3x3, 1x1, zero-initialised 3x3
    convolutions, ReLU). The last convolution starts at zero (kernel and bias), so a fresh
    coupling is exactly the identity, as Glow initialises it. With `hidden_channels` None only
    that last convolution is left, y = conv3x3_zero(x): the conditioner of Glow's
    learnt prior (`LearntPrior`).
    """

    def __init__(self, hidden_channels: int | None, output_channels: int, residual_blocks: int = 0, **kwargs):
        super().__init__(**kwargs)
        if hidden_channels is None and residual_blocks:
            raise ValueError(f"`residual_blocks` is {residual_blocks}, but a ConvNet with `hidden_channels` None "
                             f"has no hidden layers: pass residual_blocks=0.")

        def conv(channels, size, name, activation=None, zero=False):
            start = "zeros" if zero else "glorot_uniform"
            return tf_keras.layers.Conv2D(int(channels), size, padding="same", activation=activation, name=name,
                                          kernel_initializer=start, dtype=self.dtype)

        self.hidden = hidden_channels is not None
        if self.hidden:
            self.first = conv(hidden_channels, 3, "in", "relu")
            self.blocks = [(conv(hidden_channels, 3, f"res_{i}_a", "relu"), conv(hidden_channels, 3, f"res_{i}_b"))
                           for i in range(int(residual_blocks))]
            self.middle = conv(hidden_channels, 1, "middle", "relu")
        self.last = conv(output_channels, 3, "out", zero=True)

    def call(self, x):
        if not self.hidden:
            return self.last(x)
        h = self.first(x)
        for inner, outer in self.blocks:
            h = tf.nn.relu(h + outer(inner(h)))
        return self.last(self.middle(h))


class ImageCoupling(ImageBijector):
    r"""A masked coupling layer on images (Real NVP sections 3.3-3.4, eq. 9; Glow section 3.3).

    #### Mathematical details

    A constant binary mask b [H, W, C] (`checkerboard_mask` or `channel_mask`) marks the kept
    entries; a convolutional network (`ConvNet`) of the kept entries, \(b \odot x\), gives the
    transformer's parameters \(\theta\) (P per entry) and the other entries are transformed:

    ```math
    \begin{aligned}
    \text{inverse } (x \to u):&\quad u = b \odot x + (1 - b) \odot \tau\big(x; \theta(b \odot x)\big)
      && \text{(`transformer.to_base`)} \\
    \text{forward } (u \to x):&\quad x = b \odot u + (1 - b) \odot \tau^{-1}\big(u; \theta(b \odot u)\big)
      && \text{(`transformer.to_data`)} \\
    \log\left|\det \frac{\partial u}{\partial x}\right| &= \sum_{k:\, b_k = 0} \log \tau'(x_k)
    \end{aligned}
    ```

    \(b \odot u = b \odot x\), so both directions are one parallel pass and the Jacobian is block
    triangular: each kept entry's row is the identity's, each transformed entry depends on itself
    and on kept entries only. With the `Affine` transformer, \(\tau(x) = (x - t)\, e^{-\alpha}\) is
    Real NVP's affine coupling (eq. 9, with \(\alpha = B \tanh(a / B)\) bounded as Real NVP bounds
    its scale with a tanh) and Glow's (section 3.3, which bounds its scale with a sigmoid instead).
    """

    def __init__(self, event_dim: int, image_shape: Sequence[int], mask: np.ndarray, transformer,
                 hidden_channels: int | None, residual_blocks: int = 0, name: str = "image_coupling", dtype="float32"):
        parameters = dict(locals())
        super().__init__(event_dim, image_shape, image_shape, parameters, name)
        self.kept = np.asarray(mask, dtype=bool)
        if list(self.kept.shape) != self.data_shape:
            raise ValueError(f"`mask` has shape {list(self.kept.shape)}, but `image_shape` is {self.data_shape}.")
        if self.kept.all():
            raise ValueError("`mask` keeps every entry, so the coupling would transform nothing.")
        self.transformer = transformer
        self.net = ConvNet(hidden_channels, self.data_shape[-1] * transformer.num_params, residual_blocks,
                           name=f"{name}_net", dtype=dtype)

    def _params(self, z):
        kept = tf.constant(self.kept)
        params = self.net(tf.where(kept, z, tf.zeros_like(z)))
        return tf.reshape(params, [-1, *self.data_shape, self.transformer.num_params])

    def _couple(self, z, direction):
        kept = tf.constant(self.kept)
        out, log_derivative = direction(self._params(z), z)
        log_det = tf.reduce_sum(tf.where(kept, tf.zeros_like(log_derivative), log_derivative), axis=[1, 2, 3])
        return tf.where(kept, z, out), log_det

    def _to_base(self, x, training):
        return self._couple(x, self.transformer.to_base)

    def _to_data(self, u):
        return self._couple(u, self.transformer.to_data)


class LearntPrior(ImageCoupling):
    r"""Glow's learnt prior of the factored-out channels (Kingma & Dhariwal 2018, section 3 and
    fig. 2b's "split"; `split2d` in the openai/glow code), placed just before a `FactorOut`.

    #### Mathematical details

    An image x [H, W, C] is split as `FactorOut` splits it: the kept half \(x_1\) = x[..., :C/2]
    goes on to the next level, the factored-out half \(x_2\) = x[..., C/2:] to the base. Glow
    models \(x_2 \mid x_1 \sim \mathcal{N}(\mu(x_1), \operatorname{diag} e^{2\sigma(x_1)})\), with
    \((\mu, \sigma)\) = one zero-initialised 3x3 convolution of \(x_1\) (`ConvNet` with
    `hidden_channels` None). That density is an affine coupling of \(x_2\) given \(x_1\) followed
    by the standard normal, so this layer is an `ImageCoupling` with the `Affine` transformer:

    ```math
    \begin{aligned}
    \text{inverse } (x \to u):&\quad u_1 = x_1, \quad u_2 = (x_2 - \mu(x_1))\, e^{-\sigma(x_1)} \\
    \text{forward } (u \to x):&\quad x_1 = u_1, \quad x_2 = u_2\, e^{\sigma(x_1)} + \mu(x_1) \\
    \log\left|\det \frac{\partial u}{\partial x}\right| &= -\sum \sigma(x_1), \qquad
      \log \mathcal{N}(u_2; 0, I) - \sum \sigma(x_1) = \log \mathcal{N}\big(x_2; \mu(x_1), e^{2\sigma(x_1)}\big)
    \end{aligned}
    ```

    Both directions are one parallel pass; the Jacobian is block lower-triangular (\(u_1\) does not
    depend on \(x_2\)); a fresh layer is the identity (the convolution starts at zero), i.e. the
    standard normal prior of Real NVP's factor-out. \(\sigma = B \tanh(a / B)\) is bounded as the
    couplings' log-scales are (`max_log_scale`; None leaves it unbounded, as Glow does).
    """

    def __init__(self, event_dim: int, image_shape: Sequence[int], max_log_scale: float | None = None,
                 name: str = "learnt_prior", dtype="float32"):
        # channel_mask(flip=True) keeps x[..., :C/2], the half FactorOut keeps for the next level
        super().__init__(event_dim, image_shape, channel_mask(image_shape, flip=True), Affine(max_log_scale),
                         hidden_channels=None, name=name, dtype=dtype)
