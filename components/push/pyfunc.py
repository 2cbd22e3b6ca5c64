"""MLflow models-from-code pyfunc of a pushed flow: this file IS the model's code.

`registry.log_and_register` logs it with ``python_model=<this file's path>``: MLflow copies the
file into the model and runs it when the model is loaded, so nothing is pickled and the model
loads with ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``. It imports only MLflow, NumPy, pandas
and TensorFlow (never this project): a serving process needs no tfflows code. The SavedModel (the
``saved_model`` artifact, the very folder TF Serving loads) is loaded with plain TensorFlow, and its
metadata file (``assets.extra/tfflows.json``) names the model's columns.

Signature (column-based, so every request format of ``mlflow models serve`` works): inputs are the
dataset's feature names, and for a conditional model its context columns after them (double
columns, matched by name in any order; extra columns are ignored; each row is scored given its
own context; a categorical context column is a string column), and for a mixed density its
categorical columns (string columns, by name; a category unseen in training is scored as the
model's out-of-vocabulary bucket); outputs ``log_prob`` and ``percentile`` (the share of the model's held-out rows scoring
lower, in percent; a model without held-out quantiles returns ``log_prob`` alone). Params
``signature_name`` (``"score"``, the default, ``"log_prob"`` or ``"sample"``), ``num_samples`` and
``seed`` (two ints) for ``sample``. REST payloads of ``/invocations``, all giving one
``{"log_prob": ..., "percentile": ...}`` per row:

- ``{"dataframe_split": {"columns": ["x0", "x1"], "data": [[...], ...]}}``;
- ``{"dataframe_records": [{"x0": ..., "x1": ...}, ...]}``;
- ``{"instances": [{"x0": ..., "x1": ...}, ...]}`` (rows) or ``{"inputs": {"x0": [...], "x1": [...]}}``;
- with ``"params": {"signature_name": "sample", "num_samples": n, "seed": [a, b]}``: ``n`` samples,
  one record per sample with the feature names (the rows sent are ignored; a conditional model
  draws ``n`` samples at each row's context, one record per sample with its context columns; a
  mixed density's samples carry their categories too).
"""

import json
import os

import mlflow.models
from mlflow.pyfunc import PythonModel
import numpy as np
import pandas as pd
import tensorflow as tf

SIGNATURES = ("score", "log_prob", "sample")
METADATA_FILE = os.path.join("assets.extra", "tfflows.json")  # `components.artifacts.METADATA_FILE`


def feature_names(info: dict, dim: int) -> list:
    """`components.artifacts.feature_names`, repeated: this file may not import the project."""
    return list((info.get("dataset") or {}).get("feature_names") or [f"x{i}" for i in range(dim)])


def context_names(info: dict) -> list:
    """`components.artifacts.context_names`, repeated for the same reason."""
    return list((info.get("dataset") or {}).get("context_names") or [])


def categorical_names(info: dict) -> list:
    """`components.artifacts.categorical_names`, repeated for the same reason."""
    return list((info.get("dataset") or {}).get("categorical_names") or [])


def context_categorical_names(info: dict) -> list:
    """`components.artifacts.context_categorical_names`, repeated for the same reason."""
    return list((info.get("dataset") or {}).get("context_categorical_names") or [])


class FlowPyfuncModel(PythonModel):
    """Serves a pushed flow's ``score`` (or ``log_prob``) and ``sample`` signatures by column name."""

    def load_context(self, context):
        path = context.artifacts["saved_model"]
        self._model = tf.saved_model.load(path)
        with open(os.path.join(path, METADATA_FILE)) as f:
            info = json.load(f)
        dim = int(self._model.signatures["log_prob"].structured_input_signature[1]["x"].shape[-1])
        self._context_categorical = context_categorical_names(info)
        self._names = feature_names(info, dim)
        self._context = [c for c in context_names(info) if c not in self._context_categorical]  # the numeric ones
        self._categorical = categorical_names(info)
        self._outputs = ("log_prob", "percentile") if "score" in self._model.signatures else ("log_prob",)

    def _rows(self, model_input) -> dict:
        """The signature's inputs: ``x`` float32 [N, D] in the model's column order (and ``context``
        [N, C] and ``context_categorical`` strings [N, Sc] for a conditional model, ``categorical``
        strings [N, S] for a mixed density): a table by its column names (MLflow's dataframe, records
        and columnar inputs), an array of numbers by position (features, then numeric context)."""
        names, strings = self._names + self._context, {"context_categorical": self._context_categorical,
                                                       "categorical": self._categorical}
        text = [n for group in strings.values() for n in group]
        given = {}
        if isinstance(model_input, dict):
            model_input = pd.DataFrame(model_input)
        if isinstance(model_input, pd.DataFrame):
            missing = [n for n in names + text if n not in model_input.columns]
            if missing:
                raise ValueError(f"no column {missing[:8]} (the model takes {(names + text)[:8]}...)")
            given = {key: model_input[group].astype(str).to_numpy().astype(bytes)
                     for key, group in strings.items() if group}
            model_input = model_input[names].to_numpy()
        elif text:
            raise ValueError(f"the model reads its categorical columns {text} by name: send a table")
        rows = np.asarray(model_input, np.float32)
        rows = rows.reshape(1, -1) if rows.ndim == 1 else rows
        d = len(self._names)
        return {"x": rows[:, :d], **({"context": rows[:, d:]} if self._context else {}), **given}

    def predict(self, context, model_input, params=None):
        """A frame of ``log_prob`` (and ``percentile``) per row, or of samples with ``params["signature_name"]
        == "sample"``."""
        params = params or {}
        name = params.get("signature_name") or "score"
        if name not in SIGNATURES:
            raise ValueError(f"params.signature_name must be one of {SIGNATURES}, got {name!r}")
        if name == "sample":
            seed = np.asarray(params.get("seed") or [0, 0], np.int32).reshape(2)
            n = int(params.get("num_samples") or 1)
            given = {}
            if self._context or self._context_categorical:  # n samples at each row's context, repeated per sample
                rows = self._rows(model_input)
                given = {key: tf.constant(np.repeat(rows[key], n, axis=0)) for key in ("context", "context_categorical")
                         if key in rows}
                n = int(next(iter(given.values())).shape[0])
            out = self._model.signatures["sample"](num_samples=tf.constant(n, tf.int32), seed=tf.constant(seed), **given)
            samples = pd.DataFrame(out["samples"].numpy(), columns=self._names)
            for i, column in enumerate(self._categorical):
                samples[column] = [value.decode() for value in out["categories"].numpy()[:, i]]
            if self._context:
                samples[self._context] = given["context"].numpy()
            for i, column in enumerate(self._context_categorical):
                samples[column] = [value.decode() for value in given["context_categorical"].numpy()[:, i]]
            return samples
        outputs = self._outputs if name == "score" else ("log_prob",)
        inputs = {key: tf.constant(value) for key, value in self._rows(model_input).items()}
        out = self._model.signatures["score" if len(outputs) > 1 else "log_prob"](**inputs)
        return pd.DataFrame({key: out[key].numpy() for key in outputs})


mlflow.models.set_model(FlowPyfuncModel())
