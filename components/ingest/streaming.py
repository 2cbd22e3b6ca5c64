"""Streamed sources: CSV (Beam ``ReadFromText``) and TFRecord files of tf.Example.

Rows are never loaded whole: the header (CSV) or the first record (TFRecord) is read here to
learn the dimension, then Beam parses every row in a DoFn that raises `DataError` on bad
input, and assigns it to a split with a seeded hash of the row's bytes (deterministic on any
runner, independent of file order).
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import hashlib
import io
import os
from typing import Iterable, List, Optional, Tuple

import apache_beam as beam
import numpy as np

from tfflows.components.config import IngestConfig
from tfflows.components.errors import DataError
from tfflows.components.ingest.sources.files import check_finite, check_levels, user_meta

__all__ = ["StreamedSource", "csv_source", "tfrecord_source", "hash_split"]


@dataclasses.dataclass
class StreamedSource:
    """What the executor needs to ingest a streamed source."""

    feature_names: List[str]
    discrete: bool
    num_levels: Optional[int]
    image_shape: Optional[List[int]]
    source: str
    read: beam.PTransform  # PBegin -> PCollection[(split, float32 row)]


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


def _check_streamed_config(config: IngestConfig) -> None:
    if config.eval_count is not None or config.test_count is not None:
        raise DataError(config.path, "IngestConfig.eval_count/test_count",
                        f"exact split counts are not available for streamed {config.dataset} "
                        "sources", "use eval_fraction/test_fraction instead")
    if config.flip_augment:
        raise DataError(config.path, "IngestConfig.flip_augment",
                        f"not available for streamed {config.dataset} sources",
                        "convert the images to .npy/IDX, or flip in the training pipeline")


def _check_row(row: np.ndarray, where: str, names: List[str], levels: Optional[int],
               filename: str) -> None:
    """The in-memory sources' value checks on one row; ``where`` names the row."""
    rows, label = row[None], lambda _: where
    check_finite(rows, filename, names, label)
    if levels is not None:
        check_levels(rows, levels, filename, names, label)


# --------------------------------------------------------------------------- CSV


def _read_header(path: str) -> List[str]:
    with open(path, "rb") as f:
        raw = f.readline()
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(path, "line 1 (header)", f"is not UTF-8 text (byte {raw[err.start:err.start + 1]!r} at "
                        f"column {err.start + 1})", "save the file as UTF-8, e.g. iconv -f latin1 -t utf-8") from None
    if not line.strip():
        raise DataError(path, "row 1 (header)", "file is empty or has no header line",
                        "write a header line of column names first")
    return [h.strip() for h in next(csv.reader([line]))]


def _line_number(filename: str, line: str) -> str:
    """Where `line` is in `filename`: Beam's text source gives rows without their line numbers,
    so a refused row's number is found by reading the file once (only when a row is refused)."""
    with open(filename, "r", newline="", encoding="utf-8", errors="replace") as f:
        for number, text in enumerate(f, start=1):
            if text.rstrip("\r\n") == line:
                return f"line {number}"
    return "a line"


