"""Ingest executor logic as plain functions: source -> split tf.Examples + metadata.

`run_ingest` reads a source (`components.ingest.loaders` in memory, or
`components.ingest.streaming` with Beam), writes ``Split-{train,eval,test}/`` gzipped
TFRecords of tf.Example with one float feature ``x`` of length D (and, for a conditional
dataset, ``context`` of length C: the numeric columns named by ``IngestConfig.context_names``, and
``context_categorical``: the categorical ones' strings; for a table with modelled categorical
columns, ``categorical``: their S strings, UTF-8 bytes), and
``dataset_metadata.json``, into a temporary folder that is moved into ``output_uri`` only when
everything succeeded and the written splits hold exactly the rows the pipeline counted
(`components.ingest.verify`): bad input or lost output raises `DataError` and leaves
``output_uri`` untouched.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import tensorflow as tf

from tfflows.components.artifacts import publish_dir, staging_dir
from tfflows.components.config import IngestConfig
from tfflows.components.errors import DataError, reraise_data_error
from tfflows.components.ingest import loaders, streaming
from tfflows.components.inputs import InputSnapshot, effective_paths, snapshot_inputs
from tfflows.components.ingest.metadata import (CATEGORICAL_KEY, CONTEXT_CATEGORICAL_KEY, CONTEXT_KEY, FEATURE_KEY,
                                                DatasetMetadata, write_metadata)
from tfflows.components.ingest.runner import check_runner, pipeline_options
from tfflows.components.ingest.streaming import Row, row_bytes
from tfflows.components.ingest.sources.splits import check_split_sizes
from tfflows.components.ingest.verify import (METRICS_NAMESPACE, counter_totals, lost_output,
                                              verify_splits)

__all__ = ["column_roles", "run_ingest", "SPLITS"]

SPLITS = loaders.SPLITS
_CHUNK = 512
_STATS = "_split_stats.json"


def _row_digest(row: Row) -> int:
    return int.from_bytes(hashlib.sha256(row_bytes(row)).digest()[:16], "little")


@dataclasses.dataclass(frozen=True)
class Roles:
    """Where each role sits in a read row: positions among its numbers of the features and of the
    numeric context, and among its strings of the modelled categories and of the categorical
    context (each in its metadata order)."""

    features: List[int]
    context: List[int]
    categorical: List[int] = dataclasses.field(default_factory=list)
    context_categorical: List[int] = dataclasses.field(default_factory=list)


def column_roles(names: Sequence[str], context: Sequence[str], source: str, categorical: Sequence[str] = ()) -> Roles:
    """The `Roles` of a row of the numeric columns ``names`` and the string columns ``categorical``
    a reader returned, the context found by name among both; a context column that is in neither,
    or no numeric feature left, is a `DataError` naming it."""
    if missing := [c for c in context if c not in names and c not in categorical]:
        raise DataError(source, f"ingest.context_columns {missing}", f"not among the columns "
                        f"{list(names) + list(categorical)}", "name columns of the file in ingest.context_columns")
    features = [i for i, name in enumerate(names) if name not in context]
    if not features and categorical:
        raise DataError(source, "ingest.categorical_columns", "with the context, names every column: no numeric "
                        "column is left to model (a purely categorical table is not supported yet)",
                        "keep at least one numeric column")
    if not features:
        raise DataError(source, "ingest.context_columns", "names every column: no feature is left to model",
                        "leave at least one column out of ingest.context_columns")
    return Roles(features, [list(names).index(c) for c in context if c in names],
                 [i for i, name in enumerate(categorical) if name not in context],
                 [list(categorical).index(c) for c in context if c in categorical])


def _reader_config(config: IngestConfig) -> IngestConfig:
    """What the reader is asked for: with ``columns``, the features and then the context (the
    reader parses only the columns it is given); the roles are then assigned by name."""
    if not config.context_columns or not config.columns:
        return config
    return dataclasses.replace(config, columns=config.columns + config.context_columns, context_columns=None)


def _to_example(row: Row, split: str, roles: Roles) -> bytes:
    beam.metrics.Metrics.counter(METRICS_NAMESPACE, f"ingest_rows_{split}").inc()

    numbers, categories = row
    feature = {FEATURE_KEY: tf.train.Feature(float_list=tf.train.FloatList(value=numbers[roles.features].tolist()))}
    if roles.context:
        feature[CONTEXT_KEY] = tf.train.Feature(float_list=tf.train.FloatList(value=numbers[roles.context].tolist()))
    for key, positions in ((CONTEXT_CATEGORICAL_KEY, roles.context_categorical), (CATEGORICAL_KEY, roles.categorical)):
        if positions:
            feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[categories[i].encode()
                                                                                  for i in positions]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


class _CountAndDigest(beam.CombineFn):
    """(count, sum of 128-bit row digests): an order-independent summary of a split."""

    def create_accumulator(self) -> Tuple[int, int]:
        return 0, 0

    def add_input(self, acc, digest):
        return acc[0] + 1, acc[1] + digest

    def merge_accumulators(self, accs):
        accs = list(accs)
        return sum(a[0] for a in accs), sum(a[1] for a in accs)

    def extract_output(self, acc):
        return acc


def fingerprint(stats: Dict[str, Tuple[int, int]], event_dim: int) -> str:
    """sha256 hex of the split sizes and row digests (independent of row and shard order)."""
    summary = {s: [stats.get(s, (0, 0))[0], format(stats.get(s, (0, 0))[1] % 2 ** 256, "x")]
               for s in SPLITS}
    text = json.dumps({"event_dim": event_dim, "splits": summary}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _write_splits(rows, out_dir: str, roles: Roles) -> None:
    """rows: PCollection[(split, `Row`)] -> TFRecords per split + a stats file."""
    # Beam's type comment says WithTypeHints, but Partition takes any callable (its docs; make_fn wraps it).
    parts = rows | "BySplit" >> beam.Partition(lambda kv, n: SPLITS.index(kv[0]), len(SPLITS))  # type: ignore[arg-type]
    for split, part in zip(SPLITS, parts):
        _ = (part
             | f"Serialize{split}" >> beam.Map(lambda kv: _to_example(kv[1], kv[0], roles))
             | f"Write{split}" >> beam.io.WriteToTFRecord(
                 os.path.join(out_dir, f"Split-{split}", "data_tfrecord"),
                 file_name_suffix=".gz",
                 compression_type=beam.io.filesystem.CompressionTypes.GZIP))
    _ = (rows
         | "Digest" >> beam.Map(lambda kv: (kv[0], _row_digest(kv[1])))
         | "Summarise" >> beam.CombinePerKey(_CountAndDigest())
         | "ToJson" >> beam.Map(lambda kv: json.dumps([kv[0], kv[1][0], str(kv[1][1])]))
         | "WriteStats" >> beam.io.WriteToText(os.path.join(out_dir, _STATS), num_shards=1,
                                               shard_name_template=""))


def _read_stats(out_dir: str, runner: str) -> Dict[str, Tuple[int, int]]:
    path = os.path.join(out_dir, _STATS)
    if not tf.io.gfile.exists(path):
        raise lost_output("ingest", runner, "split statistics",
                          f"the job reported success but its counted side output {_STATS} "
                          "is missing")
    stats = {}
    with tf.io.gfile.GFile(path) as f:
        for line in f:
            if line.strip():
                split, count, digest = json.loads(line)
                stats[split] = (int(count), int(digest))
    tf.io.gfile.remove(path)
    return stats


def _check_counts(sizes: Dict[str, int], counters: Optional[Dict[str, int]],
                 runner: str) -> None:
    """The side output's row counts against the serialising step's counters (when reported)."""
    if counters is None:
        return
    for split in SPLITS:
        serialised = counters.get(f"ingest_rows_{split}", 0)
        if serialised != sizes[split]:
            raise lost_output("ingest", runner, f"split {split!r}",
                              f"{serialised} rows were serialised but the split statistics "
                              f"count {sizes[split]}")


def _chunks(splits: Dict[str, np.ndarray]) -> Iterable[Tuple[str, np.ndarray]]:
    for split in SPLITS:
        x = np.asarray(splits[split], dtype=np.float32)
        for start in range(0, len(x), _CHUNK):
            yield split, x[start:start + _CHUNK]


def run_ingest(config: IngestConfig, output_uri: str,
               beam_pipeline_args: Optional[Sequence[str]] = None,
               inputs: Optional[InputSnapshot] = None) -> DatasetMetadata:
    """Ingests ``config``'s source into ``output_uri`` (an Examples artifact's folder).

    Args:
      config: what to read and how to split it.
      output_uri: folder that receives ``Split-<split>/data_tfrecord-*.gz`` and
        ``dataset_metadata.json``; must be absent or empty.
      beam_pipeline_args: Beam arguments (default ``--runner=FnApiRunner``); the same code
        runs on Dataflow, Flink or Spark given their arguments.
      inputs: the input snapshot taken when the pipeline was built (`snapshot_inputs`): the
        resolved span paths are read and the snapshot goes into the metadata. None: taken here
        (object-store paths: none).

    Returns:
      The `DatasetMetadata` written beside the splits.

    Raises:
      DataError: bad input; nothing is written to ``output_uri`` then.
    """
    if inputs is None:
        inputs = snapshot_inputs(config)
    config, paths = effective_paths(config, inputs)
    streamed = config.dataset in streaming.STREAMED_DATASETS
    if streamed:
        source = streaming.streamed_source(_reader_config(config), paths)
        names, discrete, levels, shape, where = (source.feature_names, source.discrete,
                                                 source.num_levels, source.image_shape,
                                                 source.source)
        categorical = list(source.categorical_names)
    else:
        data = loaders.load_in_memory(config)
        names, discrete, levels, shape, where = (data.feature_names, data.discrete,
                                                 data.num_levels, data.image_shape, data.source)
        categorical = []  # in-memory sources (arrays, images, benchmarks) hold numbers only
    roles = column_roles(names, config.context_names or (), str(where), categorical)
    feature_names = [names[i] for i in roles.features]
    runner = check_runner(beam_pipeline_args)
    tmp_dir = staging_dir(output_uri)
    try:
        try:
            pipeline = beam.Pipeline(options=pipeline_options(beam_pipeline_args))
            if streamed:
                rows = pipeline | "Read" >> source.read
            else:
                rows = (pipeline | "Chunks" >> beam.Create(list(_chunks(data.splits)))
                        | "Rows" >> beam.FlatMap(lambda kv: ((kv[0], (r, ())) for r in kv[1])))
            _write_splits(rows, tmp_dir, roles)
            result = pipeline.run()
            result.wait_until_finish()
        except DataError:
            raise
        except Exception as err:  # Beam wraps the DoFn's DataError
            reraise_data_error(err)
            raise
        stats = _read_stats(tmp_dir, runner)
        sizes = {s: stats.get(s, (0, 0))[0] for s in SPLITS}
        _check_counts(sizes, counter_totals(result), runner)
        verify_splits(tmp_dir, sizes, "ingest", runner)
        check_split_sizes(sizes, config, where)
        metadata = DatasetMetadata(
            name=config.name or config.dataset, event_dim=len(feature_names), feature_names=feature_names,
            discrete=bool(discrete), num_levels=levels, image_shape=shape, split_sizes=sizes,
            fingerprint=fingerprint(stats, len(feature_names)), source=str(where),
            inputs=dataclasses.asdict(inputs) if inputs is not None else None,
            context_names=list(config.context_names) if config.context_names else None,
            categorical_names=[categorical[i] for i in roles.categorical] or None,
            context_categorical_names=[categorical[i] for i in roles.context_categorical] or None)
        write_metadata(metadata, tmp_dir)
        publish_dir(tmp_dir, output_uri)
        return metadata
    finally:
        if os.path.isdir(tmp_dir):
            shutil.rmtree(tmp_dir, ignore_errors=True)
