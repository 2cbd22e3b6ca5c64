"""Scoring a table as a Beam pipeline: ``tfflows evaluate --beam-args "--runner=..."``.

The same scores and summary as the in-process path (`pipeline.serving.evaluate_saved_model`),
computed by workers of any Beam runner::

    driver: match_columns, plan_chunks the columns by name, a few numbers per chunk (rows of an array
      │                                or a row group; a .csv's byte range)
      │  Create ─► Reshuffle           spread the chunks over the workers
      ▼
    worker: read_rows                  reads its rows from --data (the one table reader), the model's
      │                                columns in its order and a mixed density's categorical columns as
      │                                strings (a bad row: its one-line error); counts the categories
      ▼                                the model's vocabularies lack (`UnseenCategories`)
    worker: RunInference(LogProbHandler)   the pushed SavedModel's `score` signature (`log_prob` for a
      │                                    model without held-out quantiles), the categories looked up
      │                                    in the graph as in-process, the model loaded once per worker
      ▼                                    process (Beam's shared handle)
    worker: one scores file per chunk  <shard folder>/<chunk>.npy (and <chunk>.unseen.json for a mixed
      ▼                                density), written then renamed
    driver: every chunk checked present, concatenated in chunk order into --scores; unseen
            categories merged in chunk order (the in-process summary's line)

Workers read --data and write the shard folder (a hidden folder beside --scores), so on a
cluster both must be on storage every worker sees. A chunk that a worker found bad reports its
error as data, not as a failed bundle (a runner would retry it, then wrap it in a traceback): the
driver raises the first bad chunk's `DataError`, exactly as the in-process path would. A chunk
with no scores file after the job reported success is a lost output, never skipped silently.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference

from tfflows.components import artifacts
from tfflows.components.errors import DataError
from tfflows.components.ingest.runner import pipeline_options, runner_name
from tfflows.components.tables.reader import Chunk
from tfflows.pipeline.scoring import Columns, UnseenCategories, load_saved_model, read_rows, score_rows

__all__ = ["LogProbHandler", "score_with_beam"]

_ERRORS = "errors"
_UNSEEN = "unseen"


class LogProbHandler(ModelHandler):
    """RunInference's model handler for a pushed SavedModel: chunks (rows [n, D], categories [n, S])
    in, `score_rows` out (log p(x), and the percentile for a calibrated model).

    Beam's own TensorFlow handler (`TFModelHandlerTensor`) calls the model object on one tensor
    per element and stacks elements into a batch; here an element is already a chunk of rows,
    scored by the SavedModel's signature (the serving contract) ``batch_size`` rows a call.
    """

    def __init__(self, model_dir: str, batch_size: int):
        super().__init__(max_batch_size=1)  # one chunk per call: a chunk is already a batch
        self.model_dir, self.batch_size = model_dir, batch_size

    def load_model(self) -> Any:
        return load_saved_model(self.model_dir)[1]

    def run_inference(self, batch: Sequence[Tuple[np.ndarray, np.ndarray]], model: Any,
                      inference_args: Optional[dict] = None) -> List[np.ndarray]:
        return [score_rows(model, rows, self.batch_size, categories) for rows, categories in batch]

    def get_num_bytes(self, batch: Sequence[Tuple[np.ndarray, np.ndarray]]) -> int:
        # The default pickles the whole batch to measure it; a string's bytes are not counted.
        return sum(rows.nbytes + categories.nbytes for rows, categories in batch)

    def get_metrics_namespace(self) -> str:
        return "tfflows_scoring"


class _ReadChunk(beam.DoFn):
    """(chunk index, (rows, categories)); a bad chunk goes to the ``errors`` output as (index, DataError
    parts); for a mixed density (``vocabularies``), the chunk's `UnseenCategories` state to ``unseen``."""

    def __init__(self, data: str, columns: Columns, vocabularies: Dict[str, List[str]]):
        self.data, self.columns, self.vocabularies = data, columns, vocabularies

    def process(self, chunk: Chunk):
        try:
            rows, categories = read_rows(self.data, self.columns, chunk)
            yield chunk.index, (rows, categories)
            if self.vocabularies:
                unseen = UnseenCategories(self.vocabularies)
                unseen.add(categories)
                yield beam.pvalue.TaggedOutput(_UNSEEN, (chunk.index, unseen.state()))
        except DataError as error:
            yield beam.pvalue.TaggedOutput(_ERRORS, (chunk.index, [error.source, error.where, error.problem,
                                                                    error.fix]))


