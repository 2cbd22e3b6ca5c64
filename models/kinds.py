"""The flow kinds: a registry of kinds, each with its own options; importable without TensorFlow.

`tfflows run` validates a whole configuration before TensorFlow is imported (a typo is reported in
well under 2 s instead of ~15 s), so what `TrainConfig` is checked against lives here, in a module
that imports only the standard library: the kind names (`FLOW_KINDS`), each kind's options class,
the options every kind shares (`FlowConfig`) and `flow_option_names(kind)`. The builders, which
need TensorFlow, are in `models.builders`, one small function per kind attached with `@builder`.

Adding a kind is one options dataclass and one builder:

    @dataclasses.dataclass
    class MyOptions:
        width: float = 1.0

    def build_mine(config):          # config: FlowConfig, config.options: MyOptions
        layers = stack_layers(config, lambda k: MyBijector(config.event_dim, config.options.width))
        return layers, StandardNormal(config.event_dim)

    register_kind("mine", MyOptions, batch_norm=False, build=build_mine)

after which `build_flow("mine", D, width=2.0)` works and `FLOW_KINDS` lists "mine".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence as SequenceABC
from typing import Any, Callable, Optional, Sequence

__all__ = [
    "FLOW_KINDS", "FlowConfig", "FlowKind", "register_kind", "builder", "get_kind", "flow_option_names",
    "check_own_options", "kind_options", "narrowest_hidden_width", "TRANSFORMERS", "PERMUTATIONS",
    "TransformerOptions", "MADEOptions", "MADEMoGOptions",
    "MAFOptions", "IAFOptions", "RealNVPOptions", "HAFOptions", "PlanarOptions", "NICEOptions", "ImageOptions",
    "GlowOptions", "RealNVPImageOptions", "data_options", "OptionError", "VAE_LIKELIHOODS",
]


class OptionError(ValueError):
    """A bad value of a kind's own option; ``field`` is the option the message names in backquotes
    (the pipeline's configuration writes its path there: ``train.flow_options.order``)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field

    def __reduce__(self):
        return (type(self), (str(self), self.field))

# `models.vae.IAFVAE`'s likelihoods: here, so that the vae objective checks its options without TensorFlow.
VAE_LIKELIHOODS = ("bernoulli", "gaussian", "logistic")
TRANSFORMERS = ("affine", "spline")
PERMUTATIONS = (None, "lu")


@dataclasses.dataclass
class FlowKind:
    """A registered kind: its options class, its builder and what the shared options default to.

    Attributes:
      name: the `kind` string.
      options: the dataclass of this kind's own options.
      batch_norm: the default of `FlowConfig.batch_norm` for this kind.
      min_event_dim: the smallest D the kind can split or model.
      needs_hidden_units: refuse an empty `hidden_units`.
      sequential_density: the density direction is a loop (compiled with XLA when eager).
      needs_image_shape: the kind reads its events as images: its options (an `ImageOptions`) must
        hold the data's `image_shape` (`data_options` gives it from the data's metadata).
      made_inputs: D -> how many inputs the kind's widest MADE takes (None: no MADE); a MADE on d
        inputs needs hidden layers of d - 1 units or more (`narrowest_hidden_width`).
      conditional: the kind takes a context (`FlowConfig.context_dim`): its MADEs or coupling
        networks see it. False: `context_dim` is refused (a planar layer and the image flows'
        convolutional networks have no input for it).
      build: config -> (bijectors from the data side to the base side, base density); the
        built-in kinds get theirs from `models.builders`.
    """

    name: str
    options: type
    batch_norm: bool
    min_event_dim: int = 1
    needs_hidden_units: bool = False
    sequential_density: bool = False
    needs_image_shape: bool = False
    build: Optional[Callable[["FlowConfig"], tuple]] = None
    made_inputs: Optional[Callable[[int], int]] = None
    conditional: bool = True


_REGISTRY: dict[str, FlowKind] = {}


def register_kind(name: str, options: type, *, batch_norm: bool, min_event_dim: int = 1,
                  needs_hidden_units: bool = False, sequential_density: bool = False,
                  needs_image_shape: bool = False, build: Callable | None = None,
                  made_inputs: Callable[[int], int] | None = None, conditional: bool = True) -> FlowKind:
    """Registers (or replaces) kind `name` with its options dataclass and, optionally, its builder."""
    if not dataclasses.is_dataclass(options):
        raise TypeError(f"the options of kind {name!r} must be a dataclass, but are {options!r}.")
    _REGISTRY[name] = FlowKind(name, options, batch_norm, min_event_dim, needs_hidden_units, sequential_density,
                               needs_image_shape, build, made_inputs, conditional)
    return _REGISTRY[name]


def narrowest_hidden_width(kind: str, event_dim: int) -> int:
    """The fewest units a hidden layer of `kind` may have for data of `event_dim` features (0: any).
    A MADE on d > 1 inputs needs d - 1 (one unit per conditional, `masks.hidden_degrees`); known
    from the data's width alone, so a run can refuse a too narrow network before it reads the data."""
    inputs = get_kind(kind).made_inputs
    d = inputs(event_dim) if inputs else 1
    return d - 1 if d > 1 else 0


def builder(name: str):
    """Decorator: `build(config) -> (layers, base)` becomes the builder of registered kind `name`."""

    def decorator(build):
        get_kind(name).build = build
        return build

    return decorator


class _KindNames(SequenceABC):
    """The registered kind names, read live (a kind registered later is listed too)."""

    def __getitem__(self, index):
        return tuple(_REGISTRY)[index]

    def __len__(self):
        return len(_REGISTRY)

    def __repr__(self):
        return repr(tuple(_REGISTRY))


FLOW_KINDS: Sequence[str] = _KindNames()


def get_kind(name: str) -> FlowKind:
    if name not in _REGISTRY:
        raise ValueError(f"`kind` must be one of {FLOW_KINDS}, but is {name!r}.")
    return _REGISTRY[name]


# ----- the options every kind shares ---------------------------------------------------------


@dataclasses.dataclass
class FlowConfig:
    """The options every flow kind shares, and the kind's own options.

    `build_flow(kind, event_dim, **options)` takes both as keywords: the fields below, and the
    fields of the kind's options class (`MAFOptions`, `IAFOptions`, ... below), which it
    collects into `options`. `to_dict()` gives them back as one flat dict.

    Attributes:
      kind: one of FLOW_KINDS: "made" (one Gaussian MADE), "made_mog" (MADE with a mixture of
        Gaussians per conditional), "maf", "iaf", "realnvp", "haf", "planar", "nice", and the
        image flows "glow" and "realnvp_image"; the options classes below document each kind
        and its own options.
      event_dim: D, the data dimension.
      num_layers: K, the number of MAF / IAF / coupling / HAF / planar / NICE layers (ignored by
        made, made_mog and the image flows, which count their layers per level).
      hidden_units: widths of the hidden layers of each MADE or conditioner network, e.g. [512]
        (ignored by planar and the image flows, whose networks have `hidden_channels`).
      activation: hidden activation of MADEs and of NICE's and spline couplings' networks ("relu"
        in the papers). Real NVP's affine networks use tanh (scale) and relu (shift), as the MAF
        paper's Real NVP.
      batch_norm: insert the MAF paper's batch-norm bijector between layers and before the base
        (None: the kind's default: on for maf, iaf, realnvp and haf; off for the others; the image
        flows have none: glow normalises with ActNorm).
      batch_norm_momentum: momentum of batch norm's running averages.
      batch_norm_epsilon: epsilon of batch norm (1e-5 in the papers).
      batch_norm_statistics: what batch norm uses at evaluation: "train_set" (mean and variance of
        the whole training set, written by `fit`, as in the MAF paper) or "running" (averages).
      context_dim: size of a conditioning vector (conditional flows), or None.
      l2: weight of the L2 penalty on all kernels (the papers use 1e-6).
      dtype: "float32" or "float64".
      seed: seed of a "random" order, of LU layers' permutations and of planar layers' weights.
      jit_compile: compile the sequential directions (sampling; IAF's density) with XLA when
        `sample`/`log_prob` are called eagerly (3-4x faster on CPU, see benchmarks/speed.py).
        Other eager `log_prob` calls run one compiled graph without XLA. Inside a tf.function
        (training, exported SavedModels) the plain graph is used, so a SavedModel needs no XLA
        support from its server.
      options: the kind's own options: an instance of its options class, a dict of its fields,
        or None for its defaults.
    """

    kind: str = "maf"
    event_dim: int = 2
    num_layers: int = 5
    hidden_units: Sequence[int] = (512,)
    activation: str = "relu"
    batch_norm: Optional[bool] = None
    batch_norm_momentum: float = 0.95
    batch_norm_epsilon: float = 1e-5
    batch_norm_statistics: str = "train_set"
    context_dim: Optional[int] = None
    l2: float = 0.0
    dtype: str = "float32"
    seed: int = 0
    jit_compile: bool = True
    options: Any = None

    def __post_init__(self):
        kind = get_kind(self.kind)
        if int(self.event_dim) < kind.min_event_dim:
            split = " (it splits the input in two)" if kind.min_event_dim > 1 else ""
            raise ValueError(f"`kind` {self.kind!r} needs event_dim >= {kind.min_event_dim}{split}, but "
                             f"`event_dim` is {self.event_dim}.")
        if int(self.num_layers) < 1:
            raise ValueError(f"`num_layers` must be >= 1, but is {self.num_layers}.")
        self.hidden_units = [int(h) for h in self.hidden_units]
        if any(h < 1 for h in self.hidden_units):
            raise ValueError(f"`hidden_units` entries must be positive, but are {self.hidden_units}.")
        if kind.needs_hidden_units and not self.hidden_units:
            raise ValueError(f"`kind` {self.kind!r} needs at least one hidden layer in `hidden_units`.")
        if self.batch_norm_statistics not in ("train_set", "running"):
            raise ValueError(
                f"`batch_norm_statistics` must be 'train_set' or 'running', but is {self.batch_norm_statistics!r}."
            )
        if self.l2 < 0:
            raise ValueError(f"`l2` must be >= 0, but is {self.l2}.")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"`dtype` must be 'float32' or 'float64', but is {self.dtype!r}.")
        if self.batch_norm is None:
            self.batch_norm = kind.batch_norm
        if self.options is None:
            self.options = kind.options()
        elif isinstance(self.options, dict):
            self.options = kind.options(**kind_options(self.kind, self.options))
        elif not isinstance(self.options, kind.options):
            raise TypeError(f"`options` of kind {self.kind!r} must be a {kind.options.__name__} or a dict, "
                            f"but is {self.options!r}.")
        if self.context_dim is not None and not kind.conditional:
            raise ValueError(f"`kind` {self.kind!r} has no conditional version, so `context_dim` must be None, "
                             f"but is {self.context_dim}.")
        if kind.needs_image_shape:
            self.options.check_event(self.kind, int(self.event_dim))
            if self.batch_norm:
                raise ValueError(f"`kind` {self.kind!r} has no batch-norm layers, so `batch_norm` must be False or "
                                 f"None, but is {self.batch_norm}.")

    def to_dict(self) -> dict:
        """Every option as one flat dict: `build_flow(**to_dict())` rebuilds the same flow."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        return {**shared, **dataclasses.asdict(self.options)}


SHARED_OPTIONS = tuple(f.name for f in dataclasses.fields(FlowConfig) if f.name not in ("kind", "event_dim", "options"))


def data_options(kind: str, image_shape: Optional[Sequence[int]]) -> dict:
    """The options `kind` takes from the data: {"image_shape": ...} for the image kinds, else {}."""
    return {"image_shape": image_shape} if get_kind(kind).needs_image_shape else {}


def _own_names(kind: str) -> set[str]:
    return {f.name for f in dataclasses.fields(get_kind(kind).options)}


def flow_option_names(kind: str) -> list[str]:
    """The keywords `build_flow(kind, D, ...)` accepts: the shared options and the kind's own."""
    return sorted(set(SHARED_OPTIONS) | _own_names(kind))


