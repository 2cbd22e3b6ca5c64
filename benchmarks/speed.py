"""Speed of tfflows against TensorFlow Probability's MAF, measured in one run (project issue 8).

    python -m benchmarks.speed            # default: finishes in a few minutes on 2 CPU cores
    python -m benchmarks.speed --full     # sequential paths on 100 rows at D=784 too (~15 min)
    python -m benchmarks.speed --fit-vs-trainer   # FlowModel.fit against the trainer's step only

Both sides use the same architecture: `layers` MAF layers, one hidden layer of H relu units, D
inputs, no batch norm, a standard normal base. TFP's flow is
`TransformedDistribution(Normal, Chain([MAF(AutoregressiveNetwork(2, [H])), Permute(reverse), ...]))`;
ours is `build_flow(kind, D, num_layers=layers, hidden_units=[H], batch_norm=False)`.

TFP's sequential direction (MAF sampling, IAF density) re-runs the whole network D times per layer
(O(D^2 H) per row), ours runs `MADE.autoregressive_loop` (O(D H) per row). At D=784 TFP needs
minutes for 100 samples, so by default the sequential paths at D=784 run on 10 rows, on both
sides (no extrapolation: at small batches TFP's per-step passes are bound by reading the weights,
so its time is far from proportional to the rows); `--full` runs 100 rows everywhere, plus eager
calls at D=784. A call of TFP's taking minutes is timed once or twice, not `reps` times.

Every timed function is a `tf.function`, called once to trace and warm up before timing; each
figure is the median of `reps` timed calls. "xla" rows use `tf.function(jit_compile=True)`. The
library's defaults: eager `sample` and IAF `log_prob` run an XLA-compiled loop; eager `log_prob`
otherwise runs one compiled graph; the evaluator and the exported SavedModel run the frozen copy
(`FlowModel.frozen`: masks multiplied into the kernels once). "eager calls" rows time the calls as
a user makes them, with no tf.function around them (how the issue's TFP figures were taken).

FLOP counts are matmul FLOPs only: one MADE with one hidden layer costs 2·B·(D·H + H·2D) forward;
a training step is counted as 3x forward. The peak is the median rate of a 2048x2048 fp32
`tf.matmul` measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import platform
import tempfile
import time

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from tfflows.models import FlowModel, build_flow
from tfflows.models.made import MaskedDense

tfb, tfd = tfp.bijectors, tfp.distributions

DEFAULT_SHAPES = ((43, 512), (784, 1024))


# ----- timing helpers ---------------------------------------------------------------------------
def median_time(fn, reps: int, warmup: int = 1, max_seconds: float = float("inf")) -> float:
    """Median wall time (s) of `fn()` over `reps` calls, after `warmup` untimed calls; fewer calls
    (at least one) once the timed calls have taken `max_seconds`."""
    for _ in range(warmup):
        _block(fn())
    times = []
    while len(times) < reps and (not times or sum(times) < max_seconds):
        start = time.perf_counter()
        _block(fn())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _block(result):
    """Forces the result to host so asynchronous work is counted."""
    for t in tf.nest.flatten(result):
        if isinstance(t, (tf.Tensor, tf.Variable)):
            t.numpy()


def _reps_at(batch: int, reps: int) -> int:
    """Single-row calls are short and noisy: ten times the repetitions."""
    return reps * 10 if batch == 1 else reps


def matmul_peak_gflops(n: int = 2048, reps: int = 5) -> float:
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    f = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    return 2 * n**3 / median_time(f, reps) / 1e9


def made_forward_flops(batch: int, d: int, h: int, layers: int) -> float:
    """Matmul FLOPs of `layers` one-hidden-layer Gaussian MADEs on `batch` rows."""
    return 2.0 * batch * (d * h + h * 2 * d) * layers


# ----- the two implementations -----------------------------------------------------------------
def build_ours(kind: str, d: int, h: int, layers: int):
    return build_flow(kind, d, num_layers=layers, hidden_units=[h], batch_norm=False)


class TFPFlow(tf.Module):
    """TFP's MAF: `layers` MAF bijectors with reversals between, over a standard normal."""

    def __init__(self, d: int, h: int, layers: int, seed: int = 0):
        super().__init__(name="tfp_maf")
        self.nets = []
        bijectors = []
        for k in range(layers):
            net = tfb.AutoregressiveNetwork(params=2, hidden_units=[h], activation="relu", event_shape=[d])
            net.build((None, d))
            self.nets.append(net)
            bijectors.append(tfb.MaskedAutoregressiveFlow(shift_and_log_scale_fn=net))
            if k < layers - 1:
                bijectors.append(tfb.Permute(permutation=np.arange(d)[::-1].copy()))
        # Chain applies its list last-to-first in the forward (sampling) direction.
        self.maf = tfb.Chain(bijectors[::-1])
        self.base = tfd.Sample(tfd.Normal(0.0, 1.0), sample_shape=[d])
        self.maf_dist = tfd.TransformedDistribution(self.base, self.maf)
        self.iaf_dist = tfd.TransformedDistribution(self.base, tfb.Invert(self.maf))

    @property
    def variables_to_train(self):
        return [v for net in self.nets for v in net.trainable_variables]


