"""Transform executor logic as plain functions: Examples -> tf.Transform graph.

`run_transform` analyses the ``analyze_splits`` of an ingested Examples artifact with
tf.Transform on Beam and writes the transform graph (``transform_fn/``,
``transformed_metadata/``) plus ``preprocessing.json`` (the resolved method and constants)
into ``output_uri``, through a temporary folder moved into place only on success. Every split
of the input is first checked against the row counts ingest recorded, and the analysis must
have seen exactly the rows of ``analyze_splits`` (`components.ingest.verify`).

``preprocessing.json`` holds the `Preprocessing` (method and constants) plus the run's
``analyze_splits``, ``feature_names``, ``dataset_fingerprint`` and ``min_std``; for a
conditional dataset also ``context_names`` and ``"context"``, the context's standardisation (its
mean and std over ``analyze_splits``, computed like x's; `read_context_preprocessing`); for
categorical columns ``"categories"``, each column's vocabulary of ``analyze_splits`` in code order
(the graph's vocabulary assets, `read_categories`), and for categorical context columns
``"context_categories"`` likewise (`read_context_categories`). The
standardisation's mean and std are computed once, in float64, by a Beam combine inside the
tf.Transform analysis (`_StandardizeMoments`): the graph holds them as constants and the JSON
records the same values, so `Preprocessing.forward` computes what the graph computes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Optional, Sequence

import apache_beam as beam
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import schema_utils
from tfx_bsl.public import tfxio

from tfflows.components.config import TransformConfig
from tfflows.components.artifacts import publish_dir, staging_dir
from tfflows.components.errors import DataError, reraise_data_error
from tfflows.components.ingest.metadata import CATEGORICAL_KEY, CONTEXT_CATEGORICAL_KEY, DatasetMetadata, read_metadata
from tfflows.components.ingest.loaders import SPLITS
from tfflows.components.ingest.runner import check_runner, pipeline_options
from tfflows.components.ingest.verify import (METRICS_NAMESPACE, counter_totals, lost_output,
                                              verify_splits)
from tfflows.components.transform.preprocessing import (CATEGORIES, CONTEXT_CATEGORIES, CONTEXT_PREPROCESSING,
                                                        PREPROCESSING_FILE, Moments, Preprocessing,
                                                        make_preprocessing_fn, vocabulary_file)

__all__ = ["PREPROCESSING_FILE", "resolve", "run_transform", "benchmark_transform_config",
           "default_logit_lambda"]


def benchmark_transform_config(dataset: str) -> TransformConfig:
    """The MAF paper's preprocessing for a benchmark (appendix D.2, gpapamak/maf datasets).

    POWER, MINIBOONE: standardise with train+eval statistics; GAS: with all rows (the paper's
    code standardises before splitting); HEPMASS: train statistics; BSDS300: as stored;
    MNIST: logit with lam = 1e-6; CIFAR-10: logit with lam = 0.05.
    """
    table = {
        "power": TransformConfig(method="standardize", analyze_splits=("train", "eval")),
        "miniboone": TransformConfig(method="standardize", analyze_splits=("train", "eval")),
        "gas": TransformConfig(method="standardize", analyze_splits=("train", "eval", "test")),
        "hepmass": TransformConfig(method="standardize", analyze_splits=("train",)),
        "bsds300": TransformConfig(method="identity"),
        "mnist": TransformConfig(method="logit", logit_lambda=1e-6),
        "cifar10": TransformConfig(method="logit", logit_lambda=0.05),
    }
    if dataset not in table:
        raise ValueError(f"`dataset` must be one of {sorted(table)}, but is {dataset!r}")
    return table[dataset]


def default_logit_lambda(dataset: str) -> float:
    """The logit's ``lam`` when the config leaves it None: CIFAR-10's 0.05, else MNIST's 1e-6."""
    return 0.05 if dataset == "cifar10" else 1e-6


