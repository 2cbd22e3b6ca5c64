"""Export of a trained flow with its preprocessing as one SavedModel for TF Serving.

The exported `tf.Module` holds the tf.Transform layer (raw ``x`` -> ``z``, ``log_det``) and
the flow, and has three signatures (all float32 unless said otherwise):

A flow fitted to a target by reverse KL has no transform graph: its raw space is the target's,
and ``log_prob`` is log q(x) itself.

- ``serving_default`` and ``log_prob``: input ``x`` [None, D] in RAW feature space; output
  ``log_prob`` [None] = ``log p_z(z) + log_det`` (nats, data space; batch norm in eval mode).
  Never NaN: a row that overflows the model scores -inf (`models.flows.totally_ordered`).
  For discrete data ``x`` is a dequantised point in ``[0, L)^D``.
- ``sample``: inputs ``num_samples`` (int32 scalar) and ``seed`` (int32 [2], stateless: the
  same seed gives the same samples); output ``samples`` [num_samples, D] in RAW feature space,
  the preprocessing inverted:

  logit: ``x = L (sigmoid(z) - lam) / (1 - 2 lam)``; standardisation: ``x = z std + mean``;
  identity: ``x = z``.

A VAE (objective "vae") is exported with the same signatures on its own data space (levels
scaled to [0, 1]; binary pixels {0, 1} for the Bernoulli likelihood): ``log_prob`` is the
importance-sampled log-likelihood log (1/K) sum_k p(x, z_k) / q(z_k | x) with K posterior
samples of a fixed seed (deterministic; K = `EvaluateConfig.importance_samples`), ``sample``
draws x ~ p(x | z), z ~ N(0, I).

The standardisation constants are analyzer outputs inside the transform graph; they are read
back by probing the graph (`preprocessing_constants`): ``z(x) = (x - mean) / std`` is affine,
so two probes give them, the second one centred on the first estimate for float32 accuracy.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from tfflows.components.artifacts import METADATA_FILE
from tfflows.models.flows import totally_ordered

__all__ = ["SIGNATURES", "WARMUP_FILE", "FlowServingModule", "VAEServingModule", "export_saved_model",
           "preprocessing_constants", "read_warmup_requests", "write_warmup_requests"]

SIGNATURES = ("serving_default", "log_prob", "sample")
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"  # TF Serving replays these before serving
WARMUP_ROWS = 3


def write_warmup_requests(export_dir: str, rows: np.ndarray, num_samples: int = 2) -> str:
    """``assets.extra/tf_serving_warmup_requests``: a TFRecord of `PredictionLog` protos, one
    ``log_prob`` request on ``rows`` (raw rows, float32 [N, D]) and one ``sample`` request, which
    TF Serving runs when it loads the version, so the first real request does not pay for graph
    warm-up (TF Serving's SavedModel warm-up format)."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    requests = (("log_prob", {"x": np.asarray(rows, np.float32)}),
                ("sample", {"num_samples": np.int32(num_samples), "seed": np.array([0, 0], np.int32)}))
    path = os.path.join(export_dir, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for signature, inputs in requests:
            request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(signature_name=signature))
            for key, value in inputs.items():
                request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(export_dir: str) -> list:
    """``[(signature_name, {input name: ndarray}), ...]`` parsed back from the warm-up file."""
    from tensorflow_serving.apis import prediction_log_pb2

    out = []
    for record in tf.data.TFRecordDataset(os.path.join(export_dir, WARMUP_FILE)).as_numpy_iterator():
        request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
        out.append((request.model_spec.signature_name,
                    {k: tf.make_ndarray(v) for k, v in request.inputs.items()}))
    return out


def _read_preprocessing(transform_graph_uri: str) -> dict:
    from tfflows.components.transform import PREPROCESSING_FILE

    with tf.io.gfile.GFile(os.path.join(transform_graph_uri, PREPROCESSING_FILE)) as f:
        return json.load(f)