def check_own_options(kind: str, options: dict) -> None:
    """Runs the checks of `kind`'s options class on its own options among `options` (which may also
    hold shared ones), so that a bad value (``order: sideways``) is refused when the configuration
    is read, before any data is, and without TensorFlow."""
    get_kind(kind).options(**{name: value for name, value in options.items() if name in _own_names(kind)})


def kind_options(kind: str, options: dict) -> dict:
    """`options` checked against `kind`'s own option names; a foreign one is named with its kinds."""
    unknown = sorted(set(options) - _own_names(kind))
    if unknown:
        owners = {name: [k for k in FLOW_KINDS if name in _own_names(k)] for name in unknown}
        foreign = {name: kinds for name, kinds in owners.items() if kinds}
        if foreign:
            raise ValueError(f"Flow option(s) {sorted(foreign)} belong to kind(s) {foreign}, not to {kind!r}; "
                             f"the options of {kind!r} are {flow_option_names(kind)}.")
        raise ValueError(f"Unknown flow option(s) {unknown}; the options of kind {kind!r} are "
                         f"{flow_option_names(kind)}.")
    return options


# ----- the kinds' own options ------------------------------------------------------------------


def _check_order(order) -> None:
    if isinstance(order, str) and order not in ("natural", "reversed", "random"):
        raise OptionError(f"`order` must be 'natural', 'reversed' or 'random', but is {order!r}.", field="order")


