"""Flows: `build_flow` and the Keras flow model (each kind's layers come from `models.builders`).

A flow maps base noise u to data x through bijectors b_K ∘ ... ∘ b_1 (forward), and evaluates

    log p(x) = log p_base(u) + sum_k log|det du_k/du_{k-1}|,   u = b_1^-1(...b_K^-1(x))

(the change of variables; every bijector returns its log-determinant with its value).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfflows.models import builders  # noqa: F401  (attaches the built-in kinds' builders)
from tfflows.models.bijectors import ActNorm, BatchNormalization
from tfflows.models.kinds import FLOW_KINDS, SHARED_OPTIONS, FlowConfig, flow_option_names, get_kind, kind_options
from tfflows.models.made import freeze_into
from tfflows.models.training import CompiledStep, gradient_step, kernel_l2

__all__ = ["FLOW_KINDS", "FlowConfig", "FlowModel", "build_flow", "flow_option_names", "kernel_l2",
           "totally_ordered"]


def totally_ordered(log_prob):
    """``log_prob`` with NaN and +inf replaced by -inf.

    A finite but extreme input (1e30 in a float32 row) can overflow a layer to inf - inf = NaN;
    a NaN fails every ``score < threshold`` test, so an anomaly would pass as normal. Such a row
    is as unlikely as the model can express: -inf keeps scores totally ordered.
    """
    return tf.where(log_prob < np.inf, log_prob, tf.constant(-np.inf, log_prob.dtype))


class FlowModel(tf_keras.Model):
    """A normalising flow as a Keras model.

    - `log_prob(x, context=None)`: log-density of data x [batch, D] (nats, per row).
    - `sample(n, seed=..., context=None)`: n draws [n, D]; the same integer seed gives the same draws.
    - `bijector`: a TFP `Chain` whose forward maps base noise u to data x.
    - `distribution`: the TFP `TransformedDistribution(base, bijector)`.
    - `fit(data)`: minimises the mean negative log-likelihood (+ L2); `data` yields x batches or
      (x, context) pairs for a conditional flow. Batch norm uses minibatch statistics in training.
      Each batch is one `models.training.gradient_step`, XLA-compiled where it compiles: the
      pipeline's trainer runs the same step.

    Build it with `build_flow`.
    """

    def __init__(self, config: FlowConfig, **kwargs):
        super().__init__(name=kwargs.pop("name", f"{config.kind}_flow"), dtype=config.dtype, **kwargs)
        self.config = config
        self.event_dim = config.event_dim
        build = get_kind(config.kind).build
        if build is None:
            raise ValueError(f"kind {config.kind!r} has no builder: register one with `models.kinds.builder`.")
        data_side, self.base = build(config)
        self.flow_layers = data_side  # data side first: the order of the density pass
        self._xla_forward = tf.function(self._forward_layers, jit_compile=True)
        # Eager inference runs one compiled graph, not op by op; XLA where the pass is a loop.
        sequential = get_kind(config.kind).sequential_density and config.jit_compile
        self._compiled_log_prob = tf.function(self._log_prob, jit_compile=sequential or None,
                                              reduce_retracing=True)
        self._nll_tracker = tf_keras.metrics.Mean(name="nll")
        self._loss_tracker = tf_keras.metrics.Mean(name="loss")
        context = None if config.context_dim is None else tf.zeros([1, config.context_dim], config.dtype)
        # Creates the variables, eagerly (not inside an XLA trace).
        u, _ = self.inverse_and_log_det(tf.zeros([1, config.event_dim], config.dtype), context=context)
        self.base.log_prob(u, context=context)

    def get_config(self):
        return self.config.to_dict()

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
        if training:  # raw: a NaN must reach the trainer, which rolls back on it
            return self._log_prob(x, context, training)
        if not tf.executing_eagerly():
            return totally_ordered(self._log_prob(x, context, False))
        return totally_ordered(self._compiled_log_prob(x, context, False))

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
        return freeze_into(FlowModel(self.config, name=f"{self.name}_frozen"), self)

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

    @staticmethod
    def _nll(model, data):
        """(loss, value) of `gradient_step`: the batch's mean negative log-likelihood, twice."""
        x, context = model._unpack(data)
        nll = -tf.reduce_mean(model.log_prob(x, context=context, training=True))
        return nll, nll

    def train_step(self, data):
        """One `models.training.gradient_step` on the mean negative log-likelihood (+ L2)."""
        loss, nll = gradient_step(self, self.optimizer, self._nll, data, float(self.config.l2))
        self._nll_tracker.update_state(nll)
        self._loss_tracker.update_state(loss)
        return {m.name: m.result() for m in self.metrics}

    def _counted_train_step(self, data):
        logs = self.train_step(data)
        self._train_counter.assign_add(1)  # as Keras' own train function does
        return logs

    def make_train_function(self, force=False):
        """`fit`'s train function: the trainer's `CompiledStep` (one XLA program per step where it
        compiles) instead of Keras' plain graph, which runs a spline MAF about half as fast
        (`benchmarks/speed.py --fit-vs-trainer`).
        ``compile(jit_compile=False)`` keeps to the plain graph; ``run_eagerly``, a distribution
        strategy or ``steps_per_execution`` > 1 get Keras' own train function."""
        if self.train_function is not None and not force:
            return self.train_function
        if (self.run_eagerly or tf.distribute.has_strategy() or self.autotune_steps_per_execution
                or (self._steps_per_execution is not None and int(self._steps_per_execution.numpy()) != 1)):
            return super().make_train_function(force)
        step = CompiledStep(self._counted_train_step, jit_compile=self.jit_compile is not False)
        self.train_function = lambda iterator: step(next(iterator))
        return self.train_function

    def test_step(self, data):
        x, context = self._unpack(data)
        nll = -tf.reduce_mean(self.log_prob(x, context=context))
        self._nll_tracker.update_state(nll)
        self._loss_tracker.update_state(nll)
        return {m.name: m.result() for m in self.metrics}

    def _awaiting_initialisation(self) -> list[int]:
        """Positions of the layers whose data-dependent initialisation is still to come."""
        return [i for i, layer in enumerate(self.flow_layers)
                if isinstance(layer, ActNorm) and not bool(layer.initialised.numpy())]

    @property
    def needs_data_initialisation(self) -> bool:
        """Whether `initialise_from_data` has anything to do (a fresh Glow; never a MAF)."""
        return bool(self._awaiting_initialisation())

    def initialise_from_data(self, x, context=None) -> bool:
        """Data-dependent initialisation (Glow, section 3.1) from the batch `x` [batch, D].

        Every layer with one (ActNorm) that has not had it yet sets its parameters from its own
        input: x passed through the layers before it, data side first, each already initialised.
        Run it eagerly, outside a training step (in a strategy's cross-replica context every
        replica's copy gets the same value). A restored or initialised model is left as it is.
        Returns whether any layer was initialised.
        """
        pending = self._awaiting_initialisation()
        if not pending:
            return False
        h = tf.cast(x, self.dtype)
        for layer in self.flow_layers[:pending[-1] + 1]:
            if isinstance(layer, ActNorm):
                layer.initialise(h)
            h, _ = layer.inverse_and_log_det(h, context=context)
        return True

    def fit(self, x=None, *args, **kwargs):
        """Keras `fit`, after the data-dependent initialisation on the first `batch_size` rows (or
        the dataset's first batch); then, with batch_norm_statistics="train_set", batch norm takes
        the whole training set's statistics (MAF paper, appendix B)."""
        if self.needs_data_initialisation:
            first = next(iter(x)) if isinstance(x, tf.data.Dataset) else np.asarray(x)[:kwargs.get("batch_size") or 32]
            self.initialise_from_data(*self._unpack(first))
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
    """Builds a flow model. `options` are the shared fields of `FlowConfig` and the fields of the
    kind's own options class (`models.kinds`), all documented there.

    Example:
      >>> model = build_flow("maf", 2, num_layers=2, hidden_units=[16])
      >>> model.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
      >>> model.log_prob(tf.zeros([3, 2])).shape
      TensorShape([3])
    """
    get_kind(kind)
    shared = {name: value for name, value in options.items() if name in SHARED_OPTIONS}
    own = kind_options(kind, {name: value for name, value in options.items() if name not in SHARED_OPTIONS})
    return FlowModel(FlowConfig(kind=kind, event_dim=int(event_dim), options=own, **shared))
