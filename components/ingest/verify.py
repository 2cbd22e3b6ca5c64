"""Checks that what a Beam pipeline wrote is really there, on any runner.

A runner may report success over lost output (Beam 2.77's DaskRunner finished an ingest with the
right split sizes and no TFRecords at all). So ingest and transform never trust the job state
alone: after writing they count what is on disk and compare it with the counts the same
pipeline made (a counted side output, Beam metrics), and transform checks its input against the
counts ingest recorded. A mismatch is one `DataError` line naming the step, the runner and the
split; the TFX executor then fails, so ML Metadata records no success over missing data.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, Iterable, Optional

from apache_beam.metrics.metric import MetricsFilter
import tensorflow as tf

from tfflows.components.errors import DataError
from tfflows.components.ingest.metadata import split_files

__all__ = ["METRICS_NAMESPACE", "count_records", "counter_totals", "verify_splits",
           "lost_output"]

METRICS_NAMESPACE = "tfflows"
logger = logging.getLogger("tfflows.beam")


def count_records(files: Iterable[str]) -> int:
    """Records in gzipped TFRecord files; raises `tf.errors.DataLossError` on a damaged file."""
    files = list(files)
    if not files:
        return 0
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP", buffer_size=1 << 20)
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))


def counter_totals(result) -> Optional[Dict[str, int]]:
    """Counters of namespace ``tfflows`` in a finished pipeline's result, summed over steps.

    None when the runner reports no metrics for it (then only the files can be checked).
    """
    try:
        counters = result.metrics().query(
            MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]
    except (NotImplementedError, AttributeError):
        return None
    if not counters:
        return None
    totals: Dict[str, int] = {}
    for counter in counters:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + int(value or 0)
    logger.debug("Beam counters reported: %s", totals)
    return totals


def lost_output(step: str, runner: str, where: str, problem: str) -> DataError:
    """The one-line error for output a runner reported as written but did not deliver."""
    return DataError(f"{step} on {runner}", where, problem,
                     "the runner lost or damaged written data: re-run the step (on FnApiRunner "
                     "or PortableRunner, see README 'Scale-out'), and do not use these files")


def verify_splits(examples_uri: str, expected: Dict[str, int], step: str, runner: str,
                  fix_hint: str = "") -> None:
    """Raises `DataError` unless every split in ``expected`` holds exactly that many records.

    Args:
      examples_uri: an Examples folder with ``Split-<split>/*.gz``.
      expected: records per split, as counted by the pipeline that wrote them.
      step: ``"ingest"`` (checking its own output) or ``"transform"`` (checking its input).
      runner: the Beam runner's name, shown in the message.
      fix_hint: replaces the default fix (the step that checks its input names its own).
    """
    for split, want in expected.items():
        folder = os.path.join(examples_uri, f"Split-{split}")
        files = split_files(examples_uri, split)
        try:
            got = count_records(files)
        except tf.errors.OpError as err:
            problem = f"a TFRecord file cannot be read ({err.message.splitlines()[0]})"
            raise _error(step, runner, split, folder, problem, fix_hint) from None
        if got != want:
            problem = (f"holds {got} records in {len(files)} files, but the pipeline counted "
                       f"{want}")
            raise _error(step, runner, split, folder, problem, fix_hint)
    logger.debug("%s on %s: split files hold %s records, as counted", step, runner, expected)


def _error(step: str, runner: str, split: str, folder: str, problem: str,
           fix_hint: str) -> DataError:
    where = f"split {split!r} ({folder})"
    if fix_hint:
        return DataError(f"{step} on {runner}", where, problem, fix_hint)
    return lost_output(step, runner, where, problem)
