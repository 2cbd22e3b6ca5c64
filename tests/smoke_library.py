"""Smoke test of the installed flow library, run by tests/test_packaging.py inside a clean venv
that holds only the wheel and its base dependencies (TensorFlow, TFP, tf-keras): no TFX, Beam,
MLflow, and not this repository (it runs from a temporary folder).

    python smoke_library.py WORK_DIR

Builds a flow, fits a few steps, checks log_prob, sample, the frozen copy and a SavedModel round
trip, then prints one line `smoke ok: ...` (any failure raises).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import tensorflow as tf
import tf_keras

import tfflows.models
from tfflows.models import build_flow


def main(work_dir: str) -> None:
    # Installed from the wheel, not imported from a checkout.
    assert "site-packages" in tfflows.models.__file__, tfflows.models.__file__
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(256, 2)) * [1.0, 0.5] + [0.5, -1.0]).astype("float32")
    flow = build_flow("maf", 2, num_layers=2, hidden_units=[16], seed=0)
    flow.compile(optimizer=tf_keras.optimizers.Adam(1e-2))
    before = float(tf.reduce_mean(flow.log_prob(x)))
    history = flow.fit(tf.data.Dataset.from_tensor_slices(x).batch(64), epochs=3, verbose=0)
    after = float(tf.reduce_mean(flow.log_prob(x)))
    assert len(history.history["loss"]) == 3 and np.isfinite(after) and after > before, (before, after)

    log_prob = flow.log_prob(x[:8]).numpy()
    assert log_prob.shape == (8,) and np.all(np.isfinite(log_prob)), log_prob
    samples = flow.sample(16, seed=3).numpy()
    assert samples.shape == (16, 2) and np.array_equal(samples, flow.sample(16, seed=3).numpy())

    frozen = flow.frozen()
    np.testing.assert_allclose(frozen.log_prob(x[:8]).numpy(), log_prob, rtol=1e-5, atol=1e-5)

    module = tf.Module()
    module.flow = frozen
    module.log_prob = tf.function(lambda rows: frozen.log_prob(rows),
                                  input_signature=[tf.TensorSpec([None, 2], tf.float32)])
    path = os.path.join(work_dir, "saved_model")
    tf.saved_model.save(module, path, signatures={"log_prob": module.log_prob})
    loaded = tf.saved_model.load(path)
    reloaded = loaded.signatures["log_prob"](rows=tf.constant(x[:8]))
    (output,) = reloaded.values()
    np.testing.assert_allclose(output.numpy(), log_prob, rtol=1e-5, atol=1e-5)
    print(f"smoke ok: mean log_prob {before:.3f} -> {after:.3f} after 3 epochs; sample, frozen copy "
          f"and SavedModel round trip agree")


if __name__ == "__main__":
    main(sys.argv[1])
