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

Which module is exported is the objective's choice (`components.objectives`): the two flow
objectives export this one (`export_flow`); a VAE exports its own with the same signatures on its
own data space (`components.objectives.vae`). `save_serving_model` writes either.

The inverse is `components.transform.Preprocessing.inverse`, with the constants the transform
component wrote beside its graph (`read_preprocessing`); the same constants go to the metadata
file under ``"preprocessing"``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from tfflows.components.artifacts import METADATA_FILE
from tfflows.models.flows import totally_ordered

__all__ = ["SIGNATURES", "WARMUP_FILE", "FlowServingModule", "export_flow", "export_saved_model", "save_serving_model",
           "read_warmup_requests", "write_warmup_requests"]

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


class FlowServingModule(tf.Module):
    """Transform graph (if any) + flow, with `log_prob` and `sample` as serving functions."""

    def __init__(self, flow, transform_graph_uri, preprocessing):
        super().__init__(name="flow_serving")
        import tensorflow_transform as tft

        self.flow = flow
        self.tft_layer = (tft.TFTransformOutput(transform_graph_uri).transform_features_layer()
                          if transform_graph_uri else None)
        self.preprocessing = preprocessing  # a `components.transform.Preprocessing`
        self.event_dim = int(preprocessing.event_dim)
        d = self.event_dim
        self.log_prob = tf.function(
            self._log_prob, input_signature=[tf.TensorSpec([None, d], tf.float32, name="x")])
        self.sample = tf.function(self._sample, input_signature=[
            tf.TensorSpec([], tf.int32, name="num_samples"),
            tf.TensorSpec([2], tf.int32, name="seed")])
        # Saved too (not a signature): ``module.inverse_preprocessing(z)`` after loading.
        self.inverse_preprocessing = tf.function(
            preprocessing.inverse,
            input_signature=[tf.TensorSpec([None, d], tf.float32, name="z")])

    def _log_prob(self, x):
        if self.tft_layer is None:
            lp = self.flow.log_prob(x, training=False)
        else:
            out = self.tft_layer({"x": x})
            lp = self.flow.log_prob(out["z"], training=False) + out["log_det"]
        return {"log_prob": tf.identity(totally_ordered(lp), name="log_prob")}

    def _sample(self, num_samples, seed):
        z = self.flow.sample(num_samples, seed=seed)
        return {"samples": tf.identity(self.inverse_preprocessing(z), name="samples")}


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
    from tfflows.components.objectives import get_objective

    summary = read_summary(model_uri)
    return get_objective(summary.objective).export(load_flow(model_uri), summary, transform_graph_uri, metadata,
                                                   export_dir, importance_samples=importance_samples, rows=rows)


def export_flow(flow, summary, transform_graph_uri, metadata, export_dir: str, rows=None,
                target: Optional[str] = None) -> str:
    """`export_saved_model` of a flow (`FlowServingModule`): ``summary`` is its `ModelSummary`,
    ``target`` the reverse-KL target it was fitted to (None: fitted to data)."""
    from tfflows.components.transform import Preprocessing, read_preprocessing

    preprocessing = (read_preprocessing(transform_graph_uri) if transform_graph_uri else
                     Preprocessing.identity(flow.event_dim))
    d = preprocessing.event_dim
    if metadata is not None and int(metadata.event_dim) != d or flow.event_dim != d:
        raise ValueError(f"event_dim mismatch: flow {flow.event_dim}, transform {d}, "
                         f"metadata {getattr(metadata, 'event_dim', None)}")
    module = FlowServingModule(flow.frozen(), transform_graph_uri, preprocessing)  # masks baked in
    return save_serving_model(module, export_dir, rows[:WARMUP_ROWS] if rows is not None else None, {
        "preprocessing": preprocessing.to_dict(), "flow_kind": flow.config.kind, "objective": summary.objective,
        "target": target,
        "dataset": dataclasses.asdict(metadata) if metadata is not None else None})


def save_serving_model(module, export_dir: str, warmup_rows, info: dict) -> str:
    """Saves ``module`` (with tf.functions ``log_prob`` and ``sample``) as the SavedModel of
    `SIGNATURES`, its TF Serving warm-up requests on ``warmup_rows`` (None: the model's own samples
    stand in, e.g. for a flow fitted to a target, which has no data rows) and ``info`` as the
    metadata file; returns ``export_dir``."""
    signatures = {"serving_default": module.log_prob.get_concrete_function(),
                  "log_prob": module.log_prob.get_concrete_function(),
                  "sample": module.sample.get_concrete_function()}
    tf.saved_model.save(module, export_dir, signatures=signatures)
    write_warmup_requests(export_dir, warmup_rows if warmup_rows is not None else module.sample(
        tf.constant(WARMUP_ROWS), tf.constant([0, 0]))["samples"].numpy())
    with tf.io.gfile.GFile(os.path.join(export_dir, METADATA_FILE), "w") as f:
        json.dump(info, f, indent=2)
    return export_dir
