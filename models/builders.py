"""The builders of the built-in flow kinds: one small function per kind (`models.kinds` holds the
registry and each kind's options). A builder maps a `FlowConfig` to the flow's bijectors, data
side first, and its base density; `stack_layers` adds what every stacked flow shares (batch norm
after each layer, LU linear layers between layers)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from tfflows.models.base_densities import MixtureMADE, StandardNormal
from tfflows.models.bijectors import (
    ActNorm,
    Additive,
    Affine,
    AffineCoupling,
    BatchNormalization,
    Coupling,
    DiagonalScaling,
    FactorOut,
    FlowBijector,
    GatedInverseAutoregressiveFlow,
    HybridAutoregressive,
    ImageCoupling,
    InverseAutoregressiveFlow,
    InvertibleConv1x1,
    LearntPrior,
    LULinear,
    MaskedAutoregressiveFlow,
    PlanarFlow,
    RationalQuadraticSpline,
    Squeeze,
    channel_mask,
    checkerboard_mask,
    split_indices,
)
from tfflows.models.kinds import FlowConfig, TransformerOptions, builder
from tfflows.models.made import MADE

__all__ = ["stack_layers", "make_transformer"]


def stack_layers(config: FlowConfig, make_layer: Callable[[int], FlowBijector],
                 count: int | None = None) -> list[FlowBijector]:
    """`make_layer(k)` for k = 0..count-1 (default `num_layers`), data side first; each followed by
    the MAF paper's batch norm when `config.batch_norm`, and preceded (from the second on) by an
    `LULinear` when the kind's options say permutation="lu"."""
    layers: list[FlowBijector] = []
    lu = getattr(config.options, "permutation", None) == "lu"
    for k in range(config.num_layers if count is None else count):
        if lu and k > 0:
            layers.append(LULinear(config.event_dim, seed=config.seed + k, name=f"lu_linear_{k}", dtype=config.dtype))
        layers.append(make_layer(k))
        if config.batch_norm:
            layers.append(BatchNormalization(config.event_dim, config.batch_norm_epsilon, config.batch_norm_momentum,
                                             name=f"batch_norm_{k}"))
    return layers


def make_transformer(options: TransformerOptions):
    """The elementwise law the options name: `Affine` or `RationalQuadraticSpline`."""
    if options.transformer == "spline":
        return RationalQuadraticSpline(options.num_bins, options.tail_bound)
    return Affine(options.max_log_scale)


def _made_order(config: FlowConfig, flip: bool):
    """The first MADE's order, or (flip) its reverse; a "random" order gets a second permutation."""
    order = config.options.order
    if not flip:
        return order
    if order == "random":
        return list(np.random.default_rng(config.seed + 1).permutation(config.event_dim) + 1)
    return "reversed" if order == "natural" else "natural"


def _made(config: FlowConfig, k: int, num_params: int = 2) -> MADE:
    """Layer k's MADE: the configured order on even layers, reversed on odd ones (MAF paper)."""
    return MADE(config.event_dim, config.hidden_units, num_params=num_params, order=_made_order(config, k % 2 == 1),
                activation=config.activation, context_dim=config.context_dim, seed=config.seed, name=f"made_{k}",
                dtype=config.dtype)


def _base(config: FlowConfig, num_components: int, count: int):
    """A MADE MoG base (MAF MoG, MADE MoG) when C > 1, else the standard normal."""
    if num_components <= 1:
        return StandardNormal(config.event_dim)
    return MixtureMADE(config.event_dim, config.hidden_units, num_components,
                       order=_made_order(config, count % 2 == 1), name="base_mixture", dtype=config.dtype,
                       activation=config.activation, context_dim=config.context_dim)


@builder("made")
def build_made(config):
    bound = config.options.max_log_scale
    layers = stack_layers(config, lambda k: MaskedAutoregressiveFlow(_made(config, k), bound, name=f"maf_{k}"), count=1)
    return layers, StandardNormal(config.event_dim)


@builder("made_mog")
def build_made_mog(config):
    return [], _base(config, config.options.num_components, 0)


@builder("maf")
def build_maf(config):
    transformer = make_transformer(config.options)
    layers = stack_layers(config, lambda k: MaskedAutoregressiveFlow(
        _made(config, k, transformer.num_params), name=f"maf_{k}", transformer=transformer))
    return layers, _base(config, config.options.num_components, config.num_layers)


@builder("iaf")
def build_iaf(config):
    options = config.options
    transformer = make_transformer(options)

    def layer(k):
        made = _made(config, k, transformer.num_params)
        if options.gated:
            return GatedInverseAutoregressiveFlow(made, options.forget_bias, name=f"iaf_{k}")
        return InverseAutoregressiveFlow(made, name=f"iaf_{k}", transformer=transformer)

    return stack_layers(config, layer), StandardNormal(config.event_dim)


