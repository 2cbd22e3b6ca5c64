"""Shared test helper: a small trained-flow artifact on an ingested, transformed dataset."""

from __future__ import annotations

import contextlib

import numpy as np
import tensorflow as tf
import tf_keras

from tfflows.components.flow_artifact import save_flow
from tfflows.components.ingest import load_split
from tfflows.components.transform import load_transform
from tfflows.models import build_flow


def prepared_moons(root, num_samples: int, seed: int, **ingest_options):
    """(Examples URI, TransformGraph URI) of two moons ingested and transformed under ``root``
    (``ingest_options``: other `IngestConfig` fields, e.g. ``test_fraction``)."""
    from tfflows.components.config import IngestConfig, TransformConfig
    from tfflows.components.ingest import run_ingest
    from tfflows.components.transform import run_transform

    ex, tg = str(root / "examples"), str(root / "transform")
    run_ingest(IngestConfig("moons", num_samples=num_samples, seed=seed, **ingest_options), ex)
    run_transform(ex, TransformConfig(), tg)
    return ex, tg


def train_flow_artifact(examples_uri, transform_uri, uri, epochs, seed=0, discrete_levels=None):
    """Fits a 2-layer MAF on the train split for `epochs` (0: untrained) and saves it at `uri`."""
    tf_keras.utils.set_random_seed(seed)
    x = load_split(examples_uri, "train")
    if discrete_levels:
        x = x + np.random.RandomState(seed).uniform(size=x.shape).astype(np.float32)
    z = load_transform(transform_uri)(tf.constant(x))[0].numpy()
    model = build_flow("maf", z.shape[1], num_layers=2, hidden_units=[max(16, z.shape[1])])
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-2))
    if epochs:
        model.fit(z, batch_size=100, epochs=epochs, verbose=0)
    save_flow(model, uri, {"epochs": epochs})
    return uri


def serve_in_fresh_process(export_dir, x, num_samples, seed=(1, 2), workdir=None):
    """Loads a SavedModel in a new Python process and calls its signatures as a server would.

    Returns (log_prob of the rows x [N], samples [num_samples, D]) from `log_prob` and `sample`.
    """
    import json
    import os
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        rows = os.path.join(tmp, "x.npy")
        np.save(rows, np.asarray(x, np.float32))
        script = ("import sys, json, numpy as np, tensorflow as tf\n"
                  "m = tf.saved_model.load(sys.argv[1])\n"
                  "lp = m.signatures['log_prob'](x=tf.constant(np.load(sys.argv[2])))['log_prob'].numpy()\n"
                  "s = m.signatures['sample'](num_samples=tf.constant(int(sys.argv[3])),\n"
                  "                           seed=tf.constant([int(sys.argv[4]), int(sys.argv[5])]))['samples']\n"
                  "print(json.dumps({'lp': lp.tolist(), 'samples': s.numpy().tolist()}))\n")
        proc = subprocess.run([sys.executable, "-c", script, str(export_dir), rows, str(num_samples), *map(str, seed)],
                              capture_output=True, text=True, timeout=300, cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return np.asarray(out["lp"]), np.asarray(out["samples"]).reshape(num_samples, -1)


def export_tiny_flow(root, d):
    """(trained-model URI, SavedModel folder) of an untrained 1-layer MAF with identity preprocessing,
    exported the way push exports it: a fast stand-in for serving and push tests."""
    import os

    from tfflows.components.push.export import export_saved_model

    tf_keras.utils.set_random_seed(0)
    flow = build_flow("maf", d, num_layers=1, hidden_units=[8])
    flow.log_prob(tf.zeros([1, d]))  # builds the weights
    model_uri = os.path.join(str(root), "model")
    save_flow(flow, model_uri, {"epochs": 0})
    return model_uri, export_saved_model(model_uri, None, None, os.path.join(str(root), "export"))


@contextlib.contextmanager
def registered_pyfunc(tracking_uri: str, model_uri: str = "models:/tfflows/1"):
    """The MLflow pyfunc registered at ``model_uri`` in the store ``tracking_uri``, loaded with that
    store as MLflow's tracking URI for the block (reset after it: other tests' processes share it)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    try:
        yield mlflow.pyfunc.load_model(model_uri)
    finally:
        mlflow.set_tracking_uri(None)
