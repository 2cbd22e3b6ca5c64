"""An MLflow pyfunc wrapper of the exported SavedModel (served by ``mlflow models serve``).

A `tf.Module` logged with ``mlflow.tensorflow`` does not serve (not callable; EagerTensors
are not JSON-encodable), so this small `PythonModel` loads the SavedModel from its
``saved_model`` artifact and returns NumPy. It imports nothing from this project: the class
is pickled by value when logged, so a serving process needs only NumPy and TensorFlow.

Inputs accepted by `predict` (the REST payloads of ``/invocations`` in brackets):

- rows ``[N, D]`` as an array or a DataFrame (``{"instances": [[...], ...]}``,
  ``{"dataframe_split": ...}``) -> ``log_prob`` [N];
- ``{"x": [N, D]}`` (``{"inputs": {"x": [[...]]}}``) -> ``log_prob`` [N];
- ``{"num_samples": n, "seed": [a, b]}`` -> ``samples`` [n, D] in raw feature space.
"""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np

__all__ = ["FlowPyfuncModel"]


class FlowPyfuncModel(mlflow.pyfunc.PythonModel):
    """Serves the ``log_prob`` and ``sample`` signatures of a pushed flow."""

    def load_context(self, context):
        import tensorflow as tf

        self._model = tf.saved_model.load(context.artifacts["saved_model"])
        self._log_prob = self._model.signatures["log_prob"]
        self._sample = self._model.signatures["sample"]

    def _rows(self, model_input):
        if isinstance(model_input, dict):
            model_input = model_input["x"]
        if hasattr(model_input, "to_numpy"):  # pandas DataFrame
            values = model_input.to_numpy()
            if values.dtype == object:  # one column holding a row per cell
                values = np.stack([np.asarray(v, np.float32) for v in values[:, 0]])
            model_input = values
        x = np.asarray(model_input, np.float32)
        return x.reshape(1, -1) if x.ndim == 1 else x

    def predict(self, context, model_input, params=None):
        """log_prob [N] for rows, samples [n, D] for ``{"num_samples", "seed"}``."""
        import tensorflow as tf

        if isinstance(model_input, dict) and "num_samples" in model_input:
            n = int(np.asarray(model_input["num_samples"]).reshape(-1)[0])
            seed = np.asarray(model_input.get("seed", [0, 0]), np.int32).reshape(2)
            out = self._sample(num_samples=tf.constant(n, tf.int32), seed=tf.constant(seed))
            return out["samples"].numpy()
        out = self._log_prob(x=tf.constant(self._rows(model_input)))
        return out["log_prob"].numpy()