def resolve(config: TransformConfig, metadata: DatasetMetadata) -> dict:
    """The concrete method and constants for one dataset (``"auto"`` and default lambda)."""
    method = config.method
    if method == "auto":
        method = "logit" if metadata.discrete else "standardize"
    lam = None
    if method == "logit":
        if not metadata.num_levels:
            raise DataError(metadata.source, "dataset_metadata.json num_levels",
                            "the logit transform needs discrete data with a number of levels",
                            "use method 'standardize', or ingest with discrete=True and "
                            "num_levels")
        lam = config.logit_lambda
        if lam is None:
            lam = default_logit_lambda(metadata.name)
    return {"method": method, "logit_lambda": lam,
            "num_levels": metadata.num_levels if method == "logit" else None,
            "analyze_splits": list(config.analyze_splits), "event_dim": metadata.event_dim,
            "feature_names": list(metadata.feature_names),
            **({"context_names": metadata.context_names} if metadata.context_names else {}),
            **({"categorical_names": metadata.categorical_names} if metadata.categorical_names else {}),
            **({"context_categorical_names": metadata.context_categorical_names}
               if metadata.context_categorical_names else {}),
            "dataset_fingerprint": metadata.fingerprint, "min_std": config.min_std}


class _MomentsFn(beam.CombineFn):
    """Merges the `Moments` of tf.Transform's batches ``(x [B, D],)``."""

    def __init__(self, event_dim: int):
        self.event_dim = event_dim

    def create_accumulator(self) -> Moments:
        return Moments.empty(self.event_dim)

    def add_input(self, moments: Moments, batch) -> Moments:
        return moments.merge(Moments.of(batch[0]))

    def merge_accumulators(self, accumulators) -> Moments:
        merged = self.create_accumulator()
        for moments in accumulators:
            merged = merged.merge(moments)
        return merged

    def extract_output(self, moments: Moments) -> Moments:
        return moments


def _write_moments(moments: Moments, path: str) -> None:
    with tf.io.gfile.GFile(path, "w") as f:  # JSON floats are exact float64 reprs
        json.dump({"count": moments.count, "mean": moments.mean.tolist(), "std": moments.std.tolist()}, f)


class _StandardizeMoments(beam.PTransform):
    """tf.Transform analyzer: the mean and std of the analysed rows, also written to ``path``
    (the graph's constants and the JSON's are then one computation's)."""

    def __init__(self, event_dim: int, path: str):
        super().__init__()
        self.event_dim, self.path = event_dim, path

    def expand(self, batches):
        moments = batches | "Moments" >> beam.CombineGlobally(_MomentsFn(self.event_dim))
        _ = moments | "Write" >> beam.Map(_write_moments, self.path)
        return (moments | "Mean" >> beam.Map(lambda m: m.mean),
                moments | "Std" >> beam.Map(lambda m: m.std))


def _fitted_standardization(path: str, resolved: dict, source: str, names: Optional[Sequence[str]] = None
                            ) -> Preprocessing:
    """The standardisation of the moments at ``path``; a column (of ``names``, default the
    features') with std <= min_std is refused."""
    with open(path) as f:
        moments = json.load(f)
    bad = np.where(np.asarray(moments["std"]) <= resolved["min_std"])[0]
    if bad.size:
        j = int(bad[0])
        raise DataError(source, f"column {j} ({(names or resolved['feature_names'])[j]})",
                        f"standard deviation over {'+'.join(resolved['analyze_splits'])} is "
                        f"<= {resolved['min_std']} (a constant column has no density)",
                        "drop the column at ingestion (IngestConfig.columns) or add noise")
    return Preprocessing.standardize(moments["mean"], moments["std"])


def _count_rows(batch) -> None:
    beam.metrics.Metrics.counter(METRICS_NAMESPACE, "transform_rows").inc(batch.num_rows)


def _verify_output(tmp_dir: str, counters, resolved: dict, metadata: DatasetMetadata,
                   runner: str) -> None:
    """The transform graph's files are there and the analysis saw every row it should."""
    for needed in ("transform_fn/saved_model.pb", "transformed_metadata/schema.pbtxt"):
        if not tf.io.gfile.exists(os.path.join(tmp_dir, needed)):
            raise lost_output("transform", runner, needed,
                              "the job reported success but this file of the transform graph "
                              "is missing")
    if counters is not None:
        splits = resolved["analyze_splits"]
        want = sum(metadata.split_sizes[s] for s in splits)
        got = counters.get("transform_rows", 0)
        if got != want:
            raise lost_output("transform", runner, f"splits {'+'.join(splits)}",
                              f"the analysis read {got} rows, ingest recorded {want}")