# ----- the measurements ------------------------------------------------------------------------
def sample_fn(model, n: int, jit: bool = False):
    return tf.function(lambda: model.sample(n, seed=1), jit_compile=jit)


def tfp_sample_fn(flow: TFPFlow, n: int):
    return tf.function(lambda: flow.maf_dist.sample(n, seed=1))


def train_step_fn(log_prob, variables, jit: bool = False):
    optimizer = tf_keras.optimizers.Adam(1e-4)

    def step(x):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(log_prob(x))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return tf.function(step, jit_compile=jit)


def export_and_load(log_prob, owner, d: int, directory: str):
    """Saves a tf.Module with `log_prob` over [None, d] float32 (owner: what holds the variables)."""
    module = tf.Module()
    module.owner = owner
    module.log_prob = tf.function(log_prob, input_signature=[tf.TensorSpec([None, d], tf.float32)])
    tf.saved_model.save(module, directory)
    return tf.saved_model.load(directory)  # keep the loaded object alive: it owns the variables


class Table:
    """Rows of (ours, other); the ratio column is our speed-up (other/ours for times)."""

    def __init__(self, title: str, unit: str, columns=("ours", "TFP"), times: bool = False):
        self.title, self.unit, self.columns, self.times, self.rows = title, unit, columns, times, []

    def add(self, label: str, ours: float | None, tfp_value: float | None, note: str = ""):
        self.rows.append((label, ours, tfp_value, note))

    def render(self) -> str:
        fmt = lambda v: "-" if v is None else (f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}")
        lines = [f"== {self.title} ({self.unit}) ==",
                 f"{'case':<42}{self.columns[0]:>12}{self.columns[1]:>12}{'speed-up':>10}  note"]
        for label, ours, other, note in self.rows:
            ratio = "-" if not ours or not other else f"{(other / ours if self.times else ours / other):.3g}x"
            lines.append(f"{label:<42}{fmt(ours):>12}{fmt(other):>12}{ratio:>10}  {note}".rstrip())
        return "\n".join(lines)


def _maybe_xla(make, *args):
    """Time of the XLA-compiled variant, or None when XLA refuses the graph."""
    try:
        return make(*args)
    except Exception as error:  # noqa: BLE001 - XLA failures are reported, not fatal
        print(f"  (xla failed: {type(error).__name__}: {str(error).splitlines()[0][:100]})")
        return None


# TFP's sequential calls take up to minutes each at D=784: repeat them for at most this long.
_SLOW_SECONDS = 30.0


