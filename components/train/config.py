"""Configuration of the train component: `TrainConfig` (the optimisation) and `TrackingConfig`
(where the MLflow run goes). Both are frozen, JSON-friendly dataclasses that round-trip through
``to_json`` / ``from_json`` (how the TFX wrapper passes them as execution properties)."""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Dict, Optional, Tuple

from tfflows.components import objectives
from tfflows.components.config import ConfigError, JsonConfig
from tfflows.models.kinds import FLOW_KINDS, SHARED_OPTIONS, OptionError, check_own_options, flow_option_names

__all__ = ["TrainConfig", "TrackingConfig", "LR_SCHEDULES", "OBJECTIVES"]

LR_SCHEDULES = ("constant", "cosine", "exponential")
# `models.build_flow` options that are fields of `TrainConfig` (`flow_kwargs` passes them).
FLOW_FIELDS = frozenset({"num_layers", "hidden_units", "l2", "seed", "batch_norm", "num_components"})
OBJECTIVES = tuple(objectives.OBJECTIVES)  # the registered objectives' names


@dataclass(frozen=True)
class TrainConfig(JsonConfig):
    """What is trained (a flow on data, a flow on a target, or a VAE) and how (component
    `components/train`).

    Attributes:
      kind: the flow kind, one of `models.FLOW_KINDS` ("made", "made_mog", "maf", "iaf",
        "realnvp", "haf", "nice", "planar", and for data with an image shape "glow" and
        "realnvp_image"); reverse_kl takes "planar", "iaf" or "realnvp".
      num_layers: number of flow layers K (`models.FlowConfig.num_layers`).
      hidden_units: hidden widths of each MADE / conditioner, e.g. ``(512,)``.
      batch_norm: batch-norm bijectors between layers (None: the flow kind's default).
      num_components: mixture components per conditional for "made_mog" / MAF MoG (None:
        the kind's default).
      l2: weight of the L2 penalty on all kernels (1e-6 in the MAF paper).
      flow_options: any further options of the kind (`models.kinds.flow_option_names(kind)`, e.g. ``{"order": "random",
        "activation": "tanh"}``), checked with the kind's own checks when the configuration is read; an
        option that is a field above (``hidden_units``, ``num_layers``, ``l2``, ``seed``, ``batch_norm``,
        ``num_components``) is refused: set the field.
      objective: "max_likelihood" (fit the flow to the ingested data: the default) or
        "reverse_kl" (variational inference: fit the flow q to the unnormalised density
        ``target`` by minimising KL(q || p) with the reparameterisation trick; no data is
        ingested, and the validation/test metric is the ELBO E_q[log p~ - log q] instead of the
        log-likelihood); or "vae" (a variational autoencoder on the ingested data with an IAF
        posterior of ``num_layers`` gated steps, each a MADE of ``hidden_units``; 0 steps is
        the diagonal-Gaussian baseline; the metric is the ELBO, the test metric the
        importance-sampled log-likelihood; discrete data is binarised dynamically).
      vae_options: vae only: ``latent_dim`` (32), ``hidden_units`` of the encoder and decoder
        ((300, 300)), ``context_dim`` (32), ``forget_bias`` (1.5), ``likelihood``
        ("bernoulli" for discrete data, "gaussian" or "logistic"): see `models.vae.IAFVAE`.
      target: reverse_kl only: "U1".."U4" (the thesis' table 3.1 potentials, 2-D) or
        "package.module:function" (your own log p~: z [n, D] float32 -> [n]).
      target_dim: reverse_kl with your own target: its dimension D.
      target_box: reverse_kl only: half-width of the soft box exp(-sum (z_i/box)^8 / 2) the
        target is multiplied by (U2-U4 have infinite mass without it); None: the target as is.
      anneal_epochs: reverse_kl only: the target's weight beta rises linearly from 0.01 to 1
        over this many epochs (Rezende & Mohamed's annealing); 0: beta = 1 throughout.
      epochs: maximum number of passes over the train split.
      batch_size: examples per step (100 in the papers); with several replicas the global batch,
        split evenly across them.
      learning_rate: Adam's base learning rate (1e-4 in the papers).
      lr_schedule: "constant", "cosine" (cosine decay from ``learning_rate`` to
        ``learning_rate * lr_min_fraction`` over ``epochs``) or "exponential" (multiplied by
        ``lr_decay_rate`` after every epoch). The learning rate is set once per epoch.
      lr_decay_rate: per-epoch factor of the "exponential" schedule.
      lr_min_fraction: final fraction of the base learning rate of the "cosine" schedule.
      patience: early stopping: stop after this many epochs without a better validation
        log-likelihood or ELBO (30 in the papers) and keep the best epoch's weights; None disables
        early stopping (the best epoch's weights are still kept).
      max_steps_per_epoch: cap on the steps of one epoch (None: the whole train split;
        reverse_kl: the steps of one epoch, default 100).
      eval_batch_size: batch size of validation passes and batch-norm statistics (reverse_kl:
        the number of samples of q behind the validation ELBO).
      shuffle_buffer: shuffle buffer of the train split (None: the whole split, exact shuffle
        for splits up to that size).
      seed: seeds weight initialisation, the per-epoch data order and the per-epoch
        dequantisation noise (epoch e uses seeds derived from (seed, e), so a resumed run sees
        exactly the data an uninterrupted run would).
      mixed_precision: reserved; True is refused (a flow's log-determinant sums need float32).
      jit_compile: compile the train step with XLA on a single device (20-50 % more examples/s
        on CPU, `benchmarks/speed.py`). If XLA cannot compile a step, the run says so and goes on
        with the plain graph. With several replicas (GPUs, or workers under ``TF_CONFIG``) only
        each replica's gradient computation is compiled; the all-reduce runs in the plain graph.
      resume: continue from the newest checkpoint in the checkpoint folder if there is one;
        False deletes that folder's checkpoints and starts afresh.
      max_nan_retries: how many times a non-finite loss or weight is answered by rolling back
        to the last checkpoint with the learning rate halved before the run gives up
        (status "diverged").
      log_every_steps: progress line (epoch, step, loss, examples/s) every this many steps.
      num_plot_samples: samples drawn for the MLflow samples figure.
    """

    kind: str = "maf"
    num_layers: int = 5
    hidden_units: Tuple[int, ...] = (512,)
    batch_norm: Optional[bool] = None
    num_components: Optional[int] = None
    l2: float = 1e-6
    flow_options: Dict[str, Any] = field(default_factory=dict)
    objective: str = "max_likelihood"
    target: Optional[str] = None
    target_dim: Optional[int] = None
    target_box: Optional[float] = 4.0
    anneal_epochs: int = 0
    vae_options: Dict[str, Any] = field(default_factory=dict)
    epochs: int = 100
    batch_size: int = 100
    learning_rate: float = 1e-4
    lr_schedule: str = "constant"
    lr_decay_rate: float = 0.95
    lr_min_fraction: float = 0.0
    patience: Optional[int] = 30
    max_steps_per_epoch: Optional[int] = None
    eval_batch_size: int = 1000
    shuffle_buffer: Optional[int] = 100_000
    seed: int = 0
    mixed_precision: bool = False
    jit_compile: bool = True
    resume: bool = True
    max_nan_retries: int = 3
    log_every_steps: int = 100
    num_plot_samples: int = 64

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_units", tuple(int(h) for h in self.hidden_units))
        object.__setattr__(self, "flow_options", dict(self.flow_options or {}))
        object.__setattr__(self, "vae_options", dict(self.vae_options or {}))
        for name in ("epochs", "batch_size", "eval_batch_size", "log_every_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"`{name}` must be an int >= 1, but is {value!r}", field=name)
        for name in ("patience", "max_steps_per_epoch", "shuffle_buffer"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"`{name}` must be an int >= 1 or None, but is {value!r}", field=name)
        if not self.learning_rate > 0:
            raise ConfigError(f"`learning_rate` must be > 0, but is {self.learning_rate!r}", field="learning_rate")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"`lr_schedule` must be one of {LR_SCHEDULES}, but is {self.lr_schedule!r}", field="lr_schedule")
        if not 0 < self.lr_decay_rate <= 1:
            raise ConfigError(f"`lr_decay_rate` must be in (0, 1], but is {self.lr_decay_rate!r}", field="lr_decay_rate")
        if not 0 <= self.lr_min_fraction <= 1:
            raise ConfigError(f"`lr_min_fraction` must be in [0, 1], but is {self.lr_min_fraction!r}", field="lr_min_fraction")
        if self.num_components is not None and self.num_components < 1:
            raise ConfigError(f"`num_components` must be an int >= 1 or None, but is {self.num_components!r}",
                              field="num_components")
        if not self.l2 >= 0:
            raise ConfigError(f"`l2` must be >= 0, but is {self.l2!r}", field="l2")
        if self.num_plot_samples < 0:
            raise ConfigError(f"`num_plot_samples` must be >= 0, but is {self.num_plot_samples!r}",
                              field="num_plot_samples")
        if self.max_nan_retries < 0:
            raise ConfigError(f"`max_nan_retries` must be >= 0, but is {self.max_nan_retries!r}", field="max_nan_retries")
        if self.mixed_precision:
            raise ConfigError("`mixed_precision` must be False, but is True: flows' log-determinants "
                             "lose too much in float16; train in float32.", field="mixed_precision")
        if self.kind not in FLOW_KINDS:
            raise ConfigError(f"`kind` must be one of {FLOW_KINDS}, but is {self.kind!r}", field="kind")
        # Checked here, before any component runs (the flow builder would only fail after ingest).
        self._check_objective()
        fewest = objectives.get_objective(self.objective).min_num_layers
        if not isinstance(self.num_layers, int) or self.num_layers < fewest:
            raise ConfigError(f"`num_layers` must be an int >= {fewest}, but is {self.num_layers!r}", field="num_layers")
        if any(h < 1 for h in self.hidden_units):
            raise ConfigError(f"`hidden_units` must be widths >= 1, e.g. [64, 64], but is {list(self.hidden_units)}", field="hidden_units")
        self._check_flow_options()

    def _check_flow_options(self) -> None:
        """Names and values of ``flow_options`` against the kind's declaration (`models.kinds`, no
        TensorFlow), so that a mistake is one line before ingest instead of a failure in the trainer.
        An option that is a field of this section (``hidden_units``, ...) is refused, not merged:
        the field is its one home (typed, checked, logged to MLflow), and it used to win silently."""
        unknown = set(self.flow_options) - set(flow_option_names(self.kind))
        if unknown:
            own = sorted(set(flow_option_names(self.kind)) - set(SHARED_OPTIONS) - FLOW_FIELDS)
            shared = sorted(set(SHARED_OPTIONS) - FLOW_FIELDS)
            raise ConfigError(f"`flow_options` has unknown option(s) {sorted(unknown)}; fix: use the options of "
                             f"kind {self.kind!r} ({', '.join(own) or 'none of its own'}) or the shared ones "
                             f"({', '.join(shared)})", field="flow_options")
        clash = {"kind", "event_dim"} & set(self.flow_options)
        if clash:
            raise ConfigError(f"`flow_options` must not hold {sorted(clash)}: the kind is `kind` and "
                             "event_dim comes from the data", field="flow_options")
        if repeated := sorted(FLOW_FIELDS & set(self.flow_options)):
            name = repeated[0]
            raise ConfigError(f"`flow_options.{name}` repeats the field train.{name}; fix: set train.{name} "
                             f"instead (--set train.{name}=VALUE) and drop it from flow_options", field=f"flow_options.{name}")
        try:
            check_own_options(self.kind, self.flow_options)
        except OptionError as error:  # name the option by its path: train.flow_options.order
            option = f"flow_options.{error.field}"
            raise ConfigError(str(error).rstrip(".").replace(f"`{error.field}`", f"`{option}`", 1), field=option) from None
        except (TypeError, ValueError) as error:
            raise ConfigError(f"`flow_options` of kind {self.kind!r}: {str(error).rstrip('.')}",
                              field="flow_options") from None

    def _check_objective(self) -> None:
        """The objective's own checks, and no field set that only another objective reads."""
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"`objective` must be one of {OBJECTIVES}, but is {self.objective!r}", field="objective")
        defaults = {f.name: (f.default_factory() if f.default_factory is not MISSING else f.default)
                    for f in fields(self)}
        for name in OBJECTIVES:
            if name == self.objective:
                continue
            for owned in objectives.get_objective(name).owned_fields:
                if getattr(self, owned) != defaults[owned]:
                    raise ConfigError(f"`{owned}` is {getattr(self, owned)!r}, but only objective {name!r} uses it; "
                                     f"set objective: {name} or drop {owned}", field=owned)
        objectives.get_objective(self.objective).check_config(self)

    def target_density(self):
        """(log p~, D) of the reverse_kl target, soft box included (`models.targets.load_target`)."""
        # models.targets imports TensorFlow (a target is a TF function): loaded only by reverse KL's check and run.
        from tfflows.models.targets import load_target

        return load_target(self.target, self.target_dim, self.target_box)

    @property
    def steps_per_epoch(self) -> Optional[int]:
        """Steps of one epoch: ``max_steps_per_epoch``, else the objective's default (None: the
        whole train split)."""
        return self.max_steps_per_epoch or objectives.get_objective(self.objective).default_steps_per_epoch

    def flow_kwargs(self) -> Dict[str, Any]:
        """Keyword options for `models.build_flow(kind, event_dim, **options)`."""
        options = {**objectives.get_objective(self.objective).flow_defaults, **self.flow_options}
        options.update(num_layers=self.num_layers, hidden_units=list(self.hidden_units),
                       l2=self.l2, seed=self.seed)
        if self.batch_norm is not None:
            options["batch_norm"] = self.batch_norm
        if self.num_components is not None:
            options["num_components"] = self.num_components
        return options

    def learning_rate_at(self, epoch: int) -> float:
        """The scheduled learning rate of 1-based ``epoch`` (before any divergence halving)."""
        t = epoch - 1
        if self.lr_schedule == "cosine":
            frac = self.lr_min_fraction + (1 - self.lr_min_fraction) * 0.5 * (
                1 + math.cos(math.pi * t / max(self.epochs - 1, 1)))
            return self.learning_rate * frac
        if self.lr_schedule == "exponential":
            return self.learning_rate * self.lr_decay_rate ** t
        return self.learning_rate