def _check_bound(max_log_scale) -> None:
    if max_log_scale is not None and not max_log_scale > 0:
        raise OptionError(f"`max_log_scale` must be > 0 or None, but is {max_log_scale}.", field="max_log_scale")


def _check_components(num_components) -> None:
    if not isinstance(num_components, int) or num_components < 1:
        raise OptionError(f"`num_components` must be an int >= 1, but is {num_components!r}.", field="num_components")


@dataclasses.dataclass
class TransformerOptions:
    """The elementwise law of autoregressive and coupling layers, and what sits between layers.

    Attributes:
      transformer: "affine" (the papers' x = u·exp(alpha) + mu) or "spline" (a monotonic
        rational-quadratic spline, Durkan et al. 2019: `bijectors.RationalQuadraticSpline`).
      max_log_scale: affine only: B, a smooth bound |alpha| < B on every log-scale,
        alpha = B·tanh(a/B). Keeps log-densities finite far from the data (anomaly scores of
        outliers are very low instead of NaN); None: unbounded, as in the papers.
      num_bins: spline only: K bins (the network gives 3K-1 parameters per dimension).
      tail_bound: spline only: B; the spline acts on [-B, B] and is the identity outside.
      permutation: None (the kind's own alternation only) or "lu": an LU-decomposed invertible
        linear layer (`bijectors.LULinear`, the NSF paper's) between consecutive layers.
    """

    transformer: str = "affine"
    max_log_scale: Optional[float] = 3.0
    num_bins: int = 8
    tail_bound: float = 3.0
    permutation: Optional[str] = None

    def __post_init__(self):
        if self.transformer not in TRANSFORMERS:
            raise OptionError(f"`transformer` must be one of {TRANSFORMERS}, but is {self.transformer!r}.", field="transformer")
        _check_bound(self.max_log_scale)
        if isinstance(self.num_bins, bool) or not isinstance(self.num_bins, int) or self.num_bins < 1:
            raise OptionError(f"`num_bins` must be an int >= 1, but is {self.num_bins!r}.", field="num_bins")
        if not self.tail_bound > 0:
            raise OptionError(f"`tail_bound` must be > 0, but is {self.tail_bound!r}.", field="tail_bound")
        if self.permutation not in PERMUTATIONS:
            raise OptionError(f"`permutation` must be one of {PERMUTATIONS}, but is {self.permutation!r}.", field="permutation")