def preprocessing_constants(transform_graph_uri: str) -> dict:
    """The preprocessing and the constants of its inverse.

    Returns ``{"method", "event_dim", "num_levels", "logit_lambda", "mean", "std"}``; mean and
    std (float64 lists) only for ``"standardize"``.
    """
    from tfflows.components.transform import load_transform

    prep = _read_preprocessing(transform_graph_uri)
    out = {k: prep.get(k) for k in ("method", "event_dim", "num_levels", "logit_lambda")}
    if prep["method"] == "standardize":
        transform = load_transform(transform_graph_uri)
        d = prep["event_dim"]
        mean, std = np.zeros(d), np.ones(d)
        for _ in range(2):  # z = (x - mean)/std: probe at mean and mean + std of the estimate
            lo, hi = mean, mean + std
            z = transform(tf.constant(np.stack([lo, hi]), tf.float32))[0].numpy().astype(
                np.float64)
            new_std = (hi - lo) / (z[1] - z[0])
            mean, std = lo - z[0] * new_std, new_std
        out["mean"], out["std"] = mean.tolist(), std.tolist()
    return out


class FlowServingModule(tf.Module):
    """Transform graph (if any) + flow, with `log_prob` and `sample` as serving functions."""

    def __init__(self, flow, transform_graph_uri, constants: dict):
        super().__init__(name="flow_serving")
        import tensorflow_transform as tft

        self.flow = flow
        self.tft_layer = (tft.TFTransformOutput(transform_graph_uri).transform_features_layer()
                          if transform_graph_uri else None)
        self.event_dim = int(constants["event_dim"])
        self.method = constants["method"]
        if self.method == "logit":
            self.num_levels = float(constants["num_levels"])
            self.lam = float(constants["logit_lambda"])
        elif self.method == "standardize":
            self.mean = tf.constant(constants["mean"], tf.float64)
            self.std = tf.constant(constants["std"], tf.float64)
        d = self.event_dim
        self.log_prob = tf.function(
            self._log_prob, input_signature=[tf.TensorSpec([None, d], tf.float32, name="x")])
        self.sample = tf.function(self._sample, input_signature=[
            tf.TensorSpec([], tf.int32, name="num_samples"),
            tf.TensorSpec([2], tf.int32, name="seed")])
        # Saved too (not a signature): ``module.inverse_preprocessing(z)`` after loading.
        self.inverse_preprocessing = tf.function(
            self._inverse_preprocessing,
            input_signature=[tf.TensorSpec([None, d], tf.float32, name="z")])

    def _log_prob(self, x):
        if self.tft_layer is None:
            lp = self.flow.log_prob(x, training=False)
        else:
            out = self.tft_layer({"x": x})
            lp = self.flow.log_prob(out["z"], training=False) + out["log_det"]
        return {"log_prob": tf.identity(totally_ordered(lp), name="log_prob")}

    def _inverse_preprocessing(self, z):
        """Raw ``x`` from model-space ``z`` (float32 in and out, float64 inside)."""
        z64 = tf.cast(z, tf.float64)
        if self.method == "logit":
            x = self.num_levels * (tf.sigmoid(z64) - self.lam) / (1.0 - 2.0 * self.lam)
        elif self.method == "standardize":
            x = z64 * self.std + self.mean
        else:
            x = z64
        return tf.cast(x, tf.float32)

    def _sample(self, num_samples, seed):
        z = self.flow.sample(num_samples, seed=seed)
        return {"samples": tf.identity(self.inverse_preprocessing(z), name="samples")}


class VAEServingModule(tf.Module):
    """A VAE with `log_prob` (importance-sampled, K samples, fixed seed) and `sample`."""

    def __init__(self, vae, importance_samples: int):
        super().__init__(name="vae_serving")
        self.vae = vae
        self.importance_samples = int(importance_samples)
        self.log_prob = tf.function(self._log_prob, input_signature=[
            tf.TensorSpec([None, vae.data_dim], tf.float32, name="x")])
        self.sample = tf.function(self._sample, input_signature=[
            tf.TensorSpec([], tf.int32, name="num_samples"),
            tf.TensorSpec([2], tf.int32, name="seed")])

    def _log_prob(self, x):
        lp = self.vae.importance_log_likelihood(x, self.importance_samples, seed=tf.constant([0, 0]))
        return {"log_prob": tf.identity(totally_ordered(lp), name="log_prob")}

    def _sample(self, num_samples, seed):
        return {"samples": tf.identity(self.vae.sample(num_samples, seed=seed), name="samples")}


