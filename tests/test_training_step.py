"""The gradient step `FlowModel.fit` and the trainer share (`models.training`): XLA-compiled where it
compiles, the plain graph with a warning where it does not, the same numbers either way."""

import logging

import numpy as np
import tensorflow as tf
import tf_keras

from tfflows.models import build_flow
from tfflows.models.training import CompiledStep


def test_a_step_xla_cannot_compile_runs_on_the_plain_graph(caplog):
    step = CompiledStep(lambda x: tf.py_function(lambda v: v * 2.0, [x], tf.float32),
                        logger=logging.getLogger("tfflows.test"))
    with caplog.at_level("WARNING", logger="tfflows.test"):
        assert float(step(tf.constant(3.0))) == 6.0
    assert "XLA could not compile the train step" in caplog.text and not step.use_xla


def test_fit_with_xla_matches_the_plain_graph(caplog):
    """Compared through the density: Adam turns rounding-level gradient differences into full steps."""
    data = np.random.default_rng(0).normal(size=(200, 3)).astype("float32")
    log_probs = []
    for jit in (None, False):  # None: the default, XLA
        tf_keras.utils.set_random_seed(0)
        model = build_flow("maf", 3, num_layers=2, hidden_units=[8], transformer="spline", batch_norm=False)
        model.compile(optimizer=tf_keras.optimizers.Adam(1e-3), jit_compile=jit)
        history = model.fit(data, batch_size=50, epochs=2, verbose=0)
        log_probs.append(model.log_prob(data).numpy())
        assert int(model._train_counter.numpy()) == 8 and np.isfinite(history.history["loss"]).all()
    np.testing.assert_allclose(log_probs[0], log_probs[1], rtol=1e-3, atol=1e-3)
    assert "XLA could not compile" not in caplog.text  # the default really was compiled