@dataclasses.dataclass
class MADEOptions:
    """made: one Gaussian MADE (Germain et al. 2015), i.e. a one-layer affine MAF.

    Attributes:
      order: input order: "natural", "reversed" or "random" (seeded by `seed`).
      max_log_scale: bound B on the log-scales (see `TransformerOptions`); None: unbounded.
    """

    order: str = "natural"
    max_log_scale: Optional[float] = 3.0

    def __post_init__(self):
        _check_order(self.order)
        _check_bound(self.max_log_scale)


@dataclasses.dataclass
class MADEMoGOptions:
    """made_mog: a MADE whose conditionals are mixtures of C Gaussians (the MAF paper's MADE MoG).

    Attributes:
      order: input order: "natural", "reversed" or "random".
      num_components: C, mixture components per conditional.
    """

    order: str = "natural"
    num_components: int = 10

    def __post_init__(self):
        _check_order(self.order)
        _check_components(self.num_components)


@dataclasses.dataclass
class MAFOptions(TransformerOptions):
    """maf: masked autoregressive flow (Papamakarios et al. 2017); with transformer="spline" the
    autoregressive rational-quadratic neural spline flow (Durkan et al. 2019, RQ-NSF (AR)).

    Attributes (besides `TransformerOptions`'):
      order: the first MADE's input order; later MADEs reverse it every layer.
      num_components: C > 1 gives a MADE MoG base density ("MAF MoG"); 1: standard normal.
    """

    order: str = "natural"
    num_components: int = 1

    def __post_init__(self):
        super().__post_init__()
        _check_order(self.order)
        _check_components(self.num_components)