def _shard(folder: str, index: int, suffix: str) -> str:
    return os.path.join(folder, f"{index:09d}{suffix}")


def _write_atomically(path: str, write) -> None:
    """``write(file)`` to a temporary name, then a rename: a retried bundle never leaves half a file."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def _write_scores(element, folder: str) -> None:
    index, scores = element
    _write_atomically(_shard(folder, index, ".npy"), lambda f: np.save(f, scores))


def _write_json(element, folder: str, suffix: str) -> None:
    index, parts = element
    _write_atomically(_shard(folder, index, suffix), lambda f: f.write(json.dumps(parts).encode()))


def score_with_beam(model_dir: str, data: str, columns: Columns, chunks: List[Chunk], batch_size: int,
                    beam_args: Sequence[str], shard_parent: Optional[str] = None,
                    unseen: Optional[UnseenCategories] = None) -> Iterator[np.ndarray]:
    """The scores of every chunk of `data`, in input order, computed by a Beam pipeline.

    Args:
      model_dir: the resolved SavedModel version folder (local or object store) every worker loads.
      data: the table, readable by every worker (errors name it by its absolute path).
      columns: `pipeline.scoring.match_columns` of `data` (the model's columns, by name or position).
      chunks: `pipeline.scoring.plan_chunks(data, columns)`.
      batch_size: rows per call of the SavedModel's signature.
      beam_args: Beam pipeline options (FnApiRunner when no ``--runner`` is named).
      shard_parent: where the temporary shard folder goes (default: the system's temporary folder).
      unseen: a mixed density's `UnseenCategories` (its vocabularies): the workers' counts of each
        chunk are merged into it, in chunk order, before the first table is yielded.

    Yields:
      `score_rows` tables of chunk 0, 1, ... (no rows for a .csv chunk of blank lines), after the
      pipeline has finished and every chunk was checked.

    Raises:
      DataError: the first bad chunk's error, or a chunk the runner lost.
    """
    # Workers run in working directories of their own: they get absolute paths.
    data = os.path.abspath(data)
    model_dir = model_dir if artifacts.is_object_store(model_dir) else os.path.abspath(model_dir)
    folder = tempfile.mkdtemp(prefix=".tfflows-scores-", dir=shard_parent)
    try:
        vocabularies = {name: sorted(known) for name, known in unseen.vocabularies.items()} if unseen else {}
        handler = KeyedModelHandler(LogProbHandler(model_dir, batch_size))
        with beam.Pipeline(options=pipeline_options(beam_args)) as pipeline:
            read = (pipeline
                    | "Chunks" >> beam.Create(chunks)
                    | "Spread" >> beam.Reshuffle()
                    | "Read" >> beam.ParDo(_ReadChunk(data, columns, vocabularies)).with_outputs(
                        _ERRORS, _UNSEEN, main="rows"))
            _ = read.rows | "Score" >> RunInference(handler) | "WriteScores" >> beam.Map(_write_scores, folder)
            _ = read[_ERRORS] | "WriteErrors" >> beam.Map(_write_json, folder, ".error.json")
            _ = read[_UNSEEN] | "WriteUnseen" >> beam.Map(_write_json, folder, ".unseen.json")
        names = set(os.listdir(folder))
        for chunk in chunks:
            if f"{chunk.index:09d}.error.json" in names:
                with open(_shard(folder, chunk.index, ".error.json")) as f:
                    raise DataError(*json.load(f))
        expected = (".npy", ".unseen.json") if vocabularies else (".npy",)
        for chunk in chunks:
            if any(f"{chunk.index:09d}{suffix}" not in names for suffix in expected):
                raise DataError(data, chunk.describe(),
                                f"no scores although Beam's {runner_name(beam_args)} reported success "
                                f"(the runner lost output)", "score on another runner (README 'Scale-out')")
        if unseen is not None and vocabularies:
            for chunk in chunks:
                with open(_shard(folder, chunk.index, ".unseen.json")) as f:
                    unseen.merge(json.load(f))
        for chunk in chunks:
            yield np.load(_shard(folder, chunk.index, ".npy"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
