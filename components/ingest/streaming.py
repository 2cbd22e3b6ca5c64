"""Streamed sources: tables (`components.tables.STREAMED_FORMATS`, e.g. CSV) and TFRecord files of tf.Example.

Rows are never loaded whole: the header (a table's columns) or the first record (TFRecord) is read
here to learn the dimension, then Beam workers read every chunk of a table
(`components.tables.reader.read_chunk`, the checks every reader of a table shares) or parse every
record in a DoFn that raises `DataError` on bad input, and assign each row to a split with a
seeded hash of its values (deterministic on any runner, independent of file order and chunking).
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
from typing import Iterable, List, Optional, Tuple

import apache_beam as beam
import numpy as np
import tensorflow as tf

from tfflows.components.config import STREAMED_DATASETS, IngestConfig
from tfflows.components.errors import DataError
from tfflows.components.ingest.sources.files import check_levels, user_meta
from tfflows.components.tables.reader import Chunk, Selection, Table, check_finite, open_table, plan, read_chunk, select

__all__ = ["STREAMED_DATASETS", "Row", "StreamedSource", "row_bytes", "streamed_source", "table_source", "tfrecord_source", "hash_split"]


Row = Tuple[np.ndarray, Tuple[str, ...]]  # a read row: its numbers (float32) and its categories' strings


def row_bytes(row: Row) -> bytes:
    """The bytes that identify a row: its float32 numbers, then its categories (UTF-8, each
    ended by a NUL byte), so a numeric row's bytes are its numbers' alone."""
    numbers, categories = row
    return numbers.astype("<f4").tobytes() + b"".join(c.encode() + b"\0" for c in categories)


@dataclasses.dataclass
class StreamedSource:
    """What the executor needs to ingest a streamed source."""

    feature_names: List[str]  # the numeric columns (features and numeric context), in a row's order
    discrete: bool
    num_levels: Optional[int]
    image_shape: Optional[List[int]]
    source: str
    read: beam.PTransform  # PBegin -> PCollection[(split, (float32 numbers, category strings))]
    categorical_names: Tuple[str, ...] = ()  # the string columns, in the order of a row's strings


def hash_split(key: bytes, seed: int, eval_fraction: float, test_fraction: float,
               has_test_file: bool) -> str:
    """Split of one row from a seeded sha256 of its bytes: u ~ U[0, 1) per distinct row."""
    digest = hashlib.sha256(seed.to_bytes(8, "little", signed=True) + key).digest()
    u = int.from_bytes(digest[:8], "little") / 2.0 ** 64
    if not has_test_file:
        if u < test_fraction:
            return "test"
        u = (u - test_fraction) / (1.0 - test_fraction)
    return "eval" if u < eval_fraction else "train"


def _files(pattern: str, what: str) -> List[str]:
    files = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
    files = [f for f in files if os.path.isfile(f)]
    if not files:
        raise DataError(pattern, "", f"no {what} file found", "check IngestConfig.path")
    return files


def _check_row(row: np.ndarray, where: str, names: List[str], levels: Optional[int],
               filename: str) -> None:
    """The in-memory sources' value checks on one row; ``where`` names the row."""
    rows, label = row[None], lambda _: where
    check_finite(rows, filename, names, label)
    if levels is not None:
        check_levels(rows, levels, filename, names, label)


# --------------------------------------------------------------------------- tables


class _ReadTableChunk(beam.DoFn):
    """(table, chunk, in the test file) -> (split, (float32 numbers, category strings)) of the chunk's
    checked rows; a row's split is a seeded hash of both."""

    def __init__(self, selection: Selection, config: IngestConfig, levels: Optional[int], has_test_file: bool):
        self._selection, self._levels, self._has_test_file = selection, levels, has_test_file
        self._seed, self._eval, self._test = (config.seed, config.eval_fraction,
                                              config.test_fraction)

    def process(self, element: Tuple[Table, Chunk, bool]) -> Iterable[Tuple[str, Row]]:
        table, chunk, in_test_file = element
        block = read_chunk(table, chunk, self._selection)
        if self._levels is not None:
            check_levels(block.numbers, self._levels, table.path, list(self._selection.names), block.label,
                         list(self._selection.take))
        for numbers, text in zip(block.numbers.astype(np.float32), block.text):
            row = (numbers, tuple(text))
            split = "test" if in_test_file else hash_split(
                row_bytes(row), self._seed, self._eval, self._test, self._has_test_file)
            yield split, row