@dataclasses.dataclass
class IAFOptions(TransformerOptions):
    """iaf: inverse autoregressive flow (Kingma et al. 2016): MAF's inverse, parallel sampling.

    Attributes (besides `TransformerOptions`'):
      order: the first MADE's input order (reversed every layer).
      gated: the sigmoid-gated step of the IAF paper (eqs. 11-14) instead of the transformer.
      forget_bias: gated only: initial bias of the gate.
    """

    order: str = "natural"
    gated: bool = False
    forget_bias: float = 1.0

    def __post_init__(self):
        super().__post_init__()
        _check_order(self.order)
        if self.gated and self.transformer != "affine":
            raise OptionError(f"`gated` IAF has its own sigmoid-gated law, so `transformer` must be 'affine', "
                             f"but is {self.transformer!r}.", field="gated")


@dataclasses.dataclass
class RealNVPOptions(TransformerOptions):
    """realnvp: coupling layers on alternating halves (Dinh et al. 2017, as in the MAF paper).
    Affine: tanh scale and relu shift networks; spline: one relu network giving the spline's
    parameters (the coupling neural spline flow, RQ-NSF (C))."""


@dataclasses.dataclass
class HAFOptions(TransformerOptions):
    """haf: hybrid autoregressive flow (thesis ch. 6): a MADE on the even (odd) positions and a
    coupling of the others, alternating every layer; the MADE order reverses every two layers.

    Attributes (besides `TransformerOptions`'):
      coupling_hidden_units: widths of the coupling half's networks (None: `hidden_units`).
    """

    coupling_hidden_units: Optional[Sequence[int]] = None

    def __post_init__(self):
        super().__post_init__()
        if self.coupling_hidden_units is not None:
            self.coupling_hidden_units = [int(h) for h in self.coupling_hidden_units]


