"""Transform executor logic as plain functions: Examples -> tf.Transform graph.

`run_transform` analyses the ``analyze_splits`` of an ingested Examples artifact with
tf.Transform on Beam and writes the transform graph (``transform_fn/``,
``transformed_metadata/``) plus ``preprocessing.json`` (the resolved method and constants)
into ``output_uri``, through a temporary folder moved into place only on success. Every split
of the input is first checked against the row counts ingest recorded, and the analysis must
have seen exactly the rows of ``analyze_splits`` (`components.ingest.verify`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Optional, Sequence

import apache_beam as beam
import numpy as np

from tfflows.components.config import TransformConfig
from tfflows.components.artifacts import publish_dir, staging_dir
from tfflows.components.errors import DataError, reraise_data_error
from tfflows.components.ingest.metadata import DatasetMetadata, read_metadata
from tfflows.components.ingest.loaders import SPLITS
from tfflows.components.ingest.runner import check_runner, pipeline_options
from tfflows.components.ingest.verify import (METRICS_NAMESPACE, counter_totals, lost_output,
                                              verify_splits)
from tfflows.components.transform.preprocessing import make_preprocessing_fn

__all__ = ["PREPROCESSING_FILE", "resolve", "run_transform", "benchmark_transform_config"]

PREPROCESSING_FILE = "preprocessing.json"


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
            lam = 0.05 if metadata.name == "cifar10" else 1e-6
    return {"method": method, "logit_lambda": lam, "num_levels": metadata.num_levels,
            "analyze_splits": list(config.analyze_splits), "event_dim": metadata.event_dim,
            "feature_names": list(metadata.feature_names),
            "dataset_fingerprint": metadata.fingerprint, "min_std": config.min_std}


def _probe_constant_columns(tmp_dir: str, resolved: dict, source: str) -> None:
    """Applies the written graph to one row; NaN in ``z`` marks a column with std <= min_std."""
    import tensorflow as tf
    import tensorflow_transform as tft

    d = resolved["event_dim"]
    out = tft.TFTransformOutput(tmp_dir).transform_features_layer()(
        {"x": tf.zeros([1, d], tf.float32)})
    z = out["z"].numpy()[0]
    bad = np.where(np.isnan(z))[0]
    if bad.size:
        j = int(bad[0])
        raise DataError(source, f"column {j} ({resolved['feature_names'][j]})",
                        f"standard deviation over {'+'.join(resolved['analyze_splits'])} is "
                        f"<= {resolved['min_std']} (a constant column has no density)",
                        "drop the column at ingestion (IngestConfig.columns) or add noise")


def _count_rows(batch) -> None:
    beam.metrics.Metrics.counter(METRICS_NAMESPACE, "transform_rows").inc(batch.num_rows)


def _verify_output(tmp_dir: str, counters, resolved: dict, metadata: DatasetMetadata,
                   runner: str) -> None:
    """The transform graph's files are there and the analysis saw every row it should."""
    import tensorflow as tf

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
      The resolved preprocessing (also written to ``<output_uri>/preprocessing.json``).

    Raises:
      DataError: a constant column (standardisation) or non-discrete data (logit).
    """
    import tensorflow as tf
    import tensorflow_transform.beam as tft_beam
    from tensorflow_transform.tf_metadata import schema_utils
    from tfx_bsl.public import tfxio

    metadata = read_metadata(examples_uri)
    resolved = resolve(config, metadata)
    preprocessing_fn = make_preprocessing_fn(
        resolved["method"], metadata.num_levels, resolved["logit_lambda"] or 0.0,
        config.min_std)
    schema = schema_utils.schema_from_feature_spec(
        {"x": tf.io.FixedLenFeature([metadata.event_dim], tf.float32)})
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
        if resolved["method"] == "standardize":
            _probe_constant_columns(tmp_dir, resolved, metadata.source)
        with open(os.path.join(tmp_dir, PREPROCESSING_FILE), "w") as f:
            json.dump(resolved, f, indent=2, sort_keys=True)
        publish_dir(tmp_dir, output_uri)
        return resolved
    finally:
        if os.path.isdir(tmp_dir):
            shutil.rmtree(tmp_dir, ignore_errors=True)