def run_transform(examples_uri: str, config: TransformConfig, output_uri: str,
                  beam_pipeline_args: Optional[Sequence[str]] = None) -> dict:
    """Analyses an ingested Examples artifact and writes the tf.Transform graph.

    Args:
      examples_uri: folder of an ingested Examples artifact (`components.ingest.run_ingest`).
      config: the transform's configuration.
      output_uri: folder for the TransformGraph artifact (absent or empty).
      beam_pipeline_args: Beam arguments (default ``--runner=FnApiRunner``).

    Returns:
      The resolved settings (`resolve`: method, logit_lambda, num_levels, analyze_splits, ...),
      equal across runners; ``<output_uri>/preprocessing.json`` holds them plus the fitted
      constants (`read_preprocessing`).

    Raises:
      DataError: a constant column (standardisation) or non-discrete data (logit).
    """
    metadata = read_metadata(examples_uri)
    resolved = resolve(config, metadata)
    # The logit's and identity's constants are known now; the standardisation's come from the analysis.
    known = None if resolved["method"] == "standardize" else Preprocessing.from_dict(resolved)
    context_dim = metadata.context_dim
    categorical = metadata.categorical_names or []
    context_categorical = metadata.context_categorical_names or []
    schema = schema_utils.schema_from_feature_spec(metadata.example_spec())
    runner = check_runner(beam_pipeline_args)
    # Train and evaluate read the other splits without Beam: check all of them here, once.
    verify_splits(examples_uri, {s: metadata.split_sizes[s] for s in SPLITS}, "transform",
                  runner, fix_hint=f"the examples changed after ingest recorded "
                                   f"{metadata.split_sizes}; ingest the dataset again")
    patterns = [os.path.join(examples_uri, f"Split-{split}", "*.gz")
                for split in config.analyze_splits]
    tmp_dir = staging_dir(output_uri)
    try:
        with tempfile.TemporaryDirectory() as tft_tmp:
            moments_path = os.path.join(tft_tmp, "moments.json")
            context_path = os.path.join(tft_tmp, "context_moments.json")
            preprocessing_fn = make_preprocessing_fn(
                known, metadata.event_dim,
                moments=None if known else _StandardizeMoments(metadata.event_dim, moments_path),
                context_dim=context_dim,
                context_moments=None if context_dim is None else _StandardizeMoments(context_dim, context_path),
                num_categorical=len(categorical), num_context_categorical=len(context_categorical))
            try:
                pipeline = beam.Pipeline(options=pipeline_options(beam_pipeline_args))
                with tft_beam.Context(temp_dir=tft_tmp, force_tf_compat_v1=False):
                    sources = [tfxio.TFExampleRecord(file_pattern=p, schema=schema)
                               for p in patterns]
                    batches = [pipeline | f"Read{i}" >> s.BeamSource()
                               for i, s in enumerate(sources)]
                    raw = batches | "FlattenSplits" >> beam.Flatten()
                    _ = raw | "CountRows" >> beam.Map(_count_rows)
                    transform_fn = ((raw, sources[0].TensorAdapterConfig())
                                    | "Analyze" >> tft_beam.AnalyzeDataset(preprocessing_fn))
                    _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(tmp_dir)
                result = pipeline.run()
                result.wait_until_finish()
            except DataError:
                raise
            except Exception as err:
                reraise_data_error(err)
                raise
            _verify_output(tmp_dir, counter_totals(result), resolved, metadata, runner)
            preprocessing = known or _fitted_standardization(moments_path, resolved, metadata.source)
            recorded = {} if context_dim is None else {CONTEXT_PREPROCESSING: _fitted_standardization(
                context_path, resolved, metadata.source, metadata.numeric_context_names).to_dict()}
            graph = tft.TFTransformOutput(tmp_dir)
            for record, key, names in ((CATEGORIES, CATEGORICAL_KEY, categorical),
                                       (CONTEXT_CATEGORIES, CONTEXT_CATEGORICAL_KEY, context_categorical)):
                if names:
                    recorded[record] = {name: [v.decode() for v in graph.vocabulary_by_name(vocabulary_file(i, key))]
                                        for i, name in enumerate(names)}
        with open(os.path.join(tmp_dir, PREPROCESSING_FILE), "w") as f:
            json.dump({**resolved, **preprocessing.to_dict(), **recorded}, f, indent=2, sort_keys=True)
        publish_dir(tmp_dir, output_uri)
        return resolved
    finally:
        if os.path.isdir(tmp_dir):
            shutil.rmtree(tmp_dir, ignore_errors=True)