@dataclass(frozen=True)
class TrackingConfig(JsonConfig):
    """MLflow, for the whole run: the one place its settings live (train, evaluate, push and
    `tfflows promote|rollback` read this section; `components.tracking` is the helper).

    MLflow is optional to a run's outcome: when a call fails the run goes on and one warning line
    says what was not logged.

    Attributes:
      uri: MLflow tracking URI: ``sqlite:///<path>/mlflow.db`` for a local store or
        ``http(s)://host:port`` for a tracking server. None disables tracking (the pipeline
        fills in ``<output>/mlflow.db``).
      experiment: experiment name (created when missing; the pipeline's default is its name).
      run_name: name of the training's MLflow run (None: what ran, ``<kind>-<data>-<YYYYMMDD-HHMM>``
        UTC, e.g. ``maf-cancer.csv-20261206-0938``); made unique in the experiment (``-2``, ``-3`` ...).
      enabled: False turns tracking off whatever ``uri`` says.
      artifact_location: artifact root of a newly created experiment (None: for a
        ``sqlite:///`` store, ``mlartifacts`` beside the database file, the store's ``Default``
        experiment included; for a server, the server's default).
      timeout_s: HTTP timeout of each request to a tracking server; an unreachable server is
        detected by one health probe of this timeout and then skipped.
      max_retries: retries of a failed HTTP request (about 1 s, 2 s, 4 s ... apart), so that an
        outage costs seconds, not MLflow's default of minutes.
      registry_uri: MLflow Model Registry URI (None: the tracking URI).
      registered_model_name: registry name of pushed models (None: no registration; the
        pipeline's default is its name).
      alias: registry alias moved to a version by a blessed push and by `tfflows promote` /
        `tfflows rollback` (the version TF Serving's ``stable`` label names).
    """

    uri: Optional[str] = None
    experiment: str = "tfflows"
    run_name: Optional[str] = None
    enabled: bool = True
    artifact_location: Optional[str] = None
    timeout_s: float = 5.0
    max_retries: int = 2
    registry_uri: Optional[str] = None
    registered_model_name: Optional[str] = None
    alias: str = "champion"

    def __post_init__(self) -> None:
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, (int, float)) or self.timeout_s <= 0:
            raise ConfigError(f"`timeout_s` must be a positive number of seconds, but is {self.timeout_s!r}", field="timeout_s")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigError(f"`max_retries` must be an int >= 0, but is {self.max_retries!r}", field="max_retries")
        for name in ("experiment", "registered_model_name", "alias"):
            if getattr(self, name) is not None and not getattr(self, name).strip():
                raise ConfigError(f"`{name}` must be a name, but is empty; fix: name it, or leave it out for the "
                                  "default", field=name)

    @property
    def active(self) -> bool:
        return bool(self.enabled and self.uri)
