r"""The preprocessing as one invertible object: raw ``x`` <-> model ``z``, with its log-determinant.

Conventions: ``x`` is the raw feature (dequantised already for discrete data: the noise
``x + U[0, 1)`` is drawn per epoch in the training input pipeline by `dequantize`, never
here), ``z`` the model's feature, and ``log_det = log|det dz/dx|`` per row, so that

```math
\log p_x(x) = \log p_z(z) + \mathrm{log\_det}.
```

`Preprocessing` holds the method and its constants; the transform component writes them to
``preprocessing.json`` beside the tf.Transform graph (`read_preprocessing` loads them), the
graph's ``preprocessing_fn`` is `Preprocessing.forward` (`make_preprocessing_fn`), export
serves `Preprocessing.inverse` and the quality benchmark calls both in NumPy. The
standardisation's statistics are one `Moments` computation, merged batch by batch in Beam and
used as is by the benchmark.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

if TYPE_CHECKING:
    import apache_beam as beam

__all__ = ["CATEGORIES", "CONTEXT_CATEGORIES", "CONTEXT_PREPROCESSING", "METHODS", "OOV_CATEGORY", "PREPROCESSING_FILE",
           "Moments", "Preprocessing", "make_preprocessing_fn", "network_context", "network_context_dim",
           "read_categories", "read_context_categories", "read_context_preprocessing", "read_preprocessing",
           "vocabulary_file"]

METHODS = ("logit", "standardize", "identity")
PREPROCESSING_FILE = "preprocessing.json"  # beside the transform graph
CONTEXT_PREPROCESSING = "context"  # its key holding the context's standardisation (conditional datasets)
CATEGORIES = "categories"  # its key holding the categorical columns' vocabularies (mixed datasets)
CONTEXT_CATEGORIES = "context_categories"  # and the categorical context columns' (conditional datasets)
OOV_CATEGORY = "<unseen>"  # what a sample of the out-of-vocabulary bucket is called


@dataclasses.dataclass(frozen=True)
class Moments:
    """Row count, mean and sum of squared deviations ``m2`` per column, float64.

    Two parts merge in any order and grouping (Chan, Golub and LeVeque 1979, the pairwise
    update, stable where the sum of squares is not): with
    ``n = n_a + n_b`` and ``delta = mean_b - mean_a``,

        mean = mean_a + delta n_b / n,    m2 = m2_a + m2_b + delta^2 n_a n_b / n,

    so Beam can combine batches on any number of workers. ``std`` is the population standard
    deviation ``sqrt(m2 / n)`` (the MAF code's, and tf.Transform's ``tft.var``).
    """

    count: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def empty(cls, event_dim: int) -> "Moments":
        return cls(0, np.zeros(event_dim), np.zeros(event_dim))

    @classmethod
    def of(cls, rows) -> "Moments":
        """The moments of a batch ``rows`` [N, D]."""
        rows = np.asarray(rows, np.float64)
        mean = rows.mean(axis=0)
        return cls(len(rows), mean, ((rows - mean) ** 2).sum(axis=0))

    def merge(self, other: "Moments") -> "Moments":
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        delta = other.mean - self.mean
        return Moments(n, self.mean + delta * (other.count / n),
                       self.m2 + other.m2 + delta ** 2 * (self.count * other.count / n))

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / self.count)


def _floats(values) -> Optional[Tuple[float, ...]]:
    return None if values is None else tuple(float(v) for v in np.asarray(values, np.float64).reshape(-1))


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    r"""An invertible map ``z = f(x)`` of rows, with ``log|det df/dx|`` (float64 inside).

    Methods (``D = event_dim``; every map is elementwise, so the Jacobian is diagonal):

    - ``"logit"`` (discrete data in ``[0, L)`` after dequantisation, ``L = num_levels``,
        \(\lambda\) = ``logit_lambda``): with \(y = \lambda + (1 - 2\lambda)\, x / L\),

        ```math
        \begin{aligned}
        z &= \operatorname{logit}(y) = \log y - \log(1 - y), \\
        \mathrm{log\_det} &= \sum_i \big[\log(1 - 2\lambda) - \log L - \log y_i - \log(1 - y_i)\big], \\
        x &= \frac{L \left(\operatorname{sigmoid}(z) - \lambda\right)}{1 - 2\lambda}.
        \end{aligned}
        ```

        Real NVP (Dinh et al. 2017, section 4.1) models \(\operatorname{logit}(\alpha + (1 - \alpha)\, x / 256)\);
        this is the MAF paper's symmetric form (Papamakarios et al. 2017, appendix E.2,
        eqs. 14-15) with 256 generalised to ``L``. ``y`` stays in \([\lambda, 1 - \lambda)\), so ``z``
        is finite for \(\lambda > 0\).

    - ``"standardize"`` (continuous data): \(z = (x - \mathrm{mean}) / \mathrm{std}\),
        \(\mathrm{log\_det} = -\sum_i \log \mathrm{std}_i\), \(x = z\, \mathrm{std} + \mathrm{mean}\) (mean and
        population std of the analysed splits, `Moments`).

    - ``"identity"``: ``z = x``, ``log_det = 0``.

    Build one with `Preprocessing.logit`, `Preprocessing.standardize` or
    `Preprocessing.identity`; `to_json` / `from_json` carry the constants exactly (JSON floats
    are float64 reprs).

    Example::

        prep = Preprocessing.logit(event_dim=2, num_levels=256, logit_lambda=1e-6)
        z, log_det = prep.forward([[0.5, 255.5]])   # float64 in, float64 out
        x = prep.inverse(z)                          # [[0.5, 255.5]] up to rounding

    Attributes:
      method: one of `METHODS`.
      event_dim: D, the number of columns.
      num_levels: L (logit only, else None).
      logit_lambda: \(\lambda\) in ``[0, 0.5)`` (logit only, else None).
      mean, std: D floats each (standardize only, else None); every std > 0.
    """

    method: str
    event_dim: int
    num_levels: Optional[int] = None
    logit_lambda: Optional[float] = None
    mean: Optional[Tuple[float, ...]] = None
    std: Optional[Tuple[float, ...]] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", _floats(self.mean))
        object.__setattr__(self, "std", _floats(self.std))
        if self.method not in METHODS:
            raise ValueError(f"`method` must be one of {METHODS}, but is {self.method!r}")
        if isinstance(self.event_dim, bool) or not isinstance(self.event_dim, (int, np.integer)) \
                or self.event_dim < 1:
            raise ValueError(f"`event_dim` must be a positive int, but is {self.event_dim!r}")
        logit = self.method == "logit"
        if logit and (not isinstance(self.num_levels, (int, np.integer)) or self.num_levels < 2):
            raise ValueError(f"`num_levels` must be an int >= 2 for the logit, but is {self.num_levels!r}")
        if logit and (self.logit_lambda is None or not 0.0 <= self.logit_lambda < 0.5):
            raise ValueError(f"`logit_lambda` must be in [0, 0.5) for the logit, but is {self.logit_lambda!r}")
        if not logit and (self.num_levels, self.logit_lambda) != (None, None):
            raise ValueError(f"`num_levels` and `logit_lambda` belong to the logit only, but method is "
                             f"{self.method!r}; leave them None")
        if self.method == "standardize":
            for name in ("mean", "std"):
                values = getattr(self, name)
                if values is None or len(values) != self.event_dim:
                    raise ValueError(f"`{name}` must hold event_dim = {self.event_dim} floats, but is {values!r}")
            assert self.std is not None  # checked just above
            if not all(s > 0 and math.isfinite(s) for s in self.std):
                raise ValueError(f"`std` must be finite and > 0 in every column, but is {self.std!r}")
        elif (self.mean, self.std) != (None, None):
            raise ValueError(f"`mean` and `std` belong to 'standardize' only, but method is {self.method!r}; "
                             "leave them None")

    @classmethod
    def logit(cls, event_dim: int, num_levels: int, logit_lambda: float) -> "Preprocessing":
        return cls("logit", event_dim, num_levels=num_levels, logit_lambda=logit_lambda)

    @classmethod
    def standardize(cls, mean, std) -> "Preprocessing":
        mean = _floats(mean)
        return cls("standardize", len(mean), mean=mean, std=std)

    @classmethod
    def identity(cls, event_dim: int) -> "Preprocessing":
        return cls("identity", event_dim)

    # ------------------------------------------------------------------ maps

    def forward(self, x) -> Tuple[tf.Tensor, tf.Tensor]:
        """``(z [B, D], log_det [B])`` of rows ``x`` [B, D], in the dtype of ``x`` (float64
        inside; NumPy and Python input is read as float64)."""
        x, dtype = _as_float(x)
        x64 = tf.cast(x, tf.float64)
        if self.method == "logit":
            assert self.num_levels is not None and self.logit_lambda is not None  # __post_init__ (frozen)
            z, log_det = _logit(x64, self.num_levels, self.logit_lambda)
        elif self.method == "standardize":
            z, log_det = _standardize(x64, self._constant(self.mean), self._constant(self.std))
        else:
            z, log_det = x64, tf.zeros(tf.shape(x64)[:1], tf.float64)
        return tf.cast(z, dtype), tf.cast(log_det, dtype)

    def inverse(self, z) -> tf.Tensor:
        """Raw rows ``x`` [B, D] of model rows ``z`` [B, D], in the dtype of ``z``."""
        z, dtype = _as_float(z)
        z64 = tf.cast(z, tf.float64)
        if self.method == "logit":
            assert self.num_levels is not None and self.logit_lambda is not None  # __post_init__ (frozen)
            lam = self.logit_lambda
            x = self.num_levels * (tf.sigmoid(z64) - lam) / (1.0 - 2.0 * lam)
        elif self.method == "standardize":
            x = z64 * self._constant(self.std) + self._constant(self.mean)
        else:
            x = z64
        return tf.cast(x, dtype)

    def forward_log_det_jacobian(self, x) -> tf.Tensor:
        """``log|det dz/dx|`` [B] of rows ``x`` [B, D], in the dtype of ``x``."""
        return self.forward(x)[1]

    @staticmethod
    def _constant(values) -> tf.Tensor:
        return tf.constant(values, tf.float64)

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v, tuple) else v)
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}

    @classmethod
    def from_dict(cls, values: dict) -> "Preprocessing":
        """From `to_dict`'s keys; other keys (the transform's run information) are ignored."""
        kwargs: Dict[str, Any] = {f.name: values.get(f.name) for f in dataclasses.fields(cls)}
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Preprocessing":
        return cls.from_dict(json.loads(text))


def _as_float(values) -> Tuple[tf.Tensor, tf.DType]:
    if not tf.is_tensor(values):
        values = np.asarray(values)
        values = values if values.dtype in (np.float32, np.float64) else values.astype(np.float64)
    values = tf.convert_to_tensor(values)
    return values, values.dtype


def _logit(x64: tf.Tensor, num_levels: int, lam: float) -> Tuple[tf.Tensor, tf.Tensor]:
    y = lam + (1.0 - 2.0 * lam) * x64 / float(num_levels)
    log_y, log_1my = tf.math.log(y), tf.math.log1p(-y)
    per_dim = math.log(1.0 - 2.0 * lam) - math.log(num_levels) - log_y - log_1my
    return log_y - log_1my, tf.reduce_sum(per_dim, axis=-1)


def _standardize(x64: tf.Tensor, mean: tf.Tensor, std: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    return (x64 - mean) / std, tf.fill(tf.shape(x64)[:1], -tf.reduce_sum(tf.math.log(std)))


def read_preprocessing(transform_graph_uri: str) -> Preprocessing:
    """The `Preprocessing` written beside a TransformGraph artifact (``preprocessing.json``).

    Raises:
      ValueError: a folder written before the constants were recorded (a standardisation
        without ``mean``/``std``): its graph is still valid, but the inverse needs the
        constants, so the transform must be run again.
    """
    path = os.path.join(transform_graph_uri, PREPROCESSING_FILE)
    with tf.io.gfile.GFile(path) as f:
        values = json.load(f)
    if values.get("method") == "standardize" and values.get("mean") is None:
        raise ValueError(f"{path}: `mean` and `std` are missing (written by an older transform); "
                         "run the transform component again on the same examples")
    if values.get("method") != "logit":  # older files recorded the dataset's levels for every method
        values = dict(values, num_levels=None, logit_lambda=None)
    return Preprocessing.from_dict(values)


def read_context_preprocessing(transform_graph_uri: str) -> Optional[Preprocessing]:
    """The standardisation of the context (``"context"`` in ``preprocessing.json``: the train
    split's mean and std, the graph's constants), or None for an unconditional dataset.

    Raw context ``c`` becomes the network's context ``forward(c)[0]``; its log-determinant is not
    part of any density (p(x | c) is a density of x only)."""
    values = _read_recorded(transform_graph_uri, CONTEXT_PREPROCESSING)
    return None if values is None else Preprocessing.from_dict(values)


def _read_recorded(transform_graph_uri: str, key: str):
    with tf.io.gfile.GFile(os.path.join(transform_graph_uri, PREPROCESSING_FILE)) as f:
        return json.load(f).get(key)


def read_categories(transform_graph_uri: str) -> Optional[Dict[str, List[str]]]:
    """The vocabulary of each modelled categorical column, ``{name: [category, ...]}`` in code
    order (``"categories"`` in ``preprocessing.json``), or None for a dataset without them.

    Column i's code is the category's index in its vocabulary, and ``len(vocabulary)`` (the one
    out-of-vocabulary bucket) for a category unseen in the analysed splits: K_i = len + 1 codes."""
    return _read_recorded(transform_graph_uri, CATEGORIES)


def read_context_categories(transform_graph_uri: str) -> Optional[Dict[str, List[str]]]:
    """The vocabulary of each categorical context column (``"context_categories"`` in
    ``preprocessing.json``, coded as `read_categories`' are), or None for a dataset without them."""
    return _read_recorded(transform_graph_uri, CONTEXT_CATEGORIES)


def network_context(outputs: Dict[str, tf.Tensor], context_categories: Optional[Dict[str, List[str]]]
                    ) -> Optional[tf.Tensor]:
    """The network's context of the transform graph's ``outputs``: the standardised numeric context
    (``"context"``), then the one-hot code of each categorical context column (``"context_codes"``)
    over its vocabulary and out-of-vocabulary bucket (``context_categories``: K_i = len + 1), float32
    [B, C_net]; None without context. Training, evaluation and the SavedModel all call this one."""
    parts = [outputs["context"]] if "context" in outputs else []
    if context_categories:
        codes = outputs["context_codes"]
        parts += [tf.one_hot(codes[:, i], len(vocabulary) + 1, dtype=tf.float32)
                  for i, vocabulary in enumerate(context_categories.values())]
    return tf.concat(parts, axis=1) if parts else None


def network_context_dim(transform_graph_uri: str) -> Optional[int]:
    """C_net, the width of `network_context` of the graph's dataset (None: unconditional)."""
    numeric = read_context_preprocessing(transform_graph_uri)
    width = (numeric.event_dim if numeric else 0) + sum(
        len(v) + 1 for v in (read_context_categories(transform_graph_uri) or {}).values())
    return width or None


def vocabulary_file(column: int, key: str = "categorical") -> str:
    """The transform graph's vocabulary asset of column ``column`` of feature ``key``
    (``categorical`` or ``context_categorical``; by position: a column's name need not be a valid
    file name)."""
    return f"{key}_{column}"


def make_preprocessing_fn(preprocessing: Optional[Preprocessing], event_dim: int,
                          moments: Optional[beam.PTransform] = None, context_dim: Optional[int] = None,
                          context_moments: Optional[beam.PTransform] = None, num_categorical: int = 0,
                          num_context_categorical: int = 0) -> Callable[[Dict[str, tf.Tensor]], Dict]:
    """The tf.Transform ``preprocessing_fn``: ``{"x"} -> {"z", "log_det"}``, float32; with a
    context, ``{"x", "context"} -> {"z", "log_det", "context"}``, the context standardised; with
    categorical columns, ``"categorical"`` (strings [B, S]) in and ``"codes"`` (int64 [B, S]) out:
    each column's vocabulary of the analysed splits (`tft.compute_and_apply_vocabulary`, by
    frequency) and one out-of-vocabulary bucket, code ``len(vocabulary)``, for categories it lacks. With categorical
    context columns, ``"context_categorical"`` (strings [B, Sc]) in and ``"context_codes"`` (int64
    [B, Sc], coded the same way) out; `network_context` one-hot encodes them beside the numeric
    context (outside the graph, where the vocabularies' sizes are known).

    Args:
      preprocessing: the map when its constants are known before the analysis (logit,
        identity): the graph is `Preprocessing.forward`. None for the standardisation.
      event_dim: D.
      moments: standardisation only: a Beam PTransform (tf.Transform's
        ``ptransform_analyzer``) from float64 batches ``(x [B, D],)`` of the analysed rows to
        two single-element PCollections, mean [D] and std [D]. The graph holds its outputs as
        float64 constants, so the executor records the same values (`Preprocessing.standardize`)
        and `Preprocessing.forward` computes what the graph computes.
      context_dim: C, the width of feature ``context``; None: no context.
      context_moments: with ``context_dim``: the same kind of analyzer for the context's mean [C]
        and std [C] (the network's context is the standardised raw context, whatever x's map).
      num_categorical: S, the width of feature ``categorical`` (0: none).
      num_context_categorical: Sc, the width of feature ``context_categorical`` (0: none).
    """
    if (preprocessing is None) == (moments is None):
        raise ValueError("pass `preprocessing` (logit, identity) or `moments` (standardize), not both or neither")
    if (context_dim is None) != (context_moments is None):
        raise ValueError("pass `context_dim` and `context_moments` together, or neither")

    def standardized_context(inputs: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        if context_moments is None:
            return {}
        c64 = tf.cast(inputs["context"], tf.float64)
        mean, std = tft.experimental.ptransform_analyzer(
            [c64], context_moments, output_dtypes=[tf.float64, tf.float64],
            output_shapes=[[context_dim], [context_dim]], name="context_moments")
        return {"context": tf.cast(_standardize(c64, mean, std)[0], tf.float32)}

    def category_codes(inputs: Dict[str, tf.Tensor], key: str, width: int, out: str) -> Dict[str, tf.Tensor]:
        if not width:
            return {}
        return {out: tf.stack([tft.compute_and_apply_vocabulary(
            inputs[key][:, i], num_oov_buckets=1, vocab_filename=vocabulary_file(i, key))
            for i in range(width)], axis=1)}

    def preprocessing_fn(inputs: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        x = tf.cast(inputs["x"], tf.float32)
        others = {**standardized_context(inputs), **category_codes(inputs, "categorical", num_categorical, "codes"),
                  **category_codes(inputs, "context_categorical", num_context_categorical, "context_codes")}
        if preprocessing is not None:
            z, log_det = preprocessing.forward(x)
            return {"z": z, "log_det": log_det, **others}
        x64 = tf.cast(x, tf.float64)
        mean, std = tft.experimental.ptransform_analyzer(
            [x64], moments, output_dtypes=[tf.float64, tf.float64],
            output_shapes=[[event_dim], [event_dim]], name="moments")
        z, log_det = _standardize(x64, mean, std)
        return {"z": tf.cast(z, tf.float32), "log_det": tf.cast(log_det, tf.float32), **others}

    return preprocessing_fn
