"""`dataset_metadata.json` beside the ingested splits, and small-data readers of the splits."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

__all__ = ["CATEGORICAL_KEY", "CONTEXT_CATEGORICAL_KEY", "CONTEXT_KEY", "DatasetMetadata", "METADATA_FILE",
           "read_metadata", "write_metadata", "split_files", "load_split", "load_context", "load_context_categorical",
           "load_categorical"]

METADATA_FILE = "dataset_metadata.json"
FEATURE_KEY = "x"
CONTEXT_KEY = "context"  # the numeric conditioning columns of a conditional dataset, apart from x
CONTEXT_CATEGORICAL_KEY = "context_categorical"  # its categorical conditioning columns, as bytes
CATEGORICAL_KEY = "categorical"  # the modelled categorical columns of a mixed dataset, as bytes


@dataclasses.dataclass(frozen=True)
class DatasetMetadata:
    """What downstream components need to know about an ingested dataset.

    Attributes:
      name: dataset name.
      event_dim: D, the length of feature ``x``.
      feature_names: D names, one per column of ``x``.
      discrete: True when ``x`` holds integer levels in ``[0, num_levels)`` (to be dequantised).
      num_levels: number of levels of discrete data (256 for 8-bit images), else None.
      image_shape: e.g. ``[28, 28]`` or ``[32, 32, 3]`` (channels last) for images, else None.
      split_sizes: rows per split, keys ``train``, ``eval``, ``test``.
      fingerprint: sha256 hex of the ingested rows (order-independent, deterministic).
      source: the input path or the bundled dataset's name.
      inputs: the run's input snapshot (`components.inputs.InputSnapshot` as a dict: the
        files with their sizes and sha256, the span(s), the content digest and a short label),
        or None for sources without files.
      context_names: the roles' other half: the columns conditioned on (`IngestConfig.context_columns`
        in their order), or None: no context. The numeric ones are feature ``context`` of each
        example (`numeric_context_names`, in this order), the categorical ones feature
        ``context_categorical`` (one UTF-8 string per column).
      context_categorical_names: the context columns that are categorical (a machine id), in
        ``context_names``' order, or None: every context column is numeric.
      categorical_names: the modelled categorical columns (feature ``categorical`` of each
        example, one UTF-8 string per column, `IngestConfig.categorical_columns`), or None: every
        modelled column is numeric (``feature_names``).
    """

    name: str
    event_dim: int
    feature_names: List[str]
    discrete: bool
    num_levels: Optional[int]
    image_shape: Optional[List[int]]
    split_sizes: Dict[str, int]
    fingerprint: str
    source: str
    inputs: Optional[dict] = None
    context_names: Optional[List[str]] = None
    categorical_names: Optional[List[str]] = None
    context_categorical_names: Optional[List[str]] = None

    @property
    def numeric_context_names(self) -> List[str]:
        """The numeric context columns, feature ``context``'s, in ``context_names``' order."""
        return [c for c in self.context_names or () if c not in (self.context_categorical_names or ())]

    @property
    def context_dim(self) -> Optional[int]:
        """C, the length of the float feature ``context`` (None: no numeric context; a dataset
        conditioned on categorical columns alone has none, see `conditional`)."""
        return len(self.numeric_context_names) or None

    @property
    def conditional(self) -> bool:
        """Whether the dataset has context columns (numeric, categorical or both)."""
        return bool(self.context_names)

    def example_spec(self) -> Dict[str, tf.io.FixedLenFeature]:
        """The features of each ingested tf.Example: ``x``, and ``context``,
        ``context_categorical`` and ``categorical`` where the dataset has them."""
        spec = {FEATURE_KEY: tf.io.FixedLenFeature([self.event_dim], tf.float32)}
        if self.context_dim is not None:
            spec[CONTEXT_KEY] = tf.io.FixedLenFeature([self.context_dim], tf.float32)
        for key, names in ((CONTEXT_CATEGORICAL_KEY, self.context_categorical_names),
                           (CATEGORICAL_KEY, self.categorical_names)):
            if names:
                spec[key] = tf.io.FixedLenFeature([len(names)], tf.string)
        return spec


def write_metadata(metadata: DatasetMetadata, directory: str) -> str:
    """Writes ``<directory>/dataset_metadata.json``; returns its path."""
    path = os.path.join(directory, METADATA_FILE)
    with open(path, "w") as f:
        json.dump(dataclasses.asdict(metadata), f, indent=2, sort_keys=True)
    return path


def read_metadata(examples_uri: str) -> DatasetMetadata:
    """Reads the metadata of an ingested Examples artifact (its URI)."""
    with tf.io.gfile.GFile(os.path.join(examples_uri, METADATA_FILE), "r") as f:
        return DatasetMetadata(**json.load(f))


def split_files(examples_uri: str, split: str) -> List[str]:
    """The gzipped TFRecord files of one split, sorted."""
    return sorted(tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*.gz")))


def _load_feature(examples_uri: str, split: str, key: str) -> Optional[np.ndarray]:
    """Feature ``key`` of every row of ``split`` (`DatasetMetadata.example_spec`), or None for a
    dataset without it."""
    if split not in ("train", "eval", "test"):
        raise ValueError(f"`split` must be 'train', 'eval' or 'test', but is {split!r}")
    feature = read_metadata(examples_uri).example_spec().get(key)
    if feature is None:
        return None
    files = split_files(examples_uri, split)
    spec = {key: feature}
    rows = [np.zeros((0, *feature.shape), feature.dtype.as_numpy_dtype)]
    if files:
        dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(4096)
        for batch in dataset:
            rows.append(tf.io.parse_example(batch, spec)[key].numpy())
    return np.concatenate(rows, axis=0)


def load_split(examples_uri: str, split: str) -> np.ndarray:
    """All rows of one split as float32 ``[N, D]`` (for tests and small-data evaluation).

    Row order follows the files and is not the source's order.
    """
    x = _load_feature(examples_uri, split, FEATURE_KEY)
    assert x is not None  # every dataset has feature x
    return x


def load_context(examples_uri: str, split: str) -> Optional[np.ndarray]:
    """The raw numeric context of one split's rows, float32 ``[N, C]`` in `load_split`'s row order (the
    same files read the same way), or None for a dataset without numeric context."""
    return _load_feature(examples_uri, split, CONTEXT_KEY)


def load_context_categorical(examples_uri: str, split: str) -> Optional[np.ndarray]:
    """The categorical context of one split's rows, bytes (object) ``[N, Sc]`` in `load_split`'s row
    order, or None for a dataset without categorical context columns."""
    return _load_feature(examples_uri, split, CONTEXT_CATEGORICAL_KEY)


def load_categorical(examples_uri: str, split: str) -> Optional[np.ndarray]:
    """The modelled categories of one split's rows, bytes (object) ``[N, S]`` in `load_split`'s row
    order, or None for a dataset without categorical columns."""
    return _load_feature(examples_uri, split, CATEGORICAL_KEY)