@dataclasses.dataclass
class PlanarOptions:
    """planar: Rezende & Mohamed's planar flow (sampling in closed form, density by root finding;
    made for reverse-KL fits). `hidden_units` is not used.

    Attributes:
      planar_init_scale: scale of the random initial w and u of each layer.
    """

    planar_init_scale: float = 0.1


@dataclasses.dataclass
class NICEOptions:
    """nice: NICE (Dinh et al. 2015): additive coupling layers x_b = u_b + m(u_a) on alternating
    even/odd positions (m a network of `hidden_units` with `activation`, relu in the paper), then
    a learnt diagonal scaling (section 3.3), the flow's only change of volume. No options of its
    own; batch norm is off by default, as in the paper."""


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"`{name}` must be an int >= 1, but is {value!r}.", field=name)


@dataclasses.dataclass
class ImageOptions:
    """What the multi-scale image flows share ("glow", "realnvp_image"). Events are flat rows of D
    values read as images [H, W, C] (channels last, `np.reshape` order).

    Each level squeezes the image (2x2 blocks of pixels to channels, `bijectors.Squeeze`), applies
    the level's layers, and then factors out half of the channels to the standard normal base
    (`bijectors.FactorOut`, Real NVP section 3.6); the last level factors nothing out.

    Attributes:
      image_shape: [H, W] (one channel) or [H, W, C] of the data, with H·W·C = event_dim; the
        pipeline fills it in from the dataset's metadata. H and W must be divisible by 2**levels.
      levels: L, the number of scales.
      hidden_channels: feature maps of every coupling's convolutional network.
      max_log_scale: B, the smooth bound |alpha| < B on the couplings' log-scales (as in
        `TransformerOptions`); None: unbounded.
    """

    image_shape: Optional[Sequence[int]] = None
    levels: int = 2
    hidden_channels: int = 64
    max_log_scale: Optional[float] = 3.0

    def __post_init__(self):
        if self.image_shape is not None:
            shape = list(self.image_shape)
            if len(shape) not in (2, 3) or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
                raise OptionError(f"`image_shape` must be [H, W] or [H, W, C] of positive ints, but is {self.image_shape!r}.", field="image_shape")
            self.image_shape = shape
        _positive_int("levels", self.levels)
        _positive_int("hidden_channels", self.hidden_channels)
        _check_bound(self.max_log_scale)

    @property
    def hwc(self) -> list[int]:
        """The image shape as [H, W, C]."""
        if self.image_shape is None:
            raise OptionError("`image_shape` is None: an image kind needs [H, W] or [H, W, C].", field="image_shape")
        return list(self.image_shape) + [1] * (3 - len(self.image_shape))

    def check_event(self, kind: str, event_dim: int) -> None:
        """Refuses a missing image shape, one that does not hold `event_dim` values, or one too small
        for the levels."""
        if self.image_shape is None:
            raise OptionError(f"`kind` {kind!r} needs `image_shape` ([H, W] or [H, W, C] with H*W*C = event_dim = "
                             f"{event_dim}); it is None: ingest images with an image shape or pass image_shape=.", field="kind")
        h, w, c = self.hwc
        if h * w * c != event_dim:
            raise OptionError(f"`image_shape` {self.image_shape} holds {h * w * c} values, but `event_dim` is "
                             f"{event_dim}: give the shape of the flattened images (H*W*C = event_dim).", field="image_shape")
        step = 2**self.levels  # glow squeezes every level; realnvp_image's last level keeps >= 2x2 pixels
        if h % step or w % step:
            raise OptionError(f"`image_shape` {self.image_shape} with `levels`={self.levels}: kind {kind!r} needs H "
                             f"and W divisible by {step}; use fewer levels or pad the images.", field="image_shape")


