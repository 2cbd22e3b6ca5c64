"""Typed configuration of the tfflows components: one plain dataclass per component.

Every component receives the dataclass that describes its part of a run. The classes are
frozen, hold only JSON-friendly values (str, int, float, bool, None, tuples) and round-trip
through ``dataclasses.asdict`` / ``Class(**dict)`` (see ``to_json`` / ``from_json`` of each),
which is how the TFX wrappers pass them as execution properties.

`build_config` turns a plain dict (YAML, ``--set``) into such a dataclass strictly: unknown
fields, values of the wrong type (checked against the type hints) and the classes' own
``__post_init__`` checks all end in one `ConfigError` line naming the field path, what it expects
and the fix. It imports nothing heavy, so the CLI checks a whole run before TensorFlow loads.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Optional, Tuple, Union

from tfflows.components.errors import DataError
from tfflows.components.tables import FORMATS as TABLE_FORMATS
from tfflows.components.tables import STREAMED_FORMATS

__all__ = ["ConfigError", "JsonConfig", "IngestConfig", "TransformConfig", "build_config"]


class ConfigError(ValueError):
    """A configuration problem, with a one-line message naming the field path and the fix.

    A dataclass's own check raises it with ``field``, the name (or dotted path inside the field)
    that its message writes in backquotes; `build_config` then writes the field's full path there
    (``train.learning_rate``). Without ``field`` the message is final and shown as is.
    """

    def __init__(self, message: str, field: Optional[str] = None) -> None:
        super().__init__(message)
        self.field = field

    def __reduce__(self):
        return (type(self), (str(self), self.field))


def _describe(hint) -> str:
    """What a type hint accepts, in the words of a YAML file (`true`, a list, null)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        words = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(words + (["null"] if type(None) in args else []))
    if hint is tuple or origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s"
        return "a list"
    if hint is dict or origin is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, "any value")


_REJECTED = object()


def _conform(hint, value):
    """`value` as the type `hint` describes (lists become tuples, ints floats), or `_REJECTED`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None:
            return None if type(None) in args else _REJECTED
        for arg in args:
            if arg is not type(None) and (conformed := _conform(arg, value)) is not _REJECTED:
                return conformed
        return _REJECTED
    if hint is bool:
        return value if isinstance(value, bool) else _REJECTED
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _REJECTED
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads `1e-4` as a string
            try:
                return float(value)
            except ValueError:
                return _REJECTED
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else _REJECTED
    if hint is str:
        return value if isinstance(value, str) else _REJECTED
    if hint is tuple or origin is tuple:
        if not isinstance(value, (list, tuple)):
            return _REJECTED
        if len(args) == 2 and args[1] is Ellipsis:
            items = [_conform(args[0], item) for item in value]
            return _REJECTED if any(item is _REJECTED for item in items) else tuple(items)
        return tuple(value)
    if hint is dict or origin is dict:
        return value if isinstance(value, dict) else _REJECTED
    return value


def _example(default) -> str:
    if default is None or default is dataclasses.MISSING:
        return ""
    return f", e.g. {json.dumps(list(default) if isinstance(default, tuple) else default)}"


def _post_init_error(error: ConfigError, where: str) -> ConfigError:
    """A dataclass's own check on ``error.field``, with that field's full path written where its
    message names it in backquotes."""
    message = " ".join(str(error).split())
    path = f"{where}.{error.field}" if where else str(error.field)
    message = message.replace(f"`{error.field}`", path, 1)
    if "fix:" not in message:
        message += f"; fix: change {path} (--set {path}=VALUE or the config file)"
    return ConfigError(message)


def build_config(cls, values: dict, where: str = ""):
    """``cls(**values)``, strictly: nested dataclass fields are built from nested dicts, every
    other value must match its field's type hint, and any failure is one `ConfigError` line
    ``<field path>: expected <type>, got <value>; fix: ...``. ``where`` is the path of ``cls``."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping of fields, got {values!r}; fix: write "
                          f"{where or 'the config'} as `field: value` lines")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        path = f"{where}.{name}" if where else name
        if name not in fields:
            close = difflib.get_close_matches(str(name), fields, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown field '{path}'{hint}; valid fields{' of ' + where if where else ''}: "
                              f"{', '.join(fields)}")
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build_config(hint, value or {}, path)
            continue
        conformed = _conform(hint, value)
        if conformed is _REJECTED:
            field = fields[name]
            default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
            raise ConfigError(f"{path}: expected {_describe(hint)}, got {value!r} ({type(value).__name__}); fix: "
                              f"set {path} to {_describe(hint)}{_example(default)}")
        kwargs[name] = conformed
    try:
        return cls(**kwargs)
    except ConfigError as error:
        if error.field is None:
            raise
        raise _post_init_error(error, where) from error
    except DataError:
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid {where or 'config'}: {' '.join(str(error).split())}") from error