@dataclasses.dataclass
class Case:
    """One (D, H) shape of `run`: both sides' MAFs and the settings every table times them with."""

    d: int
    h: int
    layers: int
    n: int  # rows of the sequential paths (sampling, IAF log_prob), on both sides
    eager: bool  # also time eager calls, as a user makes them (how the TFP figures were taken)
    reps: int
    xla: bool
    rng: np.random.Generator  # one generator for all the shape's inputs, drawn table after table
    ours: FlowModel = dataclasses.field(init=False)
    ours_frozen: FlowModel = dataclasses.field(init=False)  # the one frozen copy of `ours`
    theirs: TFPFlow = dataclasses.field(init=False)

    def __post_init__(self):
        self.ours = build_ours("maf", self.d, self.h, self.layers)
        self.ours_frozen = self.ours.frozen()
        self.theirs = TFPFlow(self.d, self.h, self.layers)

    @property
    def tag(self) -> str:
        return f"D={self.d},H={self.h}"

    def flow(self, kind: str) -> FlowModel:
        """Our MAF, or a fresh flow of another kind of the same shape."""
        return self.ours if kind == "maf" else build_ours(kind, self.d, self.h, self.layers)

    def rows(self, n: int) -> tf.Tensor:
        """``n`` standard normal rows of width D (float32)."""
        return tf.constant(self.rng.standard_normal((n, self.d)), tf.float32)


def sampling_rows(table: Table, case: Case) -> None:
    """MAF sampling (the sequential direction): seconds per call of `n` samples."""
    ours, theirs, n, reps, tag = case.ours, case.theirs, case.n, case.reps, case.tag
    t_tfp = median_time(tfp_sample_fn(theirs, n), reps, max_seconds=_SLOW_SECONDS)
    table.add(f"{tag} {n} samples, tf.function", median_time(sample_fn(ours, n), reps), t_tfp)
    if case.xla:
        table.add(f"{tag} {n} samples, ours XLA (default when eager) vs TFP",
                  _maybe_xla(lambda: median_time(sample_fn(ours, n, jit=True), reps)), t_tfp)
    if case.eager:
        t_ours = median_time(lambda: ours.sample(n, seed=1), reps)
        t_tfp_eager = median_time(lambda: theirs.maf_dist.sample(n, seed=1), reps, warmup=0,
                                  max_seconds=_SLOW_SECONDS)
        table.add(f"{tag} {n} samples, eager calls", t_ours, t_tfp_eager)


def iaf_rows(table: Table, case: Case) -> None:
    """IAF log_prob (the sequential direction): rows/s on `n` rows."""
    n, reps, tag = case.n, case.reps, case.tag
    ours_iaf = build_ours("iaf", case.d, case.h, case.layers)
    x_seq = case.rows(n)
    iaf_ours = tf.function(ours_iaf.log_prob)
    iaf_ours_xla = tf.function(ours_iaf.log_prob, jit_compile=True)
    iaf_tfp = tf.function(case.theirs.iaf_dist.log_prob)
    r_tfp = n / median_time(lambda: iaf_tfp(x_seq), reps, max_seconds=_SLOW_SECONDS)
    table.add(f"{tag} batch {n}, tf.function", n / median_time(lambda: iaf_ours(x_seq), reps), r_tfp)
    if case.xla:
        table.add(f"{tag} batch {n}, ours XLA (default when eager) vs TFP",
                  _maybe_xla(lambda: n / median_time(lambda: iaf_ours_xla(x_seq), reps)), r_tfp)
    if case.eager:
        r_ours = n / median_time(lambda: ours_iaf.log_prob(x_seq), reps)
        r_tfp_eager = n / median_time(lambda: case.theirs.iaf_dist.log_prob(x_seq), reps, warmup=0,
                                      max_seconds=_SLOW_SECONDS)
        table.add(f"{tag} batch {n}, eager calls", r_ours, r_tfp_eager)