@dataclasses.dataclass
class GlowOptions(ImageOptions):
    """glow: Glow (Kingma & Dhariwal 2018, section 3, fig. 2): L levels of squeeze, then K steps of
    flow (actnorm with data-dependent initialisation, invertible 1x1 convolution in LU form, affine
    coupling of half the channels with a 3x3-1x1-3x3 convolutional network), then factor-out.
    The paper's CIFAR-10 model: L = 3, K = 32, 512 hidden channels; the defaults are sized for
    28x28 grey images on a CPU.

    Attributes (besides `ImageOptions`'):
      steps_per_level: K, steps of flow per level.
      learnt_prior: give each factored-out half the learnt Gaussian N(mu(z1), exp(sigma(z1))^2)
        of Glow (section 3, fig. 2b "split"), mu and sigma a zero-initialised 3x3 convolution of
        the kept half z1 (`bijectors.LearntPrior`); False: the standard normal, as Real NVP.
    """

    steps_per_level: int = 4
    learnt_prior: bool = False

    def __post_init__(self):
        super().__post_init__()
        _positive_int("steps_per_level", self.steps_per_level)
        if not isinstance(self.learnt_prior, bool):
            raise OptionError(f"`learnt_prior` must be True or False, but is {self.learnt_prior!r}.", field="learnt_prior")


@dataclasses.dataclass
class RealNVPImageOptions(ImageOptions):
    """realnvp_image: Real NVP's multi-scale image flow (Dinh et al. 2017, sections 3.4-3.6, 4.1):
    each level but the last has `couplings_per_level` affine couplings with alternating
    checkerboard masks, a squeeze, `couplings_per_level` couplings with alternating channel-wise
    masks, then factors out half the channels; the last level has `couplings_per_level` + 1
    checkerboard couplings (the paper: 3, 3 and 4). Each coupling's network is a ResNet. The
    paper's CIFAR-10 model: 8 residual blocks of 64 feature maps; it also batch-normalises inside
    the networks and between layers (not done here).

    Attributes (besides `ImageOptions`'):
      couplings_per_level: couplings of each mask type per level.
      residual_blocks: residual blocks of each coupling's network.
    """

    couplings_per_level: int = 3
    residual_blocks: int = 2

    def __post_init__(self):
        super().__post_init__()
        _positive_int("couplings_per_level", self.couplings_per_level)
        if isinstance(self.residual_blocks, bool) or not isinstance(self.residual_blocks, int) \
                or self.residual_blocks < 0:
            raise OptionError(f"`residual_blocks` must be an int >= 0, but is {self.residual_blocks!r}.", field="residual_blocks")


def _all_inputs(event_dim: int) -> int:
    return event_dim


def _half_inputs(event_dim: int) -> int:  # HAF's MADE takes the even (or odd) positions
    return (event_dim + 1) // 2


register_kind("made", MADEOptions, batch_norm=False, made_inputs=_all_inputs)
register_kind("made_mog", MADEMoGOptions, batch_norm=False, made_inputs=_all_inputs)
register_kind("maf", MAFOptions, batch_norm=True, made_inputs=_all_inputs)
register_kind("iaf", IAFOptions, batch_norm=True, sequential_density=True, made_inputs=_all_inputs)
register_kind("realnvp", RealNVPOptions, batch_norm=True, min_event_dim=2, needs_hidden_units=True)
register_kind("haf", HAFOptions, batch_norm=True, min_event_dim=2, needs_hidden_units=True, made_inputs=_half_inputs)
register_kind("planar", PlanarOptions, batch_norm=False, conditional=False)
register_kind("nice", NICEOptions, batch_norm=False, min_event_dim=2)
register_kind("glow", GlowOptions, batch_norm=False, needs_image_shape=True, conditional=False)
register_kind("realnvp_image", RealNVPImageOptions, batch_norm=False, needs_image_shape=True, conditional=False)
