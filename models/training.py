"""The training step that `FlowModel.fit` and the pipeline's trainer share.

A step is one gradient step: the objective's loss on a batch (+ the papers' L2 penalty), its
gradients, the optimizer's update. `CompiledStep` runs it as one XLA program where XLA compiles it:
a flow is many small ops (a spline MAF at D=4 trains about twice as fast as on the plain graph,
`benchmarks/speed.py --fit-vs-trainer`), and the fused program is what both paths run.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["CompiledStep", "first_line", "gradient_step", "loss_and_gradients", "kernel_l2"]


def kernel_l2(variables):
    """sum of squares of every kernel (weight matrix) among `variables`: the papers' L2 penalty."""
    kernels = [v for v in variables if "kernel" in v.name]
    return tf.add_n([tf.reduce_sum(tf.square(v)) for v in kernels]) if kernels else tf.constant(0.0)


def first_line(error: BaseException) -> str:
    """The first line of an error's message: TensorFlow's run to pages of graph context."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def loss_and_gradients(model, objective, batch, l2: float = 0.0, replicas: int = 1):
    """``(loss, value, gradients)`` of one batch.

    Args:
      model: a Keras model; the gradients are those of its trainable variables.
      objective: ``objective(model, batch) -> (loss to minimise, the batch's metric value)``.
      batch: what `objective` takes.
      l2: weight of `kernel_l2` in the loss (0: none).
      replicas: replicas that each hold a slice of the global batch; the gradients are scaled
        by ``1 / replicas`` so that a distribution strategy's all-reduce (a sum) gives the mean.
    """
    with tf.GradientTape() as tape:
        objective_loss, value = objective(model, batch)
        loss = objective_loss + l2 * kernel_l2(model.trainable_variables) if l2 else objective_loss
        scaled = loss / replicas
    return loss, value, tape.gradient(scaled, model.trainable_variables)


def gradient_step(model, optimizer, objective, batch, l2: float = 0.0, replicas: int = 1):
    """One gradient step (`loss_and_gradients`, then the optimizer's update); ``(loss, value)``."""
    loss, value, gradients = loss_and_gradients(model, objective, batch, l2, replicas)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    return loss, value


class CompiledStep:
    """A step function run as one XLA program where XLA compiles it, else on the plain graph.

    Some steps cannot be compiled (a user's target written with `tf.py_function`); the first
    compilation error is logged once and the step keeps to the plain graph from then on.
    Compilation fails before anything runs, so the plain graph can take that same batch.

    Args:
      step: the Python step function (traced by `tf.function`).
      jit_compile: False runs the plain graph only.
      xla_step: the compiled variant when it is not ``tf.function(step, jit_compile=True)``
        (a distributed step compiles each replica's part only).
      logger: where the fallback is reported (default TensorFlow's logger).
    """

    def __init__(self, step, *, jit_compile: bool = True, xla_step=None, logger=None):
        self.plain = tf.function(step)
        self.xla = xla_step or tf.function(step, jit_compile=True)
        self.use_xla = jit_compile
        self.logger = logger or tf.get_logger()

    def __call__(self, *args):
        if self.use_xla:
            try:
                return self.xla(*args)
            except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as error:
                if "compil" not in str(error).lower():
                    raise
                self.use_xla = False
                self.logger.warning("XLA could not compile the train step (%s); using the plain graph",
                                    first_line(error))
        return self.plain(*args)
