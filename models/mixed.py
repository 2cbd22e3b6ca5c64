r"""Densities of mixed rows: categorical columns s and numeric columns x, optionally given a context y.

The chain rule splits a mixed row into a discrete and a continuous factor:

```math
\log p(s, x \mid y) = \underbrace{\log P(s \mid y)}_{\text{CategoricalMADE}}
  + \underbrace{\log p\big(x \mid \mathrm{onehot}(s), y\big)}_{\text{conditional flow}} .
```

The first term is a log-probability (nats) of the categories, the second a log-density of the
numeric part with respect to Lebesgue measure on \(\mathbb{R}^D\), from a flow whose context is
the one-hot categories (and y): the flow's context enters every MADE hidden layer and every
coupling network (`build_flow(kind, D, context_dim=...)`), so each combination of categories gets
its own density of x. The sum is the exact log-density of the row with respect to the product of
counting measure on the categories and Lebesgue measure on x: summing \(\exp\) over every
combination of categories and integrating over x gives 1. Scores of two models on the same columns
are comparable (their difference is a log-likelihood ratio); a score is not comparable with a
density of the numeric columns alone, whose measure differs.
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf
import tf_keras

from tfflows.models.categorical import CategoricalMADE
from tfflows.models.flows import FlowModel, build_flow
from tfflows.models.made import freeze_into
from tfflows.models.training import gradient_step

__all__ = ["MixedDensity"]


class MixedDensity(tf_keras.Model):
    r"""\(\log p(s, x \mid y) = \log P(s \mid y) + \log p(x \mid \mathrm{onehot}(s), y)\) as one Keras model.

    - `log_prob(numeric, categorical_codes, context=None)`: [batch], the exact log-density of
      each mixed row (module docstring: a log-probability in nats plus a log-density).
    - `categorical_log_prob` and `numeric_log_prob`: the two terms on their own.
    - `sample(n, seed, context=None)`: (numeric [n, D], codes [n, columns]), ancestral: the
      categories first, then x given them.
    - `fit(dataset)`: batches of (numeric, codes) or (numeric, codes, context); each batch is one
      `models.training.gradient_step` on the mean negative log-likelihood (+ the flow's L2
      weight on every kernel), the step `FlowModel` and the pipeline's trainer take.
    - what the pipeline's trainer asks of a `FlowModel`, on (numeric, codes[, context]) batches:
      `get_config` / `from_config` (the arguments below), `frozen`, `config` (the numeric flow's),
      `event_dim`, `batch_norm_layers`, `set_batch_norm_statistics`, `needs_data_initialisation`
      and `initialise_from_data`.

    Args:
      numeric_dim: D, the number of numeric columns.
      num_categories: K_i of each categorical column.
      kind: the flow kind of the numeric part (any kind `build_flow` makes conditional).
      context_dim: size of a conditioning vector y, or None.
      categorical_hidden_units: hidden widths of the `CategoricalMADE`.
      categorical_order: its column order.
      oov_probability: \(\varepsilon\): each categorical column's last category is an
        out-of-vocabulary bucket of this fixed probability (`CategoricalMADE`); None: learnt.
      **flow_options: `build_flow` options of the flow (num_layers, hidden_units, l2, dtype, ...).

    Example:
      >>> model = MixedDensity(2, [3], kind="maf", num_layers=2, hidden_units=[16])
      >>> model.log_prob(tf.zeros([4, 2]), tf.zeros([4, 1], tf.int32)).shape
      TensorShape([4])
    """

    def __init__(self, numeric_dim: int, num_categories: Sequence[int], kind: str = "maf",
                 context_dim: int | None = None, categorical_hidden_units: Sequence[int] = (64,),
                 categorical_order="natural", oov_probability: float | None = None, **flow_options):
        dtype = flow_options.get("dtype", "float32")
        super().__init__(name=flow_options.pop("name", "mixed_density"), dtype=dtype)
        self._arguments = dict(numeric_dim=int(numeric_dim), num_categories=[int(k) for k in num_categories],
                               kind=kind, context_dim=context_dim,
                               categorical_hidden_units=[int(h) for h in categorical_hidden_units],
                               categorical_order=categorical_order,
                               oov_probability=None if oov_probability is None else float(oov_probability),
                               **flow_options)
        self.context_dim = None if context_dim is None else int(context_dim)
        self.categorical = CategoricalMADE(num_categories, categorical_hidden_units, order=categorical_order,
                                           context_dim=self.context_dim, oov_probability=oov_probability,
                                           name="categorical", dtype=dtype)
        self.flow: FlowModel = build_flow(kind, numeric_dim,
                                          context_dim=self.categorical.one_hot_dim + (self.context_dim or 0),
                                          **flow_options)
        self._nll_tracker = tf_keras.metrics.Mean(name="nll")
        self._loss_tracker = tf_keras.metrics.Mean(name="loss")

    def get_config(self) -> dict:
        """The constructor's arguments (JSON-ready): `from_config` rebuilds the architecture."""
        return dict(self._arguments)

    @classmethod
    def from_config(cls, config: dict) -> "MixedDensity":
        return cls(**config)

    @property
    def config(self):
        """The numeric flow's `FlowConfig` (its kind, widths and batch-norm settings)."""
        return self.flow.config

    @property
    def event_dim(self) -> int:
        """D, the number of numeric columns."""
        return self.flow.event_dim

    @property
    def batch_norm_layers(self) -> list:
        return self.flow.batch_norm_layers

    @property
    def needs_data_initialisation(self) -> bool:
        """Whether the numeric flow awaits its data-dependent initialisation (a fresh Glow)."""
        return self.flow.needs_data_initialisation

    def initialise_from_data(self, numeric, categorical_codes, context=None) -> bool:
        """`FlowModel.initialise_from_data` of the numeric flow, given the batch's categories."""
        return self.flow.initialise_from_data(numeric, self.flow_context(categorical_codes, context))

    def set_batch_norm_statistics(self, data) -> None:
        """`FlowModel.set_batch_norm_statistics` of the numeric flow over a finite dataset of
        (numeric, codes[, context]) batches, each with its categories' flow context."""
        self.flow.set_batch_norm_statistics(data.map(
            lambda *batch: (self._unpack(batch)[0], self.flow_context(*self._unpack(batch)[1:]))))

    def frozen(self) -> "MixedDensity":
        """An inference copy (`FlowModel.frozen`): same weights, every mask multiplied into its
        kernel once, not trainable."""
        return freeze_into(MixedDensity.from_config(dict(self.get_config(), name=f"{self.name}_frozen")), self)

    def _context(self, context, batch):
        """None, or a [batch, C] tensor; a single context [C] or [1, C] is broadcast."""
        if context is None:
            return None
        if self.context_dim is None:
            raise ValueError("This MixedDensity was built without `context_dim` but a context was given.")
        context = tf.reshape(tf.convert_to_tensor(context, self.dtype), [-1, self.context_dim])
        return tf.broadcast_to(context, [batch, self.context_dim])

    def flow_context(self, categorical_codes, context=None) -> tf.Tensor:
        """The numeric flow's context: [onehot(codes), context] ([batch, sum K_i + C])."""
        one_hot = self.categorical.one_hot(tf.cast(categorical_codes, tf.int32))
        context = self._context(context, tf.shape(one_hot)[0])
        return one_hot if context is None else tf.concat([one_hot, context], axis=-1)

    def categorical_log_prob(self, categorical_codes, context=None) -> tf.Tensor:
        r"""\(\log P(s \mid y)\), nats [batch]."""
        codes = tf.convert_to_tensor(categorical_codes)
        return self.categorical.log_prob(codes, self._context(context, tf.shape(codes)[0]))

    def numeric_log_prob(self, numeric, categorical_codes, context=None, training=False) -> tf.Tensor:
        r"""\(\log p(x \mid \mathrm{onehot}(s), y)\), a log-density w.r.t. Lebesgue measure [batch]."""
        return self.flow.log_prob(numeric, context=self.flow_context(categorical_codes, context), training=training)

    def log_prob(self, numeric, categorical_codes, context=None, training=False) -> tf.Tensor:
        """The mixed row's exact log-density [batch] (module docstring)."""
        return (self.categorical_log_prob(categorical_codes, context)
                + self.numeric_log_prob(numeric, categorical_codes, context, training))

    def call(self, inputs, training=False):
        return self.log_prob(*inputs, training=training)

    def sample(self, n: int, seed=None, context=None) -> tuple[tf.Tensor, tf.Tensor]:
        """(numeric [n, D], codes [n, columns]): categories first, then x given them.

        `seed`: an int or a shape-[2] int tensor (the same seed gives the same rows); a context is
        [n, C] or one [C] broadcast to every row.
        """
        if seed is None:
            seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
        elif isinstance(seed, int):
            seed = tf.constant([seed, 0], tf.int32)
        categorical_seed, numeric_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        context = self._context(context, n)
        codes = self.categorical.sample(n, categorical_seed, context)
        numeric = self.flow.sample(n, seed=numeric_seed, context=self.flow_context(codes, context))
        return numeric, codes

    # ----- training -------------------------------------------------------------------------
    @staticmethod
    def _unpack(data):
        """(numeric, codes, context or None) of a batch; Keras wraps an array tuple as (x,)."""
        if len(data) == 1:
            data = data[0]
        numeric, codes, *rest = data
        return numeric, codes, (rest[0] if rest else None)

    @property
    def metrics(self):
        return [self._loss_tracker, self._nll_tracker]

    @staticmethod
    def _nll(model, data):
        """(loss, value) of `gradient_step`: the batch's mean negative log-likelihood, twice."""
        numeric, codes, context = model._unpack(data)
        nll = -tf.reduce_mean(model.log_prob(numeric, codes, context, training=True))
        return nll, nll

    def train_step(self, data):
        loss, nll = gradient_step(self, self.optimizer, self._nll, data, float(self.flow.config.l2))
        self._nll_tracker.update_state(nll)
        self._loss_tracker.update_state(loss)
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, data):
        numeric, codes, context = self._unpack(data)
        nll = -tf.reduce_mean(self.log_prob(numeric, codes, context))
        self._nll_tracker.update_state(nll)
        self._loss_tracker.update_state(nll)
        return {m.name: m.result() for m in self.metrics}

    def fit(self, x=None, *args, **kwargs):
        """Keras `fit` on a finite tf.data.Dataset of (numeric, codes[, context]) batches; then, as
        `FlowModel.fit`, the flow's batch norm takes the whole training set's statistics."""
        flow = self.flow
        statistics = bool(flow.batch_norm_layers) and flow.config.batch_norm_statistics == "train_set"
        if statistics and (not isinstance(x, tf.data.Dataset) or x.cardinality() == tf.data.INFINITE_CARDINALITY):
            raise ValueError("MixedDensity.fit needs a finite tf.data.Dataset of (numeric, codes[, context]) "
                             f"batches to set batch norm's statistics afterwards, but got {type(x).__name__}.")
        history = super().fit(x, *args, **kwargs)
        if statistics:
            self.set_batch_norm_statistics(x)
        return history
