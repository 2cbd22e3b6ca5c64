"""Flows: the builder that chains layers for each kind, and the Keras flow model.

A flow maps base noise u to data x through bijectors b_K ∘ ... ∘ b_1 (forward), and evaluates

    log p(x) = log p_base(u) + sum_k log|det du_k/du_{k-1}|,   u = b_1^-1(...b_K^-1(x))

(the change of variables; every bijector returns its log-determinant with its value).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfflows.models.base_densities import MixtureMADE, StandardNormal
from tfflows.models.bijectors import (
    AffineCoupling,
    BatchNormalization,
    FlowBijector,
    GatedInverseAutoregressiveFlow,
    HybridAutoregressive,
    InverseAutoregressiveFlow,
    MaskedAutoregressiveFlow,
    PlanarFlow,
    split_indices,
)
from tfflows.models.made import MADE, MaskedDense

__all__ = ["FLOW_KINDS", "FlowConfig", "FlowModel", "build_flow", "kernel_l2"]

FLOW_KINDS = ("made", "made_mog", "maf", "iaf", "realnvp", "haf", "planar")


@dataclasses.dataclass
class FlowConfig:
    """Every option of a flow. `build_flow(kind, event_dim, **options)` takes these as keywords.

    Attributes:
      kind: one of FLOW_KINDS: "made" (one Gaussian MADE), "made_mog" (MADE with a mixture of
        Gaussians per conditional), "maf", "iaf", "realnvp", "haf", "planar" (Rezende & Mohamed's
        planar flow: sampling in closed form, density by root finding; made for reverse-KL fits).
      event_dim: D, the data dimension.
      num_layers: K, the number of MAF / IAF / coupling / HAF / planar layers (ignored by made,
        made_mog).
      hidden_units: widths of the hidden layers of each MADE or conditioner network, e.g. [512]
        (ignored by planar).
      coupling_hidden_units: HAF only: widths of the coupling half's networks (default: hidden_units).
      activation: hidden activation of MADEs ("relu" in the papers). Coupling networks use tanh
        (scale) and relu (shift), as the MAF paper's Real NVP.
      batch_norm: insert the MAF paper's batch-norm bijector between layers and before the base
        (default: on for maf, iaf, realnvp and haf; off for made, made_mog and planar).
      batch_norm_momentum: momentum of batch norm's running averages.
      batch_norm_epsilon: epsilon of batch norm (1e-5 in the papers).
      batch_norm_statistics: what batch norm uses at evaluation: "train_set" (mean and variance of
        the whole training set, written by `fit`, as in the MAF paper) or "running" (averages).
      num_components: C mixture components per conditional for made_mog (default 10) and for a
        MAF with a MADE MoG base ("MAF MoG", when C > 1).
      order: input order of the first MADE: "natural", "reversed" or "random"; later MADEs
        reverse it every layer (MAF, IAF) or every two layers (HAF).
      gated: IAF only: use the sigmoid-gated step of the IAF paper (eqs. 11-14).
      forget_bias: gated IAF only: initial bias of the gate.
      context_dim: size of a conditioning vector (conditional flows), or None.
      l2: weight of the L2 penalty on all kernels (the papers use 1e-6).
      max_log_scale: B, a smooth bound |alpha| < B on every affine log-scale (MAF, IAF, HAF,
        Real NVP): alpha = B·tanh(a/B). Keeps log-densities finite far from the data (anomaly
        scores of outliers are very low instead of NaN); None: unbounded, as in the papers.
      planar_init_scale: planar only: scale of the random initial w and u of each layer.
      dtype: "float32" or "float64".
      seed: seed of a "random" order and of the planar layers' initial weights.
      jit_compile: compile the sequential directions (sampling; IAF's density) with XLA when
        `sample`/`log_prob` are called eagerly (3-4x faster on CPU, see benchmarks/speed.py).
        Other eager `log_prob` calls run one compiled graph without XLA. Inside a tf.function
        (training, exported SavedModels) the plain graph is used, so a SavedModel needs no XLA
        support from its server.
    """

    kind: str = "maf"
    event_dim: int = 2
    num_layers: int = 5
    hidden_units: Sequence[int] = (512,)
    coupling_hidden_units: Sequence[int] | None = None
    activation: str = "relu"
    batch_norm: bool | None = None
    batch_norm_momentum: float = 0.95
    batch_norm_epsilon: float = 1e-5
    batch_norm_statistics: str = "train_set"
    num_components: int | None = None
    order: str = "natural"
    gated: bool = False
    forget_bias: float = 1.0
    context_dim: int | None = None
    l2: float = 0.0
    max_log_scale: float | None = 3.0
    planar_init_scale: float = 0.1
    dtype: str = "float32"
    seed: int = 0
    jit_compile: bool = True

    def __post_init__(self):
        if self.kind not in FLOW_KINDS:
            raise ValueError(f"`kind` must be one of {FLOW_KINDS}, but is {self.kind!r}.")
        if int(self.event_dim) < 1:
            raise ValueError(f"`event_dim` must be >= 1, but is {self.event_dim}.")
        if self.kind in ("realnvp", "haf") and self.event_dim < 2:
            raise ValueError(f"`kind` {self.kind!r} splits the input in two and needs event_dim >= 2.")
        if int(self.num_layers) < 1:
            raise ValueError(f"`num_layers` must be >= 1, but is {self.num_layers}.")
        self.hidden_units = [int(h) for h in self.hidden_units]
        if any(h < 1 for h in self.hidden_units):
            raise ValueError(f"`hidden_units` entries must be positive, but are {self.hidden_units}.")
        if self.kind in ("realnvp", "haf") and not self.hidden_units:
            raise ValueError(f"`kind` {self.kind!r} needs at least one hidden layer in `hidden_units`.")
        if self.batch_norm_statistics not in ("train_set", "running"):
            raise ValueError(
                f"`batch_norm_statistics` must be 'train_set' or 'running', but is {self.batch_norm_statistics!r}."
            )
        if self.max_log_scale is not None and not self.max_log_scale > 0:
            raise ValueError(f"`max_log_scale` must be > 0 or None, but is {self.max_log_scale}.")
        if self.l2 < 0:
            raise ValueError(f"`l2` must be >= 0, but is {self.l2}.")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"`dtype` must be 'float32' or 'float64', but is {self.dtype!r}.")
        if self.batch_norm is None:
            self.batch_norm = self.kind not in ("made", "made_mog", "planar")
        if self.num_components is None:
            self.num_components = 10 if self.kind == "made_mog" else 1
        if self.num_components < 1:
            raise ValueError(f"`num_components` must be >= 1, but is {self.num_components}.")
        if self.num_components > 1 and self.kind not in ("made_mog", "maf"):
            raise ValueError(f"`num_components` > 1 is supported by 'made_mog' and 'maf', not {self.kind!r}.")


def kernel_l2(variables):
    """sum of squares of every kernel (weight matrix) among `variables`: the papers' L2 penalty."""
    kernels = [v for v in variables if "kernel" in v.name]
    return tf.add_n([tf.reduce_sum(tf.square(v)) for v in kernels]) if kernels else tf.constant(0.0)


def _made_order(config: FlowConfig, flip: bool):
    if not flip:
        return config.order
    if config.order == "random":
        return list(np.random.default_rng(config.seed + 1).permutation(config.event_dim) + 1)
    return "reversed" if config.order == "natural" else "natural"


def _data_side_layers(config: FlowConfig) -> tuple[list[FlowBijector], object]:
    """Bijectors from the data side to the base side, and the base density."""
    d, kind = config.event_dim, config.kind
    common = dict(activation=config.activation, context_dim=config.context_dim)
    bound = config.max_log_scale
    layers: list[FlowBijector] = []
    count = 1 if kind in ("made", "made_mog") else config.num_layers
    if kind == "made_mog":
        count = 0
    for k in range(count):
        if kind in ("made", "maf", "iaf"):
            made = MADE(d, config.hidden_units, order=_made_order(config, k % 2 == 1), seed=config.seed,
                        name=f"made_{k}", dtype=config.dtype, **common)
            if kind == "iaf":
                layer = (GatedInverseAutoregressiveFlow(made, config.forget_bias, name=f"iaf_{k}") if config.gated
                         else InverseAutoregressiveFlow(made, bound, name=f"iaf_{k}"))
            else:
                layer = MaskedAutoregressiveFlow(made, bound, name=f"maf_{k}")
        elif kind == "planar":
            layer = PlanarFlow(d, config.planar_init_scale, seed=config.seed + k, dtype=config.dtype,
                               name=f"planar_{k}")
        elif kind == "realnvp":
            cond, trans = split_indices(d, "halves", flip=k % 2 == 1)
            layer = AffineCoupling(d, config.hidden_units, cond, trans, config.context_dim, bound,
                                   name=f"coupling_{k}", dtype=config.dtype)
        else:  # haf: parity split alternates every layer, MADE order every two layers
            made_idx, coupling_idx = split_indices(d, "parity", flip=k % 2 == 1)
            layer = HybridAutoregressive(
                d, made_idx, coupling_idx, config.hidden_units,
                config.coupling_hidden_units or config.hidden_units,
                made_order="natural" if (k // 2) % 2 == 0 else "reversed", max_log_scale=bound,
                name=f"haf_{k}", dtype=config.dtype, **common)
        layers.append(layer)
        if config.batch_norm:
            layers.append(BatchNormalization(d, config.batch_norm_epsilon, config.batch_norm_momentum,
                                             name=f"batch_norm_{k}"))
    if config.num_components > 1:
        base = MixtureMADE(d, config.hidden_units, config.num_components,
                           order=_made_order(config, count % 2 == 1), name="base_mixture",
                           dtype=config.dtype, **common)
    else:
        base = StandardNormal(d)
    return layers, base


class FlowModel(tf_keras.Model):
    """A normalising flow as a Keras model.

    - `log_prob(x, context=None)`: log-density of data x [batch, D] (nats, per row).
    - `sample(n, seed=..., context=None)`: n draws [n, D]; the same integer seed gives the same draws.
    - `bijector`: a TFP `Chain` whose forward maps base noise u to data x.
    - `distribution`: the TFP `TransformedDistribution(base, bijector)`.
    - `fit(data)`: minimises the mean negative log-likelihood (+ L2); `data` yields x batches or
      (x, context) pairs for a conditional flow. Batch norm uses minibatch statistics in training.

    Build it with `build_flow`.
    """

    def __init__(self, config: FlowConfig, **kwargs):
        super().__init__(name=kwargs.pop("name", f"{config.kind}_flow"), dtype=config.dtype, **kwargs)
        self.config = config
        self.event_dim = config.event_dim
        data_side, self.base = _data_side_layers(config)
        self.flow_layers = data_side  # data side first: the order of the density pass
        self._xla_forward = tf.function(self._forward_layers, jit_compile=True)
        # Eager inference runs one compiled graph, not op by op; XLA where the pass is a loop.
        sequential = config.kind == "iaf" and config.jit_compile
        self._compiled_log_prob = tf.function(self._log_prob, jit_compile=sequential or None,
                                              reduce_retracing=True)
        self._nll_tracker = tf_keras.metrics.Mean(name="nll")
        self._loss_tracker = tf_keras.metrics.Mean(name="loss")
        context = None if config.context_dim is None else tf.zeros([1, config.context_dim], config.dtype)
        # Creates the variables, eagerly (not inside an XLA trace).
        u, _ = self.inverse_and_log_det(tf.zeros([1, config.event_dim], config.dtype), context=context)
        self.base.log_prob(u, context=context)

    def get_config(self):
        return dataclasses.asdict(self.config)

    # ----- density and sampling -----------------------------------------------------------
    def inverse_and_log_det(self, x, context=None, training=False):
        """(u, log|det du/dx|) through every layer, data side first."""
        log_det = tf.zeros_like(x[..., 0])
        for layer in self.flow_layers:
            x, ld = layer.inverse_and_log_det(x, context=context, training=training)
            log_det += ld
        return x, log_det

    def _context(self, context, batch):
        """A context as a [batch, C] tensor; a single context [C] or [1, C] is broadcast."""
        if context is None:
            return None
        context = tf.convert_to_tensor(context, dtype=self.dtype)
        context = tf.reshape(context, [-1, self.config.context_dim])
        return tf.broadcast_to(context, [batch, self.config.context_dim])

    def _use_xla(self) -> bool:
        return self.config.jit_compile and tf.executing_eagerly()

    def log_prob(self, x, context=None, training=False):
        x = tf.convert_to_tensor(x, dtype=self.dtype)
        if context is not None:
            context = self._context(context, tf.shape(x)[0])
        if training or not tf.executing_eagerly():
            return self._log_prob(x, context, training)
        return self._compiled_log_prob(x, context, False)

    def _log_prob(self, x, context, training):
        u, log_det = self.inverse_and_log_det(x, context, training)
        return self.base.log_prob(u, context=context) + log_det

    def call(self, x, context=None, training=False):
        return self.log_prob(x, context=context, training=training)

    def sample(self, n, seed=None, context=None):
        """n samples [n, D]. `seed`: an int or a shape-[2] int tensor (stateless, reproducible)."""
        if seed is None:
            seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
        elif isinstance(seed, int):
            seed = tf.constant([seed, 0], tf.int32)
        context = self._context(context, n)
        u = self.base.sample(n, seed, context=context, dtype=self.dtype)
        return (self._xla_forward if self._use_xla() else self._forward_layers)(u, context)

    def frozen(self) -> "FlowModel":
        """An inference copy: same weights, every MADE mask multiplied into its kernel once.

        `log_prob` and `sample` are those of this model (to rounding), without the per-call
        products W * M, a pass over every weight that dominates small batches (batch-1 log_prob at
        D=784: 2.7x faster). The copy is not trainable; the evaluator and the exported SavedModel
        use it. Make a new copy after further training.
        """
        copy = FlowModel(self.config, name=f"{self.name}_frozen")
        for target, source in zip(copy.variables, self.variables, strict=True):
            target.assign(source)
        for module in copy.submodules:
            if isinstance(module, MaskedDense):
                module.bake_mask()
        copy.trainable = False
        return copy

    def _forward_layers(self, u, context=None):
        """x = b_K(...b_1(u)): every layer's forward, base side first."""
        for layer in reversed(self.flow_layers):
            u, _ = layer.forward_and_log_det(u, context=context)
        return u

    @property
    def bijector(self):
        return tfp.bijectors.Chain(list(self.flow_layers), name=f"{self.config.kind}_chain")

    @property
    def distribution(self):
        return tfp.distributions.TransformedDistribution(self.base.distribution(self.dtype), self.bijector)

    @property
    def batch_norm_layers(self) -> list[BatchNormalization]:
        return [layer for layer in self.flow_layers if isinstance(layer, BatchNormalization)]

    # ----- training -------------------------------------------------------------------------
    def l2_penalty(self):
        return kernel_l2(self.trainable_variables)

    @staticmethod
    def _unpack(data):
        if isinstance(data, (tuple, list)):
            return data[0], (data[1] if len(data) > 1 else None)
        return data, None

    @property
    def metrics(self):
        return [self._loss_tracker, self._nll_tracker]

    def train_step(self, data):
        x, context = self._unpack(data)
        with tf.GradientTape() as tape:
            nll = -tf.reduce_mean(self.log_prob(x, context=context, training=True))
            loss = nll + self.config.l2 * self.l2_penalty() if self.config.l2 else nll
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        self._nll_tracker.update_state(nll)
        self._loss_tracker.update_state(loss)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        x, context = self._unpack(data)
        nll = -tf.reduce_mean(self.log_prob(x, context=context))
        self._nll_tracker.update_state(nll)
        self._loss_tracker.update_state(nll)
        return {m.name: m.result() for m in self.metrics}

    def fit(self, x=None, *args, **kwargs):
        """Keras `fit`; then, with batch_norm_statistics="train_set", batch norm takes the whole
        training set's statistics (MAF paper, appendix B)."""
        history = super().fit(x, *args, **kwargs)
        if self.batch_norm_layers and self.config.batch_norm_statistics == "train_set":
            if isinstance(x, tf.data.Dataset) and x.cardinality() == tf.data.INFINITE_CARDINALITY:
                tf.get_logger().warning(
                    "fit: the dataset repeats forever, so batch norm keeps its running averages; call "
                    "set_batch_norm_statistics(finite_train_data) for the MAF paper's statistics.")
            else:
                self.set_batch_norm_statistics(x, batch_size=kwargs.get("batch_size") or 1000)
        return history

    def set_batch_norm_statistics(self, data, batch_size: int = 1000):
        """Sets every batch-norm layer's mean and variance to those of its input over `data`.

        Layers are done in order from the data side, each after the ones before it are set, so
        each sees its input as it will be at evaluation. `data`: an array [N, D] or a finite
        tf.data.Dataset of x batches or (x, context) batches.
        """
        if isinstance(data, tf.data.Dataset):
            if data.cardinality() == tf.data.INFINITE_CARDINALITY:
                raise ValueError("set_batch_norm_statistics needs a finite dataset, but this one repeats forever.")
            batches = data
        else:
            batches = tf.data.Dataset.from_tensor_slices(np.asarray(data)).batch(batch_size)
        for position, layer in enumerate(self.flow_layers):
            if not isinstance(layer, BatchNormalization):
                continue
            total, total_sq, count = 0.0, 0.0, 0
            for batch in batches:
                x, context = self._unpack(batch)
                h = tf.cast(x, self.dtype)
                for before in self.flow_layers[:position]:
                    h, _ = before.inverse_and_log_det(h, context=context)
                h = tf.cast(h, tf.float64).numpy()
                total, total_sq, count = total + h.sum(0), total_sq + (h**2).sum(0), count + len(h)
            mean = total / count
            layer.set_statistics(mean, np.maximum(total_sq / count - mean**2, 0.0))


def build_flow(kind: str, event_dim: int, **options) -> FlowModel:
    """Builds a flow model. `options` are the fields of `FlowConfig` (documented there).

    Example:
      >>> model = build_flow("maf", 2, num_layers=2, hidden_units=[16])
      >>> model.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
      >>> model.log_prob(tf.zeros([3, 2])).shape
      TensorShape([3])
    """
    valid = {f.name for f in dataclasses.fields(FlowConfig)} - {"kind", "event_dim"}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(f"Unknown flow option(s) {unknown}; valid options are {sorted(valid)}.")
    return FlowModel(FlowConfig(kind=kind, event_dim=int(event_dim), **options))
