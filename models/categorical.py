r"""A MADE over categorical columns: exact probabilities of discrete rows (Germain et al. 2015).

A row \(s = (s_1, \dots, s_n)\) has column i in \(\{0, \dots, K_i - 1\}\). In an order
\(o\) (a permutation of the columns, `models.masks.input_order`) the chain rule gives

```math
\log P(s \mid y) = \sum_{i=1}^{n} \log \operatorname{softmax}\big(\ell_i(s_{<_o i}, y)\big)_{s_i},
```

with \(\ell_i \in \mathbb{R}^{K_i}\) the logits of column i, which the masks let depend only on the
columns before i in the order (and on an optional context y). This is MADE with softmax outputs,
the discrete case of Germain et al. (2015), section 3 ("the outputs ... can be any distribution,
e.g. a softmax for multinomial inputs"); its inputs are the columns one-hot, \(\sum_i K_i\) units
in all. The probabilities of all \(\prod_i K_i\) rows sum to 1 whatever the weights are.

A column's last category may be an out-of-vocabulary bucket (the codes of categories unseen in
training) of fixed probability \(\varepsilon\) (``oov_probability``) instead of a learnt logit:

```math
P(s_i = K_i - 1 \mid \cdot) = \varepsilon, \qquad
P(s_i = k \mid \cdot) = (1 - \varepsilon)\, \operatorname{softmax}\big(\ell_i[0{:}K_i - 1]\big)_k
\quad (k < K_i - 1),
```

still exact and summing to 1 (\(\varepsilon + (1 - \varepsilon) \cdot 1\) per column). No training row
holds the bucket, so a learnt logit only shrinks as training goes on and keeps whatever mass it
has when training stops; `rule_of_succession` gives \(\varepsilon\) from the training rows.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf
import tf_keras

from tfflows.models.made import MaskedDense
from tfflows.models.masks import input_order, made_masks

__all__ = ["CategoricalMADE", "rule_of_succession"]


def rule_of_succession(num_rows: int) -> float:
    r"""Laplace's rule of succession for a category none of ``num_rows`` rows holds:
    \(\varepsilon = (0 + 1) / (n + 2)\), the posterior mean of its probability under a uniform
    prior after n rows without it (the out-of-vocabulary bucket of a vocabulary built on those rows).

    Example:
      >>> rule_of_succession(2398)
      0.0004166666666666667
    """
    if int(num_rows) < 0:
        raise ValueError(f"`num_rows` must be >= 0, but is {num_rows}.")
    return 1.0 / (int(num_rows) + 2)


class CategoricalMADE(tf_keras.layers.Layer):
    r"""MADE with one softmax per categorical column: codes [batch, n] -> exact log P [batch] (nats).

    Every one-hot unit of column i carries the column's degree m(i) (its position in `order`), and
    column i's K_i logits carry degree m(i) too, so `models.masks.made_masks` on the column degrees
    gives the masks once each row (input side) and each column (output side) is repeated K_i
    times:

    ```math
    \frac{\partial \ell_i}{\partial\, \mathrm{onehot}(s_j)} = 0 \quad \text{unless } m(j) < m(i).
    ```

    A context y [batch, C] enters the first hidden layer through an unmasked kernel, as in
    `models.made.MADE`, and the logits through a second one: the first column in the order sees
    no hidden unit (its degree is the lowest), so only the direct path lets P(s_first | y) depend
    on y. Density evaluation is one pass; sampling is ancestral, one pass per column in the order.

    Args:
      num_categories: K_i of each column, each >= 1 (a column with K_i = 1 has probability 1).
      hidden_units: widths of the hidden layers, each >= n - 1 (`models.masks.hidden_degrees`).
      order: "natural", "reversed", "random" or a permutation of 1..n (the column degrees).
      activation: hidden activation.
      context_dim: size of the conditioning vector, or None.
      seed: seed of a "random" order.
      oov_probability: \(\varepsilon \in (0, 1)\): every column's last category is an
        out-of-vocabulary bucket of this fixed probability (module docstring; each K_i >= 2), its
        logit unused; None: every category's logit is learnt.

    Example:
      >>> made = CategoricalMADE([2, 3, 4], hidden_units=[8])
      >>> made.log_prob(tf.constant([[1, 2, 0]])).shape
      TensorShape([1])
    """

    def __init__(self, num_categories: Sequence[int], hidden_units: Sequence[int] = (64,), order="natural",
                 activation="relu", context_dim: int | None = None, seed: int = 0,
                 oov_probability: float | None = None, **kwargs):
        super().__init__(**kwargs)
        self.num_categories = [int(k) for k in num_categories]
        if not self.num_categories or min(self.num_categories) < 1:
            raise ValueError(f"`num_categories` must be a non-empty list of counts >= 1, but is {list(num_categories)}.")
        if context_dim is not None and int(context_dim) < 1:
            raise ValueError(f"`context_dim` must be a positive int or None, but is {context_dim}.")
        if oov_probability is not None and not (0.0 < oov_probability < 1.0 and min(self.num_categories) >= 2):
            raise ValueError(f"`oov_probability` must be in (0, 1) with every K_i >= 2, but is {oov_probability} "
                             f"with K = {self.num_categories}.")
        self.oov_probability = None if oov_probability is None else float(oov_probability)
        self.num_columns = len(self.num_categories)
        self.max_categories = max(self.num_categories)
        self.context_dim = None if context_dim is None else int(context_dim)
        self.hidden_units = [int(h) for h in hidden_units]
        self.degrees_in = input_order(self.num_columns, order, seed)
        hidden_masks, output_mask, _ = made_masks(self.degrees_in, self.hidden_units)
        # One-hot units of column i repeat row i of the first mask; the output is laid out
        # [n, K_max] (column-major, like MADE's [D, P]), padded categories masked off entirely.
        per_unit = np.repeat(np.arange(self.num_columns), self.num_categories)
        out_mask = np.repeat(output_mask, self.max_categories, axis=1)
        if hidden_masks:
            hidden_masks[0] = hidden_masks[0][per_unit]
        else:
            out_mask = out_mask[per_unit]
        valid = np.arange(self.max_categories)[None, :] < np.asarray(self.num_categories)[:, None]  # [n, K_max]
        # The categories with a logit: the valid ones, less each column's bucket when its probability is fixed.
        self.oov = (np.arange(self.max_categories)[None, :] == np.asarray(self.num_categories)[:, None] - 1) \
            & (self.oov_probability is not None)
        self.learnt = valid & ~self.oov
        out_mask = out_mask * self.learnt.reshape(1, -1)
        self.activation = tf_keras.activations.get(activation)
        self.hidden_layers = [MaskedDense(mask, name=f"hidden_{i}", dtype=self.dtype)
                              for i, mask in enumerate(hidden_masks)]
        self.output_layer = MaskedDense(out_mask, kernel_initializer=tf_keras.initializers.VarianceScaling(0.01),
                                        name="output", dtype=self.dtype)
        self.context_layers = []
        if self.context_dim:
            widths = self.hidden_units[:1] + [self.num_columns * self.max_categories]
            self.context_layers = [tf_keras.layers.Dense(width, use_bias=False, name=f"context_{i}", dtype=self.dtype)
                                   for i, width in enumerate(widths)]
        width = int(sum(self.num_categories))
        for layer in self.hidden_layers:
            layer.build((None, width))
            width = layer.units
        self.output_layer.build((None, width))
        for layer in self.context_layers:
            layer.build((None, self.context_dim))

    @property
    def one_hot_dim(self) -> int:
        r"""\(\sum_i K_i\), the width of `one_hot`'s output (the flow's context in `MixedDensity`)."""
        return int(sum(self.num_categories))

    def one_hot(self, codes) -> tf.Tensor:
        """The columns one-hot and concatenated: codes [batch, n] -> [batch, sum K_i]."""
        codes = tf.convert_to_tensor(codes)
        return tf.concat([tf.one_hot(codes[:, i], k, dtype=self.dtype) for i, k in enumerate(self.num_categories)],
                         axis=-1)

    def check_codes(self, codes) -> None:
        """Raises ValueError naming the column and value when a code is outside 0..K_i-1 (eager
        only: `tf.one_hot` maps an out-of-range code to a zero row without a word)."""
        values = np.asarray(codes)
        if values.ndim != 2 or values.shape[1] != self.num_columns:
            raise ValueError(f"`categorical_codes` must have shape [batch, {self.num_columns}], but has {values.shape}.")
        for i, k in enumerate(self.num_categories):
            bad = (values[:, i] < 0) | (values[:, i] >= k)
            if bad.any():
                raise ValueError(f"`categorical_codes` column {i} must be in 0..{k - 1}, but holds "
                                 f"{values[bad.argmax(), i]} (row {int(bad.argmax())}).")

    def _context_terms(self, context) -> list:
        """The context's terms of the first hidden layer (if any) and of the logits."""
        if not self.context_layers:
            if context is not None:
                raise ValueError("This CategoricalMADE was built without `context_dim` but a context was given.")
            return [0.0, 0.0]
        if context is None:
            raise ValueError(f"This CategoricalMADE is conditional (context_dim={self.context_dim}); pass `context`.")
        context = tf.convert_to_tensor(context, self.dtype)
        terms = [layer(context) for layer in self.context_layers]
        return terms if self.hidden_layers else [0.0] + terms

    def conditional_log_probs(self, codes, context=None) -> tf.Tensor:
        r"""\(\log P(s_i = k \mid s_{<i}, y)\) of every column and category: [batch, n, K_max], -inf beyond
        K_i: \(\log \operatorname{softmax}(\ell_i)\), or with ``oov_probability`` \(\log \varepsilon\) at the
        bucket and \(\log(1 - \varepsilon) + \log \operatorname{softmax}(\ell_i[0{:}K_i - 1])\) before it."""
        hidden_term, output_term = self._context_terms(context)
        h = self.one_hot(codes)
        for i, layer in enumerate(self.hidden_layers):
            pre = layer(h)
            h = self.activation(pre + hidden_term if i == 0 else pre)
        logits = self.output_layer(h) + output_term
        logits = tf.reshape(logits, [-1, self.num_columns, self.max_categories])
        logits = tf.where(tf.constant(self.learnt), logits, tf.constant(-np.inf, logits.dtype))
        if self.oov_probability is None:
            return tf.nn.log_softmax(logits, axis=-1)
        epsilon = self.oov_probability
        return tf.where(tf.constant(self.oov), tf.constant(np.log(epsilon), logits.dtype),
                        tf.nn.log_softmax(logits, axis=-1) + tf.constant(np.log1p(-epsilon), logits.dtype))

    def log_prob(self, codes, context=None) -> tf.Tensor:
        r"""\(\log P(s \mid y)\) in nats, [batch]: the sum of each column's log-softmax at its code."""
        if tf.executing_eagerly():
            self.check_codes(codes)
        codes = tf.cast(codes, tf.int32)
        table = self.conditional_log_probs(codes, context)
        return tf.reduce_sum(tf.gather(table, codes, axis=2, batch_dims=2), axis=-1)

    def call(self, codes, context=None):
        return self.log_prob(codes, context)

    def sample(self, n: int, seed, context=None) -> tf.Tensor:
        """n rows of codes [n, columns] (int32), ancestral: column by column in the order.

        Column i takes the first category whose cumulative probability exceeds a uniform draw
        u_i; the draws come from `seed` (an int or a shape-[2] int tensor), so the same seed gives
        the same rows. A context is [n, C] (one per row) or [C] / [1, C] (broadcast).
        """
        if isinstance(seed, int):
            seed = tf.constant([seed, 0], tf.int32)
        if context is not None:
            context = tf.broadcast_to(tf.reshape(tf.convert_to_tensor(context, self.dtype), [-1, self.context_dim]),
                                      [n, self.context_dim])
        uniform = tf.random.stateless_uniform([n, self.num_columns], seed, dtype=self.dtype)
        # Columns not drawn yet hold 0: the masks keep them from the logits being read.
        columns = [tf.zeros([n], tf.int32)] * self.num_columns
        for column in np.argsort(self.degrees_in):  # earliest in the order first
            k = self.num_categories[column]
            table = self.conditional_log_probs(tf.stack(columns, axis=1), context)
            below = tf.cumsum(tf.exp(table[:, column, :k]), axis=-1) < uniform[:, column:column + 1]
            # min(., K_i - 1): rounding can leave the last cumulative sum just under u_i.
            columns[column] = tf.minimum(tf.reduce_sum(tf.cast(below, tf.int32), axis=-1), k - 1)
        return tf.stack(columns, axis=1)