def table_source(config: IngestConfig, paths: Tuple[str, ...] = ()) -> StreamedSource:
    """Table files of a streamed format (`components.tables.STREAMED_FORMATS`, e.g. CSV with a
    header line): ``config.path`` (a file or glob), or every path of ``paths`` (a span window,
    `components.inputs.effective_paths`); ``config.columns`` selects columns by name. Every file
    must have the first one's columns; each is read in chunks on the workers
    (`components.tables.reader`), and a row goes to a split by a seeded hash of its values."""
    what = config.dataset.upper() if config.dataset == "csv" else config.dataset.capitalize()
    if not config.path:
        raise DataError(config.dataset, "IngestConfig.path", "no path given", "set IngestConfig.path")
    files = [f for path in (paths or (config.path,)) for f in _files(path, what)]
    test_files = _files(config.test_path, what) if config.test_path else []
    tables = [open_table(f, header=True) for f in files + test_files]
    for table in tables[1:]:
        if table.columns != tables[0].columns:
            raise DataError(table.path, table.names_at, f"header {list(table.columns)} differs from "
                            f"{list(tables[0].columns)} of {files[0]}", f"give every {what} file the same columns")
    selection = select(tables[0], config.columns, text=config.categorical_columns or (),
                       fix="name columns of the file in ingest.columns")
    discrete, levels, shape = user_meta(config, len(selection.numeric), None, files[0])
    work = [(table, chunk, i >= len(files)) for i, table in enumerate(tables) for chunk in plan(table)]
    parse = _ReadTableChunk(selection, config, levels, bool(test_files))

    @beam.ptransform_fn
    def read(pbegin):
        return (pbegin | "TableChunks" >> beam.Create(work)
                | "Spread" >> beam.Reshuffle()
                | "ReadChunks" >> beam.ParDo(parse))

    return StreamedSource([n for _, n in selection.numeric], discrete, levels, shape, config.path, read(),
                          tuple(n for _, n in selection.strings))


# --------------------------------------------------------------------------- TFRecord


def _first_record(path: str) -> bytes:
    compression = "GZIP" if path.endswith(".gz") else ""
    try:
        for record in tf.data.TFRecordDataset(path, compression_type=compression).take(1):
            return record.numpy()
    except tf.errors.OpError as err:
        raise DataError(path, "record 0", f"cannot read TFRecord ({err.message.splitlines()[0]})",
                        "check the file (gzip files must end in .gz)") from None
    raise DataError(path, "", "file holds no records", "pass a non-empty TFRecord file")


def _example_row(record: bytes, key: str, filename: str) -> np.ndarray:
    try:
        example = tf.train.Example.FromString(record)
    except Exception:
        raise DataError(filename, "a record", "is not a tf.Example",
                        "write tf.train.Example protos") from None
    if key not in example.features.feature:
        raise DataError(filename, f"feature {key!r}", "missing from a record",
                        "set IngestConfig.feature_key to the float feature's name")
    feature = example.features.feature[key]
    kind = feature.WhichOneof("kind")
    if kind == "float_list":
        return np.asarray(feature.float_list.value, dtype=np.float64)
    if kind == "int64_list":
        return np.asarray(feature.int64_list.value, dtype=np.float64)
    raise DataError(filename, f"feature {key!r}", f"is a {kind}, not numbers",
                    "store the features as a float_list (or int64_list)")


class _ParseExample(beam.DoFn):
    def __init__(self, key: str, d: int, config: IngestConfig, test_files: Tuple[str, ...],
                 levels: Optional[int], names: List[str]):
        self._key, self._d, self._levels, self._names = key, d, levels, names
        self._seed, self._eval, self._test = (config.seed, config.eval_fraction,
                                              config.test_fraction)
        self._test_files = set(os.path.abspath(f) for f in test_files)

    def process(self, element: Tuple[str, bytes]) -> Iterable[Tuple[str, Row]]:
        filename, record = element
        row = _example_row(record, self._key, filename)
        if row.shape[0] != self._d:
            raise DataError(filename, f"feature {self._key!r}",
                            f"a record has {row.shape[0]} values, the first file has {self._d}",
                            "give every record (in every file and split) the same length")
        _check_row(row, f"feature {self._key!r}", self._names, self._levels, filename)
        row = row.astype(np.float32)
        in_test_file = os.path.abspath(filename) in self._test_files
        split = "test" if in_test_file else hash_split(
            row.tobytes(), self._seed, self._eval, self._test, bool(self._test_files))
        yield split, (row, ())


def tfrecord_source(config: IngestConfig, paths: Tuple[str, ...] = ()) -> StreamedSource:
    """TFRecord files (``config.path`` or every path of ``paths``, globs; ``.gz`` means GZIP) of
    tf.Example with a float feature."""
    if not config.path:
        raise DataError("tfrecord", "IngestConfig.path", "no path given", "set IngestConfig.path")
    key = config.feature_key or "x"
    files = [f for path in (paths or (config.path,)) for f in _files(path, "TFRecord")]
    test_files = tuple(_files(config.test_path, "TFRecord")) if config.test_path else ()
    d = _example_row(_first_record(files[0]), key, files[0]).shape[0]
    if d == 0:
        raise DataError(files[0], f"feature {key!r}", "is empty in the first record",
                        "store at least one value per example")
    names = [f"x{i}" for i in range(d)]
    discrete, levels, shape = user_meta(config, d, None, files[0])
    parse = _ParseExample(key, d, config, test_files, levels, names)
    all_files = files + list(test_files)

    @beam.ptransform_fn
    def read(pbegin):
        return (pbegin | "TFRecordFiles" >> beam.Create(all_files)
                | "ReadTFRecords" >> beam.io.tfrecordio.ReadAllFromTFRecord(with_filename=True)
                | "ParseExamples" >> beam.ParDo(parse))

    return StreamedSource(names, discrete, levels, shape, config.path, read())


def streamed_source(config: IngestConfig, paths: Tuple[str, ...] = ()) -> StreamedSource:
    """The source of a dataset of `components.config.STREAMED_DATASETS`."""
    return (tfrecord_source if config.dataset == "tfrecord" else table_source)(config, paths)
