"""The trained-model artifact: how a flow is written by train and read by evaluate and push.

Layout of the artifact folder:
  flow_config.json   `build_flow`'s options, `FlowConfig.to_dict()` (enough to rebuild the architecture), or
  vae_config.json    for a VAE (objective "vae"): the `models.vae.IAFVAE` arguments
  mixed_config.json  for a density of mixed rows (categorical columns): the `models.MixedDensity` arguments
  weights/           a tf.train.Checkpoint of the model (`weights/flow-1.*`)
  summary.json       what the trainer reports (`components.summary.ModelSummary`)
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from tfflows.components.summary import SUMMARY_FILE, ModelSummary
from tfflows.models import FlowModel, MixedDensity, build_flow
from tfflows.models.vae import IAFVAE

__all__ = ["save_flow", "load_flow", "read_summary"]

CONFIG_FILE = "flow_config.json"
VAE_CONFIG_FILE = "vae_config.json"
MIXED_CONFIG_FILE = "mixed_config.json"
WEIGHTS_DIR = "weights"


def save_flow(model, uri: str, summary: dict | None = None) -> None:
    """Writes the model's (a flow's, a VAE's or a mixed density's) configuration, weights and an optional
    summary under `uri`."""
    tf.io.gfile.makedirs(uri)
    name = VAE_CONFIG_FILE if isinstance(model, IAFVAE) else MIXED_CONFIG_FILE if isinstance(model, MixedDensity) \
        else CONFIG_FILE
    config = model.get_config()  # a flow's: its options as one flat dict (`FlowConfig.to_dict`)
    with tf.io.gfile.GFile(os.path.join(uri, name), "w") as f:
        json.dump(config, f, indent=2, default=list)
    tf.train.Checkpoint(flow=model).write(os.path.join(uri, WEIGHTS_DIR, "flow"))
    if summary is not None:
        with tf.io.gfile.GFile(os.path.join(uri, SUMMARY_FILE), "w") as f:
            json.dump(summary, f, indent=2)


def load_flow(uri: str) -> FlowModel:
    """Rebuilds the flow (VAE, mixed density) saved by `save_flow` and restores its weights (all must match)."""
    path = os.path.join(uri, CONFIG_FILE)
    vae_path = os.path.join(uri, VAE_CONFIG_FILE)
    mixed_path = os.path.join(uri, MIXED_CONFIG_FILE)
    if tf.io.gfile.exists(mixed_path):
        with tf.io.gfile.GFile(mixed_path) as f:
            model = MixedDensity.from_config(json.load(f))
    elif tf.io.gfile.exists(vae_path):
        with tf.io.gfile.GFile(vae_path) as f:
            model = IAFVAE(**json.load(f))
    elif not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"{path}: no trained flow here; point at a train component's model output.")
    else:
        with tf.io.gfile.GFile(path) as f:
            config = json.load(f)
        kind, event_dim = config.pop("kind"), config.pop("event_dim")
        model = build_flow(kind, event_dim, **config)
    status = tf.train.Checkpoint(flow=model).read(os.path.join(uri, WEIGHTS_DIR, "flow"))
    status.assert_existing_objects_matched().expect_partial()  # the optimiser's slots are not needed
    return model


def read_summary(uri: str) -> ModelSummary:
    """The model's summary (`ModelSummary.read`)."""
    return ModelSummary.read(uri)