class JsonConfig:
    """JSON round trip of a config dataclass (how TFX wrappers pass configs as execution properties)."""

    __dataclass_fields__: ClassVar[Dict[str, Any]]  # subclasses are dataclasses (for `dataclasses.asdict`)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str):
        return cls(**json.loads(text))

# Names the ingest component understands for `IngestConfig.dataset`.
BUNDLED_DATASETS = ("moons", "digits", "mnist")
FILE_FORMATS = tuple(TABLE_FORMATS) + ("idx", "images", "tfrecord")  # tables: `components.tables`
# Read on Beam workers and split by a seeded hash of each row (`components.ingest.streaming`).
STREAMED_DATASETS = STREAMED_FORMATS + ("tfrecord",)
BENCHMARK_DATASETS = ("power", "gas", "hepmass", "miniboone", "bsds300", "cifar10")


# Datasets whose class label `IngestConfig.context` "label" conditions on, one-hot in these columns.
LABELLED_DATASETS = ("digits", "mnist")
LABEL_COLUMNS = tuple(f"label_{k}" for k in range(10))


def _tuple_or_none(value: Any) -> Optional[tuple]:
    return None if value is None else tuple(value)


@dataclass(frozen=True)
class IngestConfig(JsonConfig):
    """What to ingest and how to split it (component `components/ingest`).

    Attributes:
      dataset: what to read. Bundled, offline: ``"moons"`` (sklearn ``make_moons``),
        ``"digits"`` (sklearn ``load_digits``, 8x8, 17 levels), ``"mnist"`` (IDX files; ``path``
        defaults to ``<repo>/../shared/data/mnist``). User files: the table formats of
        `components.tables.FORMATS`, e.g. ``"csv"`` (header line, numeric columns, streamed with
        Beam), ``"npy"``, ``"npz"``; ``"idx"``
        (``*-idx3-ubyte[.gz]``), ``"images"`` (a folder of PNG/JPEG files of one size),
        ``"tfrecord"`` (tf.Example records with a float feature ``feature_key``). MAF paper
        benchmarks, read with the paper's preprocessing and split rules: ``"power"``,
        ``"gas"``, ``"hepmass"``, ``"miniboone"``, ``"bsds300"``, ``"cifar10"``.
      path: the input file or folder. For benchmarks, the folder holding the benchmark's files
        (``power/data.npy`` ..., or the data file's own folder); for ``tfrecord`` and ``csv`` a
        file or a glob pattern. Unused for ``moons`` and ``digits``.
      test_path: optional separate file for the test split (tables, ``idx``, ``tfrecord``); then
        ``test_fraction``/``test_count`` must be left at their defaults (they would have no effect).
      columns: tables (`components.tables.FORMATS`): the names of the columns to keep, in this
        order (default: all columns); an array's columns are ``x0, x1, ...``.
      context_columns: the names of the columns to condition on: the run models the
        density of the other columns given these, p(x | context), with a conditional flow
        (`models.build_flow(..., context_dim=C)`). They are kept apart from the features
        (the tf.Example feature ``context``), standardised by the transform with the train
        split's statistics, and named inputs of the served model. They must not repeat
        ``columns`` (with ``columns`` set, the features are exactly those) and must leave at
        least one feature. Sources with named columns only (the tables of
        `components.tables.FORMATS`; ``x0 ..`` where a format has no names, and for tfrecord); not for discrete data or images, whose readers check levels and shapes on
        every column they read. None: an unconditional density of all columns. A column of
        ``categorical_columns`` named here is a categorical context (a machine id): ingest keeps it
        as strings (feature ``context_categorical``), the transform gives it a vocabulary with one
        out-of-vocabulary bucket, and the network's context is the standardised numeric context
        followed by each categorical context column's one-hot code; the served model takes it as
        strings, by name.
      categorical_columns: the names of string-valued columns (categories, e.g. a merchant),
        streamed tables only (`components.tables.STREAMED_FORMATS`, e.g. CSV). Each gets a
        vocabulary of the train split (plus one out-of-vocabulary bucket, where categories
        unseen in training land when a model scores them). A categorical column not in
        ``context_columns`` is modelled: the row's log-density is the exact mixed one,
        log P(categories) + log p(numeric | categories) (`models.MixedDensity`). At least one
        numeric column must be left to model. None: every column is numeric (a string cell is
        then refused, naming this field).
      context: ``"label"``: condition a labelled image dataset (``digits``, ``mnist`` with its
        ``*-labels-idx1-ubyte[.gz]`` files beside the images) on its class label, one-hot over
        the 10 classes: context columns ``label_0`` .. ``label_9`` (the MAF paper's
        class-conditional flows, its Table 5). None: no label. Not with ``context_columns``.
      feature_key: ``tfrecord`` only: the float feature to read; ``npz`` only: the array name
        (default for npz: the only array, or ``"x"``).
      eval_fraction: fraction of the non-test rows used for the ``eval`` split.
      test_fraction: fraction of all rows used for the ``test`` split.
      eval_count: exact number of ``eval`` rows; overrides ``eval_fraction`` (in-memory
        sources only: ``csv`` and ``tfrecord`` are streamed and split by a seeded hash).
      test_count: exact number of ``test`` rows; overrides ``test_fraction`` (as above).
      seed: seed of the shuffle before splitting, of ``moons`` and of the streamed hash split.
      shuffle: shuffle rows (seeded) before splitting; False keeps file order and takes the
        test rows, then the eval rows, from the end (the paper's rule for GAS and MINIBOONE).
        Benchmarks always use the paper's own rule.
      max_examples: keep only the first N rows of the source (after loading, before splitting)
        for quick runs; None keeps all.
      num_samples: ``moons`` only: number of points generated.
      noise: ``moons`` only: standard deviation of the Gaussian noise.
      discrete: user files only: declare the data integer-valued in ``[0, num_levels)``
        (None: inferred False for tabular files, True for IDX and images).
      num_levels: number of discrete levels (e.g. 256 for 8-bit images); required when
        ``discrete`` is True for a source that does not know it.
      image_shape: user files only: the image shape, e.g. ``(28, 28)`` or ``(32, 32, 3)``
        (channels last); must multiply to the number of features.
      allow_pickle: allow reading Python pickles (GAS's pandas pickle, CIFAR-10 python
        batches). Off by default: a pickle can run arbitrary code. ``.npy``/``.npz`` files are
        always read with ``allow_pickle=False`` whatever this says.
      flip_augment: images only: append horizontal flips of every train image to ``train``
        (the paper's CIFAR-10 recipe, 45,000 -> 90,000).
      name: dataset name written to the metadata (default: ``dataset``).
      span_window: with ``{SPAN}`` in ``path`` (TFX ExampleGen's pattern, e.g.
        ``data/{SPAN}/*.csv``, optionally with ``{VERSION}``): how many of the newest spans a run
        ingests together (1: the newest only); `components.inputs`.
    """

    dataset: str
    path: Optional[str] = None
    test_path: Optional[str] = None
    columns: Optional[Tuple[str, ...]] = None
    context_columns: Optional[Tuple[str, ...]] = None
    categorical_columns: Optional[Tuple[str, ...]] = None
    context: Optional[str] = None
    feature_key: Optional[str] = None
    eval_fraction: float = 0.1
    test_fraction: float = 0.1
    eval_count: Optional[int] = None
    test_count: Optional[int] = None
    seed: int = 0
    shuffle: bool = True
    max_examples: Optional[int] = None
    num_samples: int = 2000
    noise: float = 0.1
    discrete: Optional[bool] = None
    num_levels: Optional[int] = None
    image_shape: Optional[Tuple[int, ...]] = None
    allow_pickle: bool = False
    flip_augment: bool = False
    name: Optional[str] = None
    span_window: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", _tuple_or_none(self.columns))
        object.__setattr__(self, "context_columns", _tuple_or_none(self.context_columns))
        object.__setattr__(self, "categorical_columns", _tuple_or_none(self.categorical_columns))
        object.__setattr__(self, "image_shape", _tuple_or_none(self.image_shape))
        known = BUNDLED_DATASETS + FILE_FORMATS + BENCHMARK_DATASETS
        if self.dataset not in known:
            raise ConfigError(f"`dataset` {self.dataset!r} is not a dataset name; fix: use one of {', '.join(known)}",
                              field="dataset")
        for field in ("eval_fraction", "test_fraction"):
            value = getattr(self, field)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"`{field}` must be in [0, 1), but is {value!r}", field=field)
        if self.span_window < 1:
            raise ConfigError(f"`span_window` must be 1 or more, but is {self.span_window!r}", field="span_window")
        for field in ("eval_count", "test_count", "max_examples", "num_levels"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ConfigError(f"`{field}` must be a non-negative int or None, but is {value!r}", field=field)
        if self.num_samples < 1:
            raise ConfigError(f"`num_samples` must be 1 or more, but is {self.num_samples!r}", field="num_samples")
        if not self.noise >= 0:
            raise ConfigError(f"`noise` must be >= 0, but is {self.noise!r}", field="noise")
        if self.image_shape is not None and (not self.image_shape or min(self.image_shape) < 1):
            raise ConfigError(f"`image_shape` must be sizes >= 1, e.g. [28, 28], but is {list(self.image_shape)}",
                              field="image_shape")
        self._check_fields_apply()
        self._check_context_columns()
        self._check_categorical_columns()

    def _check_fields_apply(self) -> None:
        """Refuses a field the dataset's reader would ignore, or cannot honour (a streamed source
        is split by a hash of each row, so exact counts, a first-N cut and flips are not
        available), so that it is one line now rather than silently without effect."""
        fix = f"drop it, or choose a dataset that reads it (now {self.dataset!r})"
        user_files = FILE_FORMATS + ("mnist",)  # the readers that take `user_meta`'s settings
        applies = {"path": user_files + BENCHMARK_DATASETS,
                   "test_path": tuple(TABLE_FORMATS) + ("idx", "tfrecord"),
                   "columns": tuple(TABLE_FORMATS), "feature_key": ("npz", "tfrecord"),
                   "discrete": user_files, "num_levels": user_files, "image_shape": user_files,
                   "allow_pickle": ("gas", "cifar10")}
        for field, datasets in applies.items():
            if getattr(self, field) not in (None, False) and self.dataset not in datasets:
                raise ConfigError(f"`{field}` is read only by datasets {', '.join(datasets)}, not by "
                                  f"{self.dataset!r}; fix: {fix}", field=field)
        if self.columns is not None and (not self.columns or len(set(self.columns)) < len(self.columns)):
            raise ConfigError(f"`columns` must name one or more columns, each once, but is {list(self.columns)}; "
                              "fix: name the columns to keep, or set it to null for all", field="columns")
        if self.test_path is not None:
            for field in ("test_count", "test_fraction"):
                if getattr(self, field) != type(self).__dataclass_fields__[field].default:
                    raise ConfigError(f"`{field}` has no effect with a test_path (the test split is that file); fix: "
                                      f"drop {field}, or test_path to cut the test split from the data", field=field)
        if self.dataset in STREAMED_DATASETS:
            for field in ("eval_count", "test_count", "max_examples", "flip_augment"):
                if getattr(self, field):
                    raise ConfigError(f"`{field}` is not available for the streamed dataset {self.dataset!r}, which is "
                                      "split by a seeded hash of each row; fix: use eval_fraction/test_fraction (and "
                                      "a smaller file for a quick run)", field=field)

    @property
    def context_names(self) -> Optional[Tuple[str, ...]]:
        """The columns the run conditions on: ``context_columns``, or the one-hot label's
        (`LABEL_COLUMNS`) with ``context: label``; None: an unconditional run."""
        return LABEL_COLUMNS if self.context == "label" else self.context_columns

    def _check_context_columns(self) -> None:
        """Context columns: named, once each, apart from ``columns``, on a source whose reader
        leaves them alone (whether they are in the file is the run's preflight, by name); the
        label only of a labelled dataset."""
        if self.context is not None:
            if self.context != "label" or self.dataset not in LABELLED_DATASETS:
                raise ConfigError(f"`context` must be 'label' on a labelled dataset ({', '.join(LABELLED_DATASETS)}), "
                                  f"but is {self.context!r} on {self.dataset!r}; fix: set context to null, or ingest "
                                  "digits with context: label", field="context")
            if self.context_columns is not None:
                raise ConfigError("`context` label and context_columns are two contexts; fix: keep one of them",
                                  field="context")
        context = self.context_columns
        if context is None:
            return
        if not context or not all(isinstance(c, str) and c.strip() for c in context):
            raise ConfigError(f"`context_columns` must name one or more columns, e.g. [machine, load], but is "
                              f"{list(context)!r}; fix: name the columns or set it to null", field="context_columns")
        if repeated := sorted({c for c in context if context.count(c) > 1}):
            raise ConfigError(f"`context_columns` names {repeated} more than once; fix: name each column once",
                              field="context_columns")
        if both := [c for c in context if c in (self.columns or ())]:
            raise ConfigError(f"`context_columns` {both} are also in ingest.columns, the features; fix: a column is "
                              "a feature or a context, so drop them from one of the two", field="context_columns")
        if self.dataset not in tuple(TABLE_FORMATS) + ("tfrecord",):
            raise ConfigError(f"`context_columns` needs a table with named columns ({', '.join(TABLE_FORMATS)}; "
                              f"tfrecord by x0, x1, ...), but the dataset is {self.dataset!r}; fix: ingest a table, "
                              "or drop context_columns", field="context_columns")
        if self.discrete or self.image_shape:
            raise ConfigError("`context_columns` cannot be combined with discrete data or an image_shape yet (the "
                              "reader checks levels and shape on every column it reads, context included); fix: "
                              "drop discrete/image_shape or context_columns", field="context_columns")

    @property
    def modelled_categorical(self) -> Tuple[str, ...]:
        """The categorical columns the run models (`categorical_columns` not in `context_columns`)."""
        return tuple(c for c in self.categorical_columns or () if c not in (self.context_columns or ()))

    @property
    def context_categorical(self) -> Tuple[str, ...]:
        """The categorical columns the run conditions on (in both lists), in `context_columns`' order."""
        return tuple(c for c in self.context_columns or () if c in (self.categorical_columns or ()))

    def _check_categorical_columns(self) -> None:
        """Categorical columns: named once each, among ``columns`` or ``context_columns`` when those
        are given, in a streamed table (whose readers read a declared column as text)."""
        categorical = self.categorical_columns
        if categorical is None:
            return
        field = "categorical_columns"
        if not categorical or not all(isinstance(c, str) and c.strip() for c in categorical):
            raise ConfigError(f"`categorical_columns` must name one or more columns, e.g. [merchant], but is "
                              f"{list(categorical)!r}; fix: name the string columns or set it to null", field=field)
        if repeated := sorted({c for c in categorical if categorical.count(c) > 1}):
            raise ConfigError(f"`categorical_columns` names {repeated} more than once; fix: name each column once",
                              field=field)
        if self.dataset not in STREAMED_FORMATS:
            raise ConfigError(f"`categorical_columns` needs a table with string columns ({', '.join(STREAMED_FORMATS)}), "
                              f"but the dataset is {self.dataset!r}, which holds numbers only; fix: ingest such a table, "
                              "or drop categorical_columns", field=field)
        if self.discrete or self.image_shape:
            raise ConfigError("`categorical_columns` cannot be combined with discrete data or an image_shape (those "
                              "readers check levels and shape on every column); fix: drop discrete/image_shape or "
                              "categorical_columns", field=field)
        if self.columns is not None:
            if outside := [c for c in categorical if c not in self.columns + (self.context_columns or ())]:
                raise ConfigError(f"`categorical_columns` {outside} are not among ingest.columns or "
                                  "ingest.context_columns, the columns read; fix: add them to one of those lists",
                                  field=field)
            if not [c for c in self.columns if c not in categorical]:
                raise ConfigError("`categorical_columns` names every column of ingest.columns: no numeric column is "
                                  "left to model (a purely categorical table is not supported yet); fix: keep at "
                                  "least one numeric column", field=field)



@dataclass(frozen=True)
class TransformConfig(JsonConfig):
    """How raw features ``x`` become model features ``z`` (component `components/transform`).

    Attributes:
      method: ``"auto"`` (logit for discrete data, standardisation otherwise), ``"logit"``,
        ``"standardize"`` or ``"identity"`` (BSDS300 in the paper is used as stored).
        Logit: ``z = logit(lam + (1 - 2 lam) x / num_levels)`` on dequantised ``x`` in
        ``[0, num_levels)``; standardise: ``z = (x - mean) / std``.
      logit_lambda: ``lam`` above; None picks 0.05 for CIFAR-10 (the paper's value) and 1e-6
        for every other discrete dataset (MNIST's value; with 17 levels, as in ``digits``,
        the smallest dequantised value 0 maps to logit(1e-6) = -13.8, a tame range).
      analyze_splits: the splits whose statistics (mean, variance) the standardisation uses:
        ``("train",)`` (HEPMASS, default), ``("train", "eval")`` (the paper's POWER and
        MINIBOONE recipe) or all three (the paper's GAS code).
      min_std: a column whose standard deviation over ``analyze_splits`` is at most this is
        refused with a `DataError` naming the column (a constant column has no density).
    """

    method: str = "auto"
    logit_lambda: Optional[float] = None
    analyze_splits: Tuple[str, ...] = ("train",)
    min_std: float = 1e-12

    def __post_init__(self) -> None:
        object.__setattr__(self, "analyze_splits", tuple(self.analyze_splits))
        if self.method not in ("auto", "logit", "standardize", "identity"):
            raise ConfigError(
                "`method` must be one of 'auto', 'logit', 'standardize', 'identity', "
                f"but is {self.method!r}", field="method")
        if self.logit_lambda is not None and not 0.0 <= self.logit_lambda < 0.5:
            raise ConfigError(f"`logit_lambda` must be in [0, 0.5), but is {self.logit_lambda!r}", field="logit_lambda")
        if not self.min_std >= 0:
            raise ConfigError(f"`min_std` must be >= 0, but is {self.min_std!r}", field="min_std")
        if not self.analyze_splits or not set(self.analyze_splits) <= {"train", "eval", "test"}:
            raise ConfigError(
                "`analyze_splits` must be a non-empty subset of ('train', 'eval', 'test'), "
                f"but is {self.analyze_splits!r}", field="analyze_splits")

