"""Checkpoints and the trained model on ``gs://`` through TensorFlow's own GCS file system,
against fake-gcs-server on loopback, reached through the TLS proxy of `tests.gcs_testing` (its
docstring says why TensorFlow needs one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import gcs_testing

BUCKET = "tfflows-ckpt"


@pytest.fixture(scope="module")
def gcs_for_tensorflow(tmp_path_factory):
    """(the environment under which TensorFlow's gs:// reaches a fake-gcs-server holding BUCKET,
    a google-cloud-storage client of that server): `tests.gcs_testing.gcs_for_tensorflow`."""
    with gcs_testing.gcs_for_tensorflow(str(tmp_path_factory.mktemp("gcs")), BUCKET) as (env, client):
        yield env, client


# Trains one epoch with checkpoints and the model on gs://, then a second run to two epochs
# resumes from the bucket's checkpoint; prints the log lines and the final log-probs.
TRAIN = """
import json, logging, sys
from tfflows.components.flow_artifact import load_flow
from tfflows.components.train import TrainConfig, run_train
examples, graph, model, ckpt, config = sys.argv[1:]
logging.basicConfig(level=logging.INFO, format="%(message)s")
config = json.loads(config)
run_train(examples, graph, model, TrainConfig(**{**config, "epochs": 1}), checkpoint_dir=ckpt)
run_train(examples, graph, model, TrainConfig(**config), checkpoint_dir=ckpt)
flow = load_flow(model)
print("WEIGHTS", json.dumps([v.numpy().ravel().tolist() for v in flow.variables]))
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_checkpoints_and_model_on_gs_resume_like_local(gcs_for_tensorflow, tmp_path):
    from tfflows.components.config import IngestConfig, TransformConfig
    from tfflows.components.ingest import run_ingest
    from tfflows.components.transform import run_transform

    examples, graph = str(tmp_path / "examples"), str(tmp_path / "transform")
    run_ingest(IngestConfig("moons", num_samples=300, seed=1), examples)
    run_transform(examples, TransformConfig(), graph)
    config = ('{"kind": "maf", "num_layers": 2, "hidden_units": [8], "batch_size": 50, "epochs": 2, '
              '"max_steps_per_epoch": 3, "seed": 3}')

    def train(model, ckpt, env):
        proc = subprocess.run([sys.executable, "-c", TRAIN, examples, graph, model, ckpt, config],
                              capture_output=True, text=True, timeout=500, cwd=tmp_path,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **env))
        assert proc.returncode == 0, proc.stderr[-4000:]
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("WEIGHTS ")][-1]
        return proc.stderr, [np.asarray(w) for w in json.loads(line.split(" ", 1)[1])]

    env, client = gcs_for_tensorflow
    log, on_gcs = train(f"gs://{BUCKET}/run/model", f"gs://{BUCKET}/run/ckpt", env)
    assert f"resumed from gs://{BUCKET}/run/ckpt/ckpt-1 (epoch 1 done)" in log, log[-3000:]
    assert "epoch 2: train" in log and f"to gs://{BUCKET}/run/model" in log
    _, local = train(str(tmp_path / "model"), str(tmp_path / "ckpt"), {})
    for a, b in zip(on_gcs, local):
        np.testing.assert_array_equal(a, b)
    names = {b.name for b in client.list_blobs(BUCKET)}  # what the bucket holds, seen by another client
    assert {"run/ckpt/ckpt-2.index", "run/ckpt/checkpoint", "run/model/summary.json"} <= names, sorted(names)