class _ParseCsvLine(beam.DoFn):
    def __init__(self, header: List[str], keep: List[int], config: IngestConfig,
                 test_files: Tuple[str, ...], levels: Optional[int]):
        self._header, self._keep, self._levels = header, keep, levels
        self._seed, self._eval, self._test = (config.seed, config.eval_fraction,
                                              config.test_fraction)
        self._test_files = set(os.path.abspath(f) for f in test_files)
        self._names = [header[j] for j in keep]

    def process(self, element: Tuple[str, str]) -> Iterable[Tuple[str, np.ndarray]]:
        filename, line = element
        if not line.strip():
            return
        try:
            yield from self._parse(filename, line)
        except DataError as err:
            raise DataError(err.source, f"{_line_number(filename, line)} {err.where}", err.problem, err.fix) from None

    def _parse(self, filename: str, line: str) -> Iterable[Tuple[str, np.ndarray]]:
        shown = line if len(line) <= 40 else line[:37] + "..."
        where = f"row {shown!r}"
        cells = next(csv.reader(io.StringIO(line)))
        if len(cells) != len(self._header):
            raise DataError(filename, where, f"has {len(cells)} fields, the header has "
                            f"{len(self._header)}", "make every row as long as the header")
        row = np.empty(len(self._keep), dtype=np.float64)
        for i, j in enumerate(self._keep):
            try:
                row[i] = float(cells[j])
            except ValueError:
                raise DataError(filename, f"{where}, column {j} ({self._header[j]})",
                                f"value {cells[j]!r} is not a number",
                                "fix the cell, or leave the column out with "
                                "IngestConfig.columns") from None
        _check_row(row, where, self._names, self._levels, filename)
        in_test_file = os.path.abspath(filename) in self._test_files
        split = "test" if in_test_file else hash_split(
            line.encode(), self._seed, self._eval, self._test, bool(self._test_files))
        yield split, row.astype(np.float32)


def csv_source(config: IngestConfig, paths: Tuple[str, ...] = ()) -> StreamedSource:
    """CSV files with a header line: ``config.path`` (a file or glob), or every path of ``paths``
    (a span window, `components.inputs.effective_paths`); ``config.columns`` selects
    columns by name."""
    _check_streamed_config(config)
    if not config.path:
        raise DataError("csv", "IngestConfig.path", "no path given", "set IngestConfig.path")
    files = [f for path in (paths or (config.path,)) for f in _files(path, "CSV")]
    test_files = tuple(_files(config.test_path, "CSV")) if config.test_path else ()
    header = _read_header(files[0])
    for f in files[1:] + list(test_files):
        other = _read_header(f)
        if other != header:
            raise DataError(f, "row 1 (header)", f"header {other} differs from {header} of "
                            f"{files[0]}", "give every CSV file the same columns")
    if config.columns:
        missing = [c for c in config.columns if c not in header]
        if missing:
            raise DataError(files[0], f"columns {missing}", f"not in the header {header}",
                            "fix IngestConfig.columns")
        keep = [header.index(c) for c in config.columns]
    else:
        keep = list(range(len(header)))
    names = [header[j] for j in keep]
    discrete, levels, shape = user_meta(config, len(keep), None, files[0])
    parse = _ParseCsvLine(header, keep, config, test_files, levels)
    all_files = files + list(test_files)

    @beam.ptransform_fn
    def read(pbegin):
        lines = [pbegin | f"ReadCsv{i}" >> beam.io.textio.ReadFromTextWithFilename(
            f, skip_header_lines=1) for i, f in enumerate(all_files)]
        return (lines | "FlattenCsv" >> beam.Flatten()
                | "ParseCsv" >> beam.ParDo(parse))

    return StreamedSource(names, discrete, levels, shape, config.path, read())


# --------------------------------------------------------------------------- TFRecord


def _first_record(path: str) -> bytes:
    import tensorflow as tf

    compression = "GZIP" if path.endswith(".gz") else ""
    try:
        for record in tf.data.TFRecordDataset(path, compression_type=compression).take(1):
            return record.numpy()
    except tf.errors.OpError as err:
        raise DataError(path, "record 0", f"cannot read TFRecord ({err.message.splitlines()[0]})",
                        "check the file (gzip files must end in .gz)") from None
    raise DataError(path, "", "file holds no records", "pass a non-empty TFRecord file")


def _example_row(record: bytes, key: str, filename: str) -> np.ndarray:
    import tensorflow as tf

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

    def process(self, element: Tuple[str, bytes]) -> Iterable[Tuple[str, np.ndarray]]:
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
        yield split, row


def tfrecord_source(config: IngestConfig, paths: Tuple[str, ...] = ()) -> StreamedSource:
    """TFRecord files (``config.path`` or every path of ``paths``, globs; ``.gz`` means GZIP) of
    tf.Example with a float feature."""
    _check_streamed_config(config)
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

