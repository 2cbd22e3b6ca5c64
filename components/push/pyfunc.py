"""MLflow models-from-code pyfunc of a pushed flow: this file IS the model's code.

`registry.log_pushed_model` logs it with ``python_model=<this file's path>``: MLflow copies the
file into the model and runs it when the model is loaded, so nothing is pickled and the model
loads with ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``. It imports only MLflow, NumPy and
TensorFlow (never this project): a serving process needs no tfflows code. The SavedModel (the
``saved_model`` artifact, the very folder TF Serving loads) is loaded with plain TensorFlow.
(A `tf.Module` logged with ``mlflow.tensorflow`` does not serve: it is not callable and its
EagerTensors are not JSON-encodable.)

Signature: input ``x``, a float32 tensor [-1, D] of raw rows; params ``signature_name``
(``"log_prob"``, the default, or ``"sample"``), ``num_samples`` (int, for ``sample``) and ``seed``
(two ints, for ``sample``). REST payloads of ``mlflow models serve`` (``/invocations``):

- ``{"instances": [[...], ...]}`` or ``{"inputs": {"x": [[...], ...]}}`` -> ``log_prob`` [N];
- ``{"inputs": {"x": [[...]]}, "params": {"signature_name": "sample", "num_samples": n,
  "seed": [a, b]}}`` -> ``samples`` [n, D] in raw feature space (the rows are ignored).
"""

import mlflow.models
import mlflow.pyfunc
import numpy as np

SIGNATURES = ("log_prob", "sample")


class FlowPyfuncModel(mlflow.pyfunc.PythonModel):
    """Serves the ``log_prob`` and ``sample`` signatures of a pushed flow."""

    def load_context(self, context):
        import tensorflow as tf

        self._model = tf.saved_model.load(context.artifacts["saved_model"])
        self._log_prob = self._model.signatures["log_prob"]
        self._sample = self._model.signatures["sample"]

    def predict(self, context, model_input, params=None):
        """log_prob [N] of the rows, or samples [n, D] with ``params["signature_name"] == "sample"``."""
        import tensorflow as tf

        params = params or {}
        name = params.get("signature_name") or "log_prob"
        if name not in SIGNATURES:
            raise ValueError(f"params.signature_name must be one of {SIGNATURES}, got {name!r}")
        if name == "sample":
            seed = np.asarray(params.get("seed") or [0, 0], np.int32).reshape(2)
            out = self._sample(num_samples=tf.constant(int(params.get("num_samples") or 1), tf.int32),
                               seed=tf.constant(seed))
            return out["samples"].numpy()
        if isinstance(model_input, dict):
            model_input = model_input["x"]
        x = np.asarray(model_input, np.float32)
        return self._log_prob(x=tf.constant(x.reshape(1, -1) if x.ndim == 1 else x))["log_prob"].numpy()


mlflow.models.set_model(FlowPyfuncModel())