def training_rows(table: Table, case: Case, batch: int, steps: int, kinds) -> dict[str, float]:
    """Adam steps on one batch: examples/s per kind; returns the rates, TFP's under "TFP"."""
    theirs, tag = case.theirs, case.tag
    x_train = case.rows(batch)

    def examples_per_s(step):
        return batch / median_time(lambda: step(x_train), steps, warmup=2)

    rates = {"TFP": examples_per_s(train_step_fn(theirs.maf_dist.log_prob, theirs.variables_to_train))}
    tfp_xla = _maybe_xla(lambda: examples_per_s(
        train_step_fn(theirs.maf_dist.log_prob, theirs.variables_to_train, jit=True))) if case.xla else None
    for kind in kinds:
        model = case.flow(kind)
        rates[kind] = examples_per_s(train_step_fn(model.log_prob, model.trainable_variables))
        table.add(f"{tag} {kind}", rates[kind], rates["TFP"])
        if case.xla:
            rate_xla = _maybe_xla(lambda: examples_per_s(
                train_step_fn(model.log_prob, model.trainable_variables, jit=True)))
            table.add(f"{tag} {kind} xla (TFP xla)", rate_xla, tfp_xla)
    return rates


def log_prob_rows(table: Table, case: Case, train_batch: int, eval_batch: int | None,
                  kinds) -> dict[int, tuple[float, float]]:
    """Density direction, rows/s at batches 1, `train_batch` and `eval_batch`: each kind's training
    model (masks applied per call) and its frozen copy (masks baked in once; what the evaluator and
    the exported SavedModel run). Returns the (frozen MAF, TFP) rates per batch."""
    reps, tag = case.reps, case.tag
    batches = (1, train_batch, eval_batch or (10000 if case.d < 200 else 1000))
    tfp_log_prob = tf.function(case.theirs.maf_dist.log_prob)
    models = {kind: case.flow(kind) for kind in kinds}
    frozen = {kind: case.ours_frozen if kind == "maf" else model.frozen() for kind, model in models.items()}
    maf_rates = {}
    for batch in batches:
        x = case.rows(batch)
        batch_reps = _reps_at(batch, reps)
        tfp_rate = batch / median_time(lambda: tfp_log_prob(x), batch_reps)
        for kind, model in models.items():
            other, note = (tfp_rate, "") if kind == "maf" else (None, "no TFP twin")
            for label, variant in (("", model), (" frozen", frozen[kind])):
                f = tf.function(variant.log_prob)
                rate = batch / median_time(lambda: f(x), batch_reps)
                table.add(f"{tag} {kind}{label} batch {batch}", rate, other, note)
                if kind == "maf" and label:
                    maf_rates[batch] = (rate, tfp_rate)
        if case.xla and batch == train_batch:
            frozen_xla = tf.function(case.ours_frozen.log_prob, jit_compile=True)
            tfp_xla = tf.function(case.theirs.maf_dist.log_prob, jit_compile=True)
            table.add(f"{tag} maf frozen xla (TFP xla) batch {batch}",
                      _maybe_xla(lambda: batch / median_time(lambda: frozen_xla(x), reps)),
                      _maybe_xla(lambda: batch / median_time(lambda: tfp_xla(x), reps)))
    return maf_rates


def gflops_rows(table: Table, case: Case, peak: float, batch: int, train_rates: dict[str, float],
                log_prob_rates: dict[int, tuple[float, float]]) -> None:
    """The MAF's achieved matmul rate (GFLOP/s) in training (3x forward FLOPs) and in the frozen
    log_prob, both at the training batch, from the rates the other tables measured."""
    flops = made_forward_flops(batch, case.d, case.h, case.layers)

    def add(label: str, flops_per_call: float, ours: float, other: float):
        g_ours, g_tfp = flops_per_call * ours / batch / 1e9, flops_per_call * other / batch / 1e9
        table.add(f"{case.tag} {label}", g_ours, g_tfp,
                  f"ours {100 * g_ours / peak:.0f}%, TFP {100 * g_tfp / peak:.0f}% of peak")

    if "maf" in train_rates:
        add("maf training", 3 * flops, train_rates["maf"], train_rates["TFP"])
    if batch in log_prob_rates:
        add(f"maf frozen log_prob, batch {batch}", flops, *log_prob_rates[batch])


