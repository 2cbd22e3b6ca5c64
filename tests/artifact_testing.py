"""Shared test helper: a small trained-flow artifact on an ingested, transformed dataset."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras

from components.flow_artifact import save_flow
from components.ingest import load_split
from components.transform import load_transform
from models import build_flow


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
