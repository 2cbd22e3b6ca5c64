"""Ingest + transform as TFX components under a real LocalDagRunner (SQLite metadata)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tfflows.components.config import IngestConfig, TransformConfig
from tfflows.components.ingest import load_split, read_metadata
from tfflows.components.ingest.component import IngestExamples
from tfflows.components.ingest.runner import DEFAULT_BEAM_ARGS
from tfflows.components.transform import apply_transform, benchmark_transform_config
from tfflows.components.transform.component import TransformData


def _run_pipeline(root, name, ingest_config, transform_config):
    from tfx.orchestration import metadata, pipeline
    from tfx.orchestration.local import local_dag_runner

    ingest = IngestExamples(ingest_config)
    transform = TransformData(ingest.outputs["examples"], transform_config)
    p = pipeline.Pipeline(
        pipeline_name=name,
        pipeline_root=os.path.join(root, "root"),
        components=[ingest, transform],
        metadata_connection_config=metadata.sqlite_metadata_connection_config(
            os.path.join(root, "metadata.db")),
        beam_pipeline_args=list(DEFAULT_BEAM_ARGS),
        enable_cache=False)
    local_dag_runner.LocalDagRunner().run(p)
    return _artifact_uris(os.path.join(root, "metadata.db"))


def _artifact_uris(db_path):
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata

    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(db_path))
    out = {}
    for type_name in ("Examples", "TransformGraph"):
        artifacts = store.get_artifacts_by_type(type_name)
        assert len(artifacts) == 1, (type_name, artifacts)
        out[type_name] = artifacts[0]
    return out


@pytest.mark.slow
def test_local_dag_runner_digits_and_miniboone_file(tmp_path):
    # 1) A bundled dataset: digits (discrete, logit).
    uris = _run_pipeline(str(tmp_path / "digits"), "digits_data",
                         IngestConfig("digits", seed=3), TransformConfig())
    examples = uris["Examples"]
    assert json.loads(examples.properties["split_names"].string_value) == ["train", "eval", "test"]
    meta = read_metadata(examples.uri)
    assert meta.event_dim == 64 and meta.num_levels == 17 and meta.discrete
    assert sum(meta.split_sizes.values()) == 1797
    x = load_split(examples.uri, "test")[:5] + 0.5
    z, log_det = apply_transform(uris["TransformGraph"].uri, x)
    y = 1e-6 + (1 - 2e-6) * x / 17.0
    np.testing.assert_allclose(z.numpy(), np.log(y / (1 - y)), rtol=1e-5, atol=1e-5)
    assert log_det.shape == (5,)

    # 2) A benchmark-format file written out: MINIBOONE data.npy (standardise train+eval).
    rng = np.random.RandomState(0)
    data = rng.normal(size=(200, 4)) * [1.0, 2.0, 3.0, 4.0] + [0.0, 1.0, -1.0, 5.0]
    folder = tmp_path / "bench" / "miniboone"
    folder.mkdir(parents=True)
    np.save(folder / "data.npy", data)
    uris = _run_pipeline(str(tmp_path / "mb"), "miniboone_data",
                         IngestConfig("miniboone", path=str(tmp_path / "bench")),
                         benchmark_transform_config("miniboone"))
    meta = read_metadata(uris["Examples"].uri)
    assert meta.split_sizes == {"train": 162, "eval": 18, "test": 20}
    train_eval = data[:180]
    z, log_det = apply_transform(uris["TransformGraph"].uri, data[180:].astype(np.float32))
    expected = (data[180:] - train_eval.mean(0)) / train_eval.std(0)
    np.testing.assert_allclose(z.numpy(), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(log_det.numpy(), -np.log(train_eval.std(0)).sum(), rtol=1e-5)