def saved_model_rows(table: Table, case: Case) -> None:
    """Exported SavedModel log_prob, rows/s (the pusher exports the frozen copy)."""
    reps = case.reps
    with tempfile.TemporaryDirectory() as tmp:
        loaded_ours = export_and_load(case.ours_frozen.log_prob, case.ours_frozen, case.d,
                                      os.path.join(tmp, "ours"))
        loaded_tfp = export_and_load(case.theirs.maf_dist.log_prob, case.theirs.nets, case.d,
                                     os.path.join(tmp, "tfp"))
        for batch in (1, 1000):
            x = case.rows(batch)
            r1 = batch / median_time(lambda: loaded_ours.log_prob(x), _reps_at(batch, reps))
            r2 = batch / median_time(lambda: loaded_tfp.log_prob(x), _reps_at(batch, reps))
            table.add(f"{case.tag} maf batch {batch}", r1, r2)


def run(shapes=DEFAULT_SHAPES, layers: int = 5, n_samples: int = 100, sequential_rows: dict | None = None,
        train_batch: int = 100, eval_batch: int | None = None, reps: int = 3, train_steps: int = 5,
        kinds=("maf", "realnvp", "haf"), xla: bool = True, print_fn=print) -> dict[str, Table]:
    """Measures everything and returns the tables (also printed as they complete).

    sequential_rows maps D to the number of samples / rows of the sequential paths (sampling, IAF
    log_prob) at that D, on both sides (default: n_samples).
    """
    sequential_rows = sequential_rows or {}
    peak = matmul_peak_gflops(reps=reps)
    print_fn(f"fp32 matmul peak (2048x2048 tf.matmul): {peak:.1f} GFLOP/s")
    tables = {
        "sample": Table("MAF sampling", "seconds per call; lower is better", times=True),
        "iaf": Table("IAF log_prob (sequential direction)", "rows/s; higher is better"),
        "train": Table(f"Training, batch {train_batch}, Adam", "examples/s; higher is better"),
        "gflops": Table("MAF achieved matmul rate", f"GFLOP/s; % of {peak:.0f} peak in note"),
        "log_prob": Table("log_prob (density direction)", "rows/s; higher is better"),
        "saved": Table("Exported SavedModel log_prob", "rows/s; higher is better"),
    }
    rng = np.random.default_rng(0)
    for d, h in shapes:
        n = int(sequential_rows.get(d, n_samples))
        case = Case(d, h, layers, n, n == n_samples, reps, xla, rng)
        sampling_rows(tables["sample"], case)
        iaf_rows(tables["iaf"], case)
        train_rates = training_rows(tables["train"], case, train_batch, train_steps, kinds)
        log_prob_rates = log_prob_rows(tables["log_prob"], case, train_batch, eval_batch, kinds)
        gflops_rows(tables["gflops"], case, peak, train_batch, train_rates, log_prob_rates)
        saved_model_rows(tables["saved"], case)
        print_fn(f"-- done {case.tag}")
    return tables


def machine_line() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"machine: {cores} cores, {model}, TF {tf.__version__}, TFP {tfp.__version__}, "
            f"Python {platform.python_version()}")


# ----- FlowModel.fit against the trainer's step (issue 27) ----------------------------------------
def _mean_log_likelihood(model, x):
    """The maximum-likelihood objective as the trainer takes it: (loss, value) = (-mean ll, mean ll)."""
    ll = tf.reduce_mean(model.log_prob(x, training=True))
    return -ll, ll


