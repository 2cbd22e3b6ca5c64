"""Export of a trained flow with its preprocessing as one SavedModel for TF Serving.

The exported `tf.Module` holds the tf.Transform layer (raw ``x`` -> ``z``, ``log_det``) and
the flow, and has three signatures (all float32 unless said otherwise), five when the evaluation's
held-out quantiles are given (`SCORE_SIGNATURES`):

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
- ``score``: input ``x`` as for ``log_prob``; outputs ``log_prob`` and ``percentile`` [None], 100 x
  the share of the model's held-out rows (`components.objectives.scoring.held_out_quantiles`,
  copied to the metadata file as ``"held_out_quantiles"``) scoring lower: 0 below the held-out
  minimum (and for -inf), 100 above the maximum, linear between the stored quantiles.
- ``score_examples``: input ``examples``, serialized `tf.Example` protos [None] with one float
  feature per column of the data, named as the dataset's ``feature_names`` (what a TF Serving
  client of a TFX model sends); outputs as ``score``. A missing feature is an error.

A conditional model (a dataset with context columns, ``dataset.context_names`` in the metadata
file) models p(x | context): every signature takes the RAW context too, the transform graph
standardising it as in training. ``log_prob`` and ``score``: inputs ``x`` [None, D] and
``context`` [None, C], one context per row; ``sample``: inputs ``num_samples``, ``context``
[None, C] (one row: broadcast to every sample; ``num_samples`` rows: one per sample) and
``seed``; ``score_examples``: the context columns are features of the tf.Example by name too.
Categorical context columns (``dataset.context_categorical_names``; ``context`` then holds the
numeric ones only, and is absent when there are none) come as strings, ``context_categorical``
[None, Sc] after ``context`` in every signature (bytes features in ``score_examples``): the graph
looks them up in their vocabularies (an unseen one is the out-of-vocabulary bucket's) and
`components.transform.network_context` one-hot encodes them beside the standardised numeric
context, for scoring and sampling alike.

A mixed density (a dataset with modelled categorical columns, ``dataset.categorical_names``) scores
the exact mixed log-density log P(s) + log p(x | s) (`models.MixedDensity`, plus the numeric
preprocessing's log_det): ``log_prob`` and ``score`` take ``categorical`` [None, S] too, the
categories as strings, looked up in the transform graph's vocabularies inside the SavedModel (a
category unseen in training is the out-of-vocabulary bucket's); ``sample`` returns ``categories``
[num_samples, S] (strings; `OOV_CATEGORY` for the bucket) beside ``samples``; ``score_examples``
reads the categorical columns as bytes features by name. The module also saves
``categorical_log_prob(categorical[, context])``, log P(s) alone (not a signature).

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
import tensorflow_transform as tft
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

# The metadata's column names belong to the serving layout (`components.artifacts`); re-exported here.
from tfflows.components.artifacts import (METADATA_FILE, categorical_names, context_categorical_names, context_names,
                                          feature_names, numeric_context_names)
from tfflows.components.flow_artifact import load_flow, read_summary
from tfflows.components.objectives import get_objective
from tfflows.components.transform import (Preprocessing, network_context, network_context_dim, read_categories,
                                          read_context_categories, read_context_preprocessing, read_preprocessing)
from tfflows.components.transform.preprocessing import OOV_CATEGORY
from tfflows.models.flows import totally_ordered

__all__ = ["SCORE_SIGNATURES", "SIGNATURES", "WARMUP_FILE", "categorical_names", "context_categorical_names",
           "context_names", "feature_names", "numeric_context_names", "percentile", "FlowServingModule", "export_flow",
           "export_saved_model", "save_serving_model", "read_warmup_requests", "write_warmup_requests"]

SIGNATURES = ("serving_default", "log_prob", "sample")
SCORE_SIGNATURES = ("score", "score_examples")  # with held-out quantiles only
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"  # TF Serving replays these before serving
WARMUP_ROWS = 3


def write_warmup_requests(export_dir: str, rows: np.ndarray, num_samples: int = 2, context=None,
                          categorical=None, context_categorical=None) -> str:
    """``assets.extra/tf_serving_warmup_requests``: a TFRecord of `PredictionLog` protos, one
    ``log_prob`` request on ``rows`` (raw rows, float32 [N, D], with their raw ``context`` [N, C]
    and ``context_categorical`` strings [N, Sc] for a conditional model and their ``categorical``
    strings [N, S] for a mixed density) and one ``sample`` request (at the first row's context), which
    TF Serving runs when it loads the version, so the first real request does not pay for graph
    warm-up (TF Serving's SavedModel warm-up format)."""
    requests = (("log_prob", {"x": np.asarray(rows, np.float32)}),
                ("sample", {"num_samples": np.int32(num_samples), "seed": np.array([0, 0], np.int32)}))
    for key, value, dtype in (("context", context, np.float32), ("context_categorical", context_categorical, object)):
        if value is not None:  # a conditional model's rows come with their contexts
            requests[0][1][key] = np.asarray(value, dtype)
            requests[1][1][key] = np.asarray(value[:1], dtype)
    if categorical is not None:
        requests[0][1]["categorical"] = np.asarray(categorical, object)
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
    out = []
    for record in tf.data.TFRecordDataset(os.path.join(export_dir, WARMUP_FILE)).as_numpy_iterator():
        request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
        out.append((request.model_spec.signature_name,
                    {k: tf.make_ndarray(v) for k, v in request.inputs.items()}))
    return out


class FlowServingModule(tf.Module):
    """Transform graph (if any) + flow, with `log_prob` and `sample` as serving functions; with
    ``context_preprocessing`` (the context's standardisation) a conditional flow's, which take the
    raw context as well, and with ``context_categories`` (`components.transform.read_context_categories`)
    the categorical context columns' strings; with ``categories`` (`components.transform.read_categories`)
    a mixed density's, which take the categorical columns' strings as well."""

    def __init__(self, flow, transform_graph_uri, preprocessing, context_preprocessing=None, categories=None,
                 context_categories=None):
        super().__init__(name="flow_serving")
        self.flow = flow
        self.tft_layer = (tft.TFTransformOutput(transform_graph_uri).transform_features_layer()
                          if transform_graph_uri else None)
        self.preprocessing = preprocessing  # a `components.transform.Preprocessing`
        self.context_preprocessing = context_preprocessing
        self.context_categories = context_categories
        self.event_dim = int(preprocessing.event_dim)
        d = self.event_dim
        x = tf.TensorSpec([None, d], tf.float32, name="x")
        num_samples, seed = tf.TensorSpec([], tf.int32, name="num_samples"), tf.TensorSpec([2], tf.int32, name="seed")
        given = []  # the inputs after x, in order
        if context_preprocessing is not None:
            given.append(tf.TensorSpec([None, int(context_preprocessing.event_dim)], tf.float32, name="context"))
        if context_categories:
            given.append(tf.TensorSpec([None, len(context_categories)], tf.string, name="context_categorical"))
        num_context = len(given)  # the context's inputs come first
        if categories:
            given.append(tf.TensorSpec([None, len(categories)], tf.string, name="categorical"))
            # Code -> string of each column: its vocabulary, then the out-of-vocabulary bucket's name.
            self.category_names = [tf.constant(list(v) + [OOV_CATEGORY]) for v in categories.values()]
            self.categorical_log_prob = tf.function(self._categorical_log_prob, input_signature=given)
        self.log_prob = tf.function(self._log_prob, input_signature=[x, *given])
        self.sample = tf.function(self._sample_given if num_context else self._sample,
                                  input_signature=[num_samples, *given[:num_context], seed])
        # Saved too (not a signature): ``module.inverse_preprocessing(z)`` after loading.
        self.inverse_preprocessing = tf.function(
            preprocessing.inverse,
            input_signature=[tf.TensorSpec([None, d], tf.float32, name="z")])

    def _model_inputs(self, x, given):
        """The transform graph's outputs of raw ``x`` and ``given`` (context and/or categories, in
        the signature's order; a prefix of it: the context alone): the graph standardises the numeric
        context and looks the categories up."""
        inputs = {"x": x}
        for spec, value in zip(self.log_prob.input_signature[1:], given):
            inputs[spec.name] = value
        return self.tft_layer(inputs)

    def _log_prob(self, x, *given):
        if self.tft_layer is None:
            lp = self.flow.log_prob(x, training=False)
        else:
            out = self._model_inputs(x, given)
            codes = [tf.cast(out["codes"], tf.int32)] if "codes" in out else []
            lp = self.flow.log_prob(out["z"], *codes, network_context(out, self.context_categories),
                                    training=False) + out["log_det"]
        return {"log_prob": tf.identity(totally_ordered(lp), name="log_prob")}

    def _categorical_log_prob(self, *given):
        """log P(categories[ | context]) of a mixed density, nats [None]."""
        rows = tf.shape(given[-1])[0]
        out = self._model_inputs(tf.zeros([rows, self.event_dim]), given)
        return {"log_prob": self.flow.categorical_log_prob(tf.cast(out["codes"], tf.int32),
                                                           network_context(out, self.context_categories))}

    def _sample(self, num_samples, seed, context=None):
        drawn = self.flow.sample(num_samples, seed=seed, context=context)
        if not isinstance(drawn, tuple):
            return {"samples": tf.identity(self.inverse_preprocessing(drawn), name="samples")}
        z, codes = drawn  # a mixed density: the categories' codes as their strings
        categories = tf.stack([tf.gather(names, codes[:, i]) for i, names in enumerate(self.category_names)], axis=1)
        return {"samples": tf.identity(self.inverse_preprocessing(z), name="samples"),
                "categories": tf.identity(categories, name="categories")}

    def _sample_given(self, num_samples, *given):
        """Samples at the raw context ``given[:-1]`` (one row, broadcast, or one per sample; the seed
        last), made the network's context by the transform graph, as `_log_prob` makes it."""
        *context, seed = given
        out = self._model_inputs(tf.zeros([tf.shape(context[0])[0], self.event_dim]), context)
        return self._sample(num_samples, seed, network_context(out, self.context_categories))


def export_saved_model(model_uri: str, transform_graph_uri, metadata,
                       export_dir: str, importance_samples: int = 128, rows=None, calibration=None) -> str:
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
      calibration: the evaluation's ``held_out_quantiles`` (None: no ``score`` signatures).

    Returns:
      ``export_dir``.
    """
    summary = read_summary(model_uri)
    return get_objective(summary.objective).export(load_flow(model_uri), summary, transform_graph_uri, metadata,
                                                   export_dir, importance_samples=importance_samples, rows=rows,
                                                   calibration=calibration)


def export_flow(flow, summary, transform_graph_uri, metadata, export_dir: str, rows=None,
                target: Optional[str] = None, calibration: Optional[dict] = None) -> str:
    """`export_saved_model` of a flow (`FlowServingModule`): ``summary`` is its `ModelSummary`,
    ``target`` the reverse-KL target it was fitted to (None: fitted to data), ``calibration`` its
    held-out quantiles."""
    preprocessing = (read_preprocessing(transform_graph_uri) if transform_graph_uri else
                     Preprocessing.identity(flow.event_dim))
    context = read_context_preprocessing(transform_graph_uri) if transform_graph_uri else None
    d = preprocessing.event_dim
    if metadata is not None and int(metadata.event_dim) != d or flow.event_dim != d:
        raise ValueError(f"event_dim mismatch: flow {flow.event_dim}, transform {d}, "
                         f"metadata {getattr(metadata, 'event_dim', None)}")
    categories = read_categories(transform_graph_uri) if transform_graph_uri else None
    context_categories = read_context_categories(transform_graph_uri) if transform_graph_uri else None
    flow_context = flow.context_dim if categories else flow.config.context_dim  # a mixed density's own context
    graph_context = network_context_dim(transform_graph_uri) if transform_graph_uri else None
    if flow_context != graph_context:
        raise ValueError(f"context_dim mismatch: flow {flow_context}, transform {graph_context}")
    module = FlowServingModule(flow.frozen(), transform_graph_uri, preprocessing, context, categories,
                               context_categories)  # masks baked
    warmup = rows[:WARMUP_ROWS] if rows is not None else None
    return save_serving_model(module, export_dir, warmup, {
        "preprocessing": preprocessing.to_dict(), "flow_kind": flow.config.kind, "objective": summary.objective,
        "target": target, "held_out_quantiles": calibration,
        "context_preprocessing": context.to_dict() if context else None, "categories": categories,
        "context_categories": context_categories,
        "dataset": dataclasses.asdict(metadata) if metadata is not None else None},
        # Warm-up only needs valid inputs: the train split's mean context and each column's most
        # frequent category stand beside each row.
        warmup_context=np.tile(np.asarray(context.mean), (len(warmup), 1)) if context and warmup is not None else None,
        warmup_categorical=_most_frequent(categories, warmup),
        warmup_context_categorical=_most_frequent(context_categories, warmup))


def _most_frequent(vocabularies: Optional[dict], rows) -> Optional[np.ndarray]:
    """Strings [len(rows), S]: each column's most frequent category (its vocabulary's first) on every
    row; None without such columns or rows."""
    if not vocabularies or rows is None:
        return None
    return np.array([[v[0] for v in vocabularies.values()]] * len(rows), object)


def percentile(log_prob, calibration: dict):
    """100 x the share of held-out rows scoring below ``log_prob`` [N]: the held-out quantile
    function (``calibration``: `scoring.held_out_quantiles`) inverted, linear between its levels.

    Ties among the stored values take the lowest level (the share scoring strictly lower); 0 below
    the held-out minimum and for -inf, 100 above the maximum: always finite and ordered like
    ``log_prob``.
    """
    values = tf.constant(calibration["values"], tf.float32)
    levels = tf.constant(calibration["levels"], tf.float32)
    last = len(calibration["values"]) - 1
    above = tf.searchsorted(values, log_prob, side="left")  # stored values below each score
    lo, hi = tf.maximum(above - 1, 0), tf.minimum(above, last)
    x0, x1 = tf.gather(values, lo), tf.gather(values, hi)
    t = tf.where(x1 > x0, tf.math.divide_no_nan(log_prob - x0, x1 - x0), 1.0)
    share = tf.gather(levels, lo) + tf.clip_by_value(t, 0.0, 1.0) * (tf.gather(levels, hi) - tf.gather(levels, lo))
    return 100.0 * tf.where(above == 0, 0.0, share)


def _add_score_functions(module, calibration: dict, names: list, context: list, categorical: list,
                         context_categorical: list) -> None:
    """``module.score`` and ``module.score_examples`` (`SCORE_SIGNATURES`) on its ``log_prob``; the
    numeric ``context`` and the ``context_categorical`` column names (strings) of a conditional model
    and the ``categorical`` ones of a mixed density (strings) are inputs too, in ``log_prob``'s order."""
    groups = [(group, dtype, key) for group, dtype, key in (
        (names, tf.float32, "x"), (context, tf.float32, "context"),
        (context_categorical, tf.string, "context_categorical"), (categorical, tf.string, "categorical")) if group]
    inputs = [tf.TensorSpec([None, len(group)], dtype, name=key) for group, dtype, key in groups]

    @tf.function(input_signature=inputs)
    def score(*columns):
        log_prob = module.log_prob(*columns)["log_prob"]
        return {"log_prob": tf.identity(log_prob, name="log_prob"),
                "percentile": tf.identity(percentile(log_prob, calibration), name="percentile")}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def score_examples(examples):
        features = tf.io.parse_example(examples, {n: tf.io.FixedLenFeature([], dtype)
                                                  for group, dtype, _ in groups for n in group})
        return score(*(tf.stack([features[n] for n in group], axis=1) for group, _, _ in groups))

    module.score, module.score_examples = score, score_examples


def save_serving_model(module, export_dir: str, warmup_rows, info: dict, warmup_context=None,
                       warmup_categorical=None, warmup_context_categorical=None) -> str:
    """Saves ``module`` (with tf.functions ``log_prob`` and ``sample``) as the SavedModel of
    `SIGNATURES` (and `SCORE_SIGNATURES` when ``info["held_out_quantiles"]`` holds the evaluation's
    calibration), its TF Serving warm-up requests on ``warmup_rows`` (with ``warmup_context`` and
    ``warmup_context_categorical`` for a conditional model, ``warmup_categorical`` for a mixed density;
    None: the model's own samples
    stand in, e.g. for a flow fitted to a target, which has no data rows) and ``info`` as the
    metadata file; returns ``export_dir``. Every objective's module goes through here, so every
    calibrated model gets the same ``score`` signatures."""
    signatures = {"serving_default": module.log_prob.get_concrete_function(),
                  "log_prob": module.log_prob.get_concrete_function(),
                  "sample": module.sample.get_concrete_function()}
    if info.get("held_out_quantiles"):
        dim = int(module.log_prob.input_signature[0].shape[-1])
        _add_score_functions(module, info["held_out_quantiles"], feature_names(info, dim), numeric_context_names(info),
                             categorical_names(info), context_categorical_names(info))
        signatures.update({name: getattr(module, name).get_concrete_function() for name in SCORE_SIGNATURES})
    tf.saved_model.save(module, export_dir, signatures=signatures)
    write_warmup_requests(export_dir, warmup_rows if warmup_rows is not None else module.sample(
        tf.constant(WARMUP_ROWS), tf.constant([0, 0]))["samples"].numpy(), context=warmup_context,
        categorical=warmup_categorical, context_categorical=warmup_context_categorical)
    with tf.io.gfile.GFile(os.path.join(export_dir, METADATA_FILE), "w") as f:
        json.dump(info, f, indent=2)
    return export_dir