def export_saved_model(model_uri: str, transform_graph_uri, metadata,
                       export_dir: str, importance_samples: int = 128, rows=None) -> str:
    """Writes the SavedModel of a trained flow with its preprocessing to ``export_dir``.

    Args:
      model_uri: trained flow (`components.flow_artifact.save_flow`).
      transform_graph_uri: TransformGraph artifact the flow was trained on (None: a flow fitted
        to a target, no preprocessing).
      metadata: the dataset's `DatasetMetadata` (its event_dim is checked against the flow's),
        or None.
      export_dir: the folder written (absent or empty).
      importance_samples: VAEs only: K of the exported `log_prob`.
      rows: a few raw rows of the data (e.g. the test split's first) for the TF Serving warm-up
        requests (`write_warmup_requests`); None: samples of the model itself.

    Returns:
      ``export_dir``.
    """
    from tfflows.components.flow_artifact import load_flow, read_summary

    flow = load_flow(model_uri)
    summary = read_summary(model_uri)
    if summary.get("objective") == "vae":
        return _export_vae(flow, summary, metadata, export_dir, importance_samples, rows)
    constants = (preprocessing_constants(transform_graph_uri) if transform_graph_uri else
                 {"method": "identity", "event_dim": flow.event_dim, "num_levels": None, "logit_lambda": None})
    d = int(constants["event_dim"])
    if metadata is not None and int(metadata.event_dim) != d or flow.event_dim != d:
        raise ValueError(f"event_dim mismatch: flow {flow.event_dim}, transform {d}, "
                         f"metadata {getattr(metadata, 'event_dim', None)}")
    module = FlowServingModule(flow.frozen(), transform_graph_uri, constants)  # masks baked in
    signatures = {"serving_default": module.log_prob.get_concrete_function(),
                  "log_prob": module.log_prob.get_concrete_function(),
                  "sample": module.sample.get_concrete_function()}
    tf.saved_model.save(module, export_dir, signatures=signatures)
    # A flow fitted to a target has no data rows: its own samples stand in.
    write_warmup_requests(export_dir, rows[:WARMUP_ROWS] if rows is not None else module.sample(
        tf.constant(WARMUP_ROWS), tf.constant([0, 0]))["samples"].numpy())
    with tf.io.gfile.GFile(os.path.join(export_dir, METADATA_FILE), "w") as f:
        json.dump({"preprocessing": constants, "flow_kind": flow.config.kind,
                   "objective": summary.get("objective", "max_likelihood"), "target": summary.get("target"),
                   "dataset": dataclasses.asdict(metadata) if metadata is not None else None}, f, indent=2)
    return export_dir


def _export_vae(vae, summary: dict, metadata, export_dir: str, importance_samples: int, rows) -> str:
    module = VAEServingModule(vae, importance_samples)
    signatures = {"serving_default": module.log_prob.get_concrete_function(),
                  "log_prob": module.log_prob.get_concrete_function(),
                  "sample": module.sample.get_concrete_function()}
    tf.saved_model.save(module, export_dir, signatures=signatures)
    # The served space is the VAE's own: [0, 1] (binary for Bernoulli), so images are shown as is.
    dataset = dict(dataclasses.asdict(metadata), discrete=False, num_levels=1) if metadata is not None else None
    write_warmup_requests(export_dir, np.asarray(rows[:WARMUP_ROWS]) * summary["data_scale"] if rows is not None
                          else module.sample(tf.constant(WARMUP_ROWS), tf.constant([0, 0]))["samples"].numpy())
    with tf.io.gfile.GFile(os.path.join(export_dir, METADATA_FILE), "w") as f:
        json.dump({"objective": "vae", "flow_kind": "vae", "vae": summary.get("vae"),
                   "data_scale": summary.get("data_scale"), "importance_samples": int(importance_samples),
                   "preprocessing": {"method": "scale", "factor": summary.get("data_scale")},
                   "dataset": dataset}, f, indent=2)
    return export_dir