@builder("realnvp")
def build_realnvp(config):
    options, d = config.options, config.event_dim
    transformer = make_transformer(options)

    def layer(k):
        cond, trans = split_indices(d, "halves", flip=k % 2 == 1)
        if options.transformer == "affine":
            return AffineCoupling(d, config.hidden_units, cond, trans, config.context_dim, options.max_log_scale,
                                  name=f"coupling_{k}", dtype=config.dtype)
        return Coupling(d, config.hidden_units, cond, trans, transformer, config.context_dim, "relu",
                        name=f"coupling_{k}", dtype=config.dtype)

    return stack_layers(config, layer), StandardNormal(d)


@builder("haf")
def build_haf(config):
    options, d = config.options, config.event_dim
    transformer = make_transformer(options)

    def layer(k):  # parity split alternates every layer, MADE order every two layers
        made_idx, coupling_idx = split_indices(d, "parity", flip=k % 2 == 1)
        return HybridAutoregressive(
            d, made_idx, coupling_idx, config.hidden_units, options.coupling_hidden_units or config.hidden_units,
            made_order="natural" if (k // 2) % 2 == 0 else "reversed", activation=config.activation,
            context_dim=config.context_dim, name=f"haf_{k}", dtype=config.dtype, transformer=transformer)

    return stack_layers(config, layer), StandardNormal(d)


@builder("planar")
def build_planar(config):
    d, scale = config.event_dim, config.options.planar_init_scale
    layers = stack_layers(config, lambda k: PlanarFlow(d, scale, seed=config.seed + k, dtype=config.dtype,
                                                       name=f"planar_{k}"))
    return layers, StandardNormal(d)


@builder("nice")
def build_nice(config):
    d = config.event_dim

    def layer(k):
        cond, trans = split_indices(d, "parity", flip=k % 2 == 1)
        return Coupling(d, config.hidden_units, cond, trans, Additive(), config.context_dim, config.activation,
                        name=f"additive_coupling_{k}", dtype=config.dtype)

    layers = stack_layers(config, layer)
    layers.append(DiagonalScaling(d, name="scaling", dtype=config.dtype))  # base side: h = exp(s) * f(x)
    return layers, StandardNormal(d)


def _multiscale(config, make_level, learnt_prior=False):
    """The multi-scale skeleton of the image flows (Real NVP section 3.6): for each level,
    `make_level(shape, level, last)` -> (its layers, the image shape after them), then a factor-out
    of half the channels except after the last level, preceded by Glow's `LearntPrior` of the
    factored-out half when `learnt_prior`. The base is the standard normal on all D values: the
    factored-out ones and the last level's output."""
    options, d = config.options, config.event_dim
    layers, shape = [], options.hwc
    for level in range(options.levels):
        last = level == options.levels - 1
        level_layers, shape = make_level(shape, level, last)
        layers += level_layers
        if not last:
            if learnt_prior:
                layers.append(LearntPrior(d, shape, options.max_log_scale, name=f"learnt_prior_{level}",
                                          dtype=config.dtype))
            factor_out = FactorOut(d, shape, name=f"factor_out_{level}")
            layers.append(factor_out)
            shape = factor_out.kept_shape
    return layers, StandardNormal(d)


def _image_coupling(config, shape, mask, name, residual_blocks=0):
    options = config.options
    return ImageCoupling(config.event_dim, shape, mask, Affine(options.max_log_scale), options.hidden_channels,
                         residual_blocks, name=name, dtype=config.dtype)


@builder("glow")
def build_glow(config):
    d, steps = config.event_dim, config.options.steps_per_level

    def level_layers(shape, level, last):
        squeeze = Squeeze(d, shape, name=f"squeeze_{level}")
        shape, layers = squeeze.base_shape, [squeeze]
        for k in range(steps):  # one step of flow, data side first: actnorm, 1x1 convolution, coupling
            name = f"level_{level}_step_{k}"
            layers += [ActNorm(d, shape, name=f"{name}_actnorm", dtype=config.dtype),
                       InvertibleConv1x1(d, shape, seed=config.seed + level * steps + k, name=f"{name}_conv1x1",
                                         dtype=config.dtype),
                       _image_coupling(config, shape, channel_mask(shape), f"{name}_coupling")]
        return layers, shape

    return _multiscale(config, level_layers, config.options.learnt_prior)


@builder("realnvp_image")
def build_realnvp_image(config):
    d, n, blocks = config.event_dim, config.options.couplings_per_level, config.options.residual_blocks

    def level_layers(shape, level, last):
        layers = [_image_coupling(config, shape, checkerboard_mask(shape, flip=k % 2 == 1),
                                  f"level_{level}_checkerboard_{k}", blocks) for k in range(n + last)]
        if last:
            return layers, shape
        squeeze = Squeeze(d, shape, name=f"squeeze_{level}")
        shape = squeeze.base_shape
        layers.append(squeeze)
        layers += [_image_coupling(config, shape, channel_mask(shape, flip=k % 2 == 1), f"level_{level}_channel_{k}",
                                   blocks) for k in range(n)]
        return layers, shape

    return _multiscale(config, level_layers)
