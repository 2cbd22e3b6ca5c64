"""Keeps benchmarks/speed.py from rotting: its functions on tiny shapes (nothing here is timed)."""

import numpy as np
import pytest
import tensorflow as tf

from benchmarks import speed
from tfflows.models import build_flow

TINY = dict(shapes=((4, 8),), layers=2)


@pytest.fixture(scope="module")
def tables():
    # D=4: the sequential paths on 3 rows; D=3: on all 5, so with eager rows too.
    return speed.run(shapes=((4, 8), (3, 8)), layers=2, n_samples=5, sequential_rows={4: 3}, train_batch=8, eval_batch=16, reps=1, kinds=("maf", "haf"),
                     train_steps=1, print_fn=lambda *_: None)


@pytest.mark.slow  # every table of the benchmark script on its tiny shapes: ~30 s of compiling
def test_tables_have_expected_rows(tables):
    assert set(tables) == {"sample", "iaf", "train", "gflops", "log_prob", "saved"}
    text = "\n".join(t.render() for t in tables.values())
    for row in ("D=4,H=8 maf xla", "D=4,H=8 haf", "D=4,H=8 maf batch 16",
                "D=4,H=8 maf batch 1000", "D=4,H=8 3 samples, tf.function", "D=4,H=8 batch 3, ours XLA", "D=4,H=8 haf frozen batch 8",
                "maf frozen xla (TFP xla) batch 8", "maf frozen log_prob", "D=3,H=8 5 samples, eager calls", "D=3,H=8 batch 5, eager calls"):
        assert row in text, row
    for table in tables.values():
        for label, ours, other, _ in table.rows:
            assert ours is None or (np.isfinite(ours) and ours > 0), (table.title, label)


def test_profile_and_machine_line():
    table = speed.profile(**TINY, batch=8, steps=1, n_samples=5, reps=1, print_fn=lambda *_: None)
    text = table.render()
    for row in ("A=masked B=unmasked", "A=frozen B=its matmuls alone", "A=plain graph B=default",
                "per sequential step", "empty tf.function call"):
        assert row in text, row
    assert "TF " in speed.machine_line()


def test_same_weights_same_log_prob_as_tfp():
    """One MAF layer with our MADE's masked weights copied into TFP's AutoregressiveNetwork."""
    d, h = 4, 8
    ours = build_flow("maf", d, num_layers=1, hidden_units=[h], batch_norm=False, max_log_scale=None)
    made = ours.flow_layers[0].made
    theirs = speed.TFPFlow(d, h, layers=1)
    hidden, output = made.hidden_layers[0], made.output_layer
    rng = np.random.default_rng(0)
    for layer in (hidden, output):  # non-trivial biases and output weights
        layer.bias.assign(rng.normal(size=layer.bias.shape).astype(np.float32) * 0.3)
    output.kernel.assign(rng.normal(size=output.kernel.shape).astype(np.float32) * 0.3)
    kernel_0, bias_0, kernel_1, bias_1 = theirs.nets[0].trainable_variables
    kernel_0.assign(hidden.masked_kernel())  # TFP masks at initialisation/constraint time, not in call
    bias_0.assign(hidden.bias)
    kernel_1.assign(output.masked_kernel())  # both lay outputs out [D, params], dimension-major
    bias_1.assign(output.bias)
    x = tf.constant(rng.normal(size=(6, d)), tf.float32)
    np.testing.assert_allclose(ours.log_prob(x).numpy(), theirs.maf_dist.log_prob(x).numpy(), rtol=1e-4, atol=1e-4)


def test_fit_vs_trainer_rows():
    table = speed.fit_vs_trainer(rows=40, batch=20, epochs=2, layers=1, hidden=8)
    text = table.render()
    for row in ("FlowModel.fit: first epoch", "FlowModel.fit: later epochs", "Keras' own train function: per epoch"):
        assert row in text, row
    assert all(np.isfinite(v) and v > 0 for _, fit, trainer, _ in table.rows for v in (fit, trainer))