def _fit_epoch_ends(model, data, epochs: int) -> list[float]:
    """Seconds from the `fit` call to the end of each epoch (tracing and compilation included)."""
    ends, start = [], time.perf_counter()
    record = tf_keras.callbacks.LambdaCallback(on_epoch_end=lambda *_: ends.append(time.perf_counter() - start))
    model.fit(data, epochs=epochs, verbose=0, callbacks=[record])
    return ends


def _trainer_epoch_ends(model, data, epochs: int) -> list[float]:
    """The same for the pipeline's trainer step (`components.train.strategy.replicated_step`)."""
    from tfflows.components.train.strategy import distribute, replicated_step

    strategy = tf.distribute.get_strategy()
    ends, start = [], time.perf_counter()
    step = replicated_step(strategy, model, model.optimizer, _mean_log_likelihood, 0.0, True)
    for _ in range(epochs):
        for batch in distribute(strategy, data):
            loss, _ = step(batch)
        _block(loss)
        ends.append(time.perf_counter() - start)
    return ends


def fit_vs_trainer(d: int = 4, rows: int = 2000, batch: int = 100, epochs: int = 6, layers: int = 5,
                   hidden: int = 64) -> Table:
    """A spline MAF trained by `FlowModel.fit`, by Keras' own train function (`fit` before issue 27)
    and by the trainer's compiled step, on the same data and batches: the first epoch (tracing and
    XLA compilation included) and the median of the later epochs."""
    x = np.random.default_rng(0).standard_normal((rows, d)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices(x).batch(batch)

    def fresh():
        model = build_flow("maf", d, num_layers=layers, hidden_units=[hidden], batch_norm=False,
                           transformer="spline")
        model.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
        return model

    keras_own = fresh()
    keras_own.make_train_function = lambda force=False: tf_keras.Model.make_train_function(keras_own, force)
    # In this order: a later run in the process compiled slower here (the same trainer step's first
    # epoch took 7 s run first, 10 s run third), so `fit`, the claim under test, runs last.
    runs = {"keras": _fit_epoch_ends(keras_own, data, epochs),
            "trainer": _trainer_epoch_ends(fresh(), data, epochs), "fit": _fit_epoch_ends(fresh(), data, epochs)}
    first = {name: ends[0] for name, ends in runs.items()}
    later = {name: float(np.median(np.diff(ends))) for name, ends in runs.items()}
    table = Table(f"Spline MAF, D={d}, {layers} layers, H={hidden}, {rows} rows, batch {batch}",
                  "seconds; lower is better", columns=("fit", "trainer"), times=True)
    table.add("FlowModel.fit: first epoch", first["fit"], first["trainer"], "tracing + XLA compile")
    table.add("FlowModel.fit: later epochs, per epoch", later["fit"], later["trainer"],
              f"{rows / later['fit']:,.0f} vs {rows / later['trainer']:,.0f} examples/s")
    table.add("Keras' own train function: first epoch", first["keras"], first["trainer"], "fit before issue 27")
    table.add("Keras' own train function: per epoch", later["keras"], later["trainer"],
              f"{rows / later['keras']:,.0f} examples/s")
    return table


# ----- profile: masked products vs the rest (issue 8, part 2) -------------------------------------
@contextlib.contextmanager
def unmasked_kernels():
    """Within: MaskedDense uses its raw kernel (a plain Dense of the same shape). Timing only."""
    original = MaskedDense.masked_kernel

    @tf.autograph.experimental.do_not_convert
    def raw_kernel(self):
        return self.kernel

    MaskedDense.masked_kernel = raw_kernel
    try:
        yield
    finally:
        MaskedDense.masked_kernel = original


def profile(shapes=DEFAULT_SHAPES, layers: int = 5, batch: int = 100, steps: int = 5, n_samples: int = 100,
            reps: int = 3, print_fn=print) -> Table:
    """Train-step time with masks vs plain kernels, with/without batch norm; frozen log_prob vs its
    matmuls alone; sampling, plain vs XLA, and per sequential step; the per-call floor."""
    table = Table("Profile: MAF train step, log_prob and sampling", "ms per call; lower is better",
                  columns=("A", "B"), times=True)
    rng = np.random.default_rng(1)
    for d, h in shapes:
        tag = f"D={d},H={h}"
        x = tf.constant(rng.standard_normal((batch, d)), tf.float32)

        def step_ms(batch_norm: bool, masked: bool, jit: bool = False):
            model = build_flow("maf", d, num_layers=layers, hidden_units=[h], batch_norm=batch_norm)
            log_prob = lambda v: model.log_prob(v, training=True)
            with (contextlib.nullcontext() if masked else unmasked_kernels()):
                step = train_step_fn(log_prob, model.trainable_variables, jit=jit)
                return 1e3 * median_time(lambda: step(x), steps, warmup=2)

        masked, plain = step_ms(False, True), step_ms(False, False)
        table.add(f"{tag} train A=masked B=unmasked", masked, plain, "B: same step, raw kernels (plain Dense)")
        table.add(f"{tag} train+BN A=masked B=unmasked", step_ms(True, True), step_ms(True, False))
        flops = 3 * made_forward_flops(batch, d, h, layers)
        table.add(f"{tag} train B=matmuls alone at peak", None, 1e3 * flops / 1e9 / matmul_peak_gflops(reps=2),
                  "3x forward matmul FLOPs / 2048^2 matmul rate")
        model = build_flow("maf", d, num_layers=layers, hidden_units=[h], batch_norm=False)
        frozen = tf.function(model.frozen().log_prob)
        kernels = [(m.hidden_layers[0].kernel, m.output_layer.kernel) for m in (f.made for f in model.flow_layers)]

        @tf.function
        def matmuls(v):
            for w1, w2 in kernels:
                v = tf.matmul(tf.matmul(v, w1), w2)[:, :d]
            return v

        table.add(f"{tag} log_prob {batch} A=frozen B=its matmuls alone", 1e3 * median_time(lambda: frozen(x), reps),
                  1e3 * median_time(lambda: matmuls(x), reps), "B: the 2 matmuls per layer, nothing else")
        plain = 1e3 * median_time(sample_fn(model, n_samples), reps)
        default = 1e3 * median_time(lambda: model.sample(n_samples, seed=1), reps)
        table.add(f"{tag} sample {n_samples} A=plain graph B=default", plain, default,
                  "B: eager model.sample, the library's XLA-compiled loop")
        table.add(f"{tag} sample, per sequential step", None, default / (layers * d),
                  f"B / ({layers} layers x {d} steps)")
        print_fn(f"-- profiled {tag}")
    empty = tf.function(lambda: tf.constant(0.0))
    table.add("empty tf.function call", None, 1e3 * median_time(empty, 20 * reps), "per-call floor")
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="sequential paths on 100 rows at every D")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-xla", action="store_true")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--fit-vs-trainer", action="store_true",
                        help="only FlowModel.fit against the trainer's step (a spline MAF at D=4)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.fit_vs_trainer:
        print(fit_vs_trainer().render(), machine_line(), sep="\n\n")
        return
    sequential_rows = {} if args.full else {784: 10}
    tables = run(sequential_rows=sequential_rows, reps=args.reps, xla=not args.no_xla)
    print()
    for table in tables.values():
        print(table.render(), end="\n\n")
    if not args.no_profile:
        print(profile(reps=args.reps).render(), end="\n\n")
    print(machine_line())
    print(f"total wall time {time.perf_counter() - start:.0f} s; timings are medians of {args.reps} calls "
          f"(training: 5 steps) after warm-up; other processes share these cores, so expect noise")


if __name__ == "__main__":
    main()
