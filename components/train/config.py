"""Configuration of the train component: `TrainConfig` (the optimisation) and `TrackingConfig`
(where the MLflow run goes). Both are frozen, JSON-friendly dataclasses that round-trip through
``to_json`` / ``from_json`` (how the TFX wrapper passes them as execution properties)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from components.config import JsonConfig

__all__ = ["TrainConfig", "TrackingConfig", "LR_SCHEDULES"]

LR_SCHEDULES = ("constant", "cosine", "exponential")


@dataclass(frozen=True)
class TrainConfig(JsonConfig):
    """How the flow is built and trained (component `components/train`).

    Attributes:
      kind: the flow kind, one of `models.FLOW_KINDS` ("made", "made_mog", "maf", "iaf",
        "realnvp", "haf").
      num_layers: number of flow layers K (`models.FlowConfig.num_layers`).
      hidden_units: hidden widths of each MADE / conditioner, e.g. ``(512,)``.
      batch_norm: batch-norm bijectors between layers (None: the flow kind's default).
      num_components: mixture components per conditional for "made_mog" / MAF MoG (None:
        the kind's default).
      l2: weight of the L2 penalty on all kernels (1e-6 in the MAF paper).
      flow_options: any further `models.FlowConfig` fields (e.g. ``{"order": "random",
        "activation": "tanh"}``); the explicit fields above win over keys repeated here.
      epochs: maximum number of passes over the train split.
      batch_size: examples per step (100 in the papers).
      learning_rate: Adam's base learning rate (1e-4 in the papers).
      lr_schedule: "constant", "cosine" (cosine decay from ``learning_rate`` to
        ``learning_rate * lr_min_fraction`` over ``epochs``) or "exponential" (multiplied by
        ``lr_decay_rate`` after every epoch). The learning rate is set once per epoch.
      lr_decay_rate: per-epoch factor of the "exponential" schedule.
      lr_min_fraction: final fraction of the base learning rate of the "cosine" schedule.
      patience: early stopping: stop after this many epochs without a better validation
        log-likelihood (30 in the papers) and keep the best epoch's weights; None disables
        early stopping (the best epoch's weights are still kept).
      max_steps_per_epoch: cap on the steps of one epoch (None: the whole train split).
      eval_batch_size: batch size of validation passes and batch-norm statistics.
      shuffle_buffer: shuffle buffer of the train split (None: the whole split, exact shuffle
        for splits up to that size).
      seed: seeds weight initialisation, the per-epoch data order and the per-epoch
        dequantisation noise (epoch e uses seeds derived from (seed, e), so a resumed run sees
        exactly the data an uninterrupted run would).
      mixed_precision: reserved; True is refused (a flow's log-determinant sums need float32).
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
    hidden_units: tuple = (512,)
    batch_norm: Optional[bool] = None
    num_components: Optional[int] = None
    l2: float = 1e-6
    flow_options: Dict[str, Any] = field(default_factory=dict)
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
    resume: bool = True
    max_nan_retries: int = 3
    log_every_steps: int = 100
    num_plot_samples: int = 64

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_units", tuple(int(h) for h in self.hidden_units))
        object.__setattr__(self, "flow_options", dict(self.flow_options or {}))
        for name in ("epochs", "batch_size", "eval_batch_size", "log_every_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an int >= 1, but is {value!r}")
        for name in ("patience", "max_steps_per_epoch", "shuffle_buffer"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"`{name}` must be an int >= 1 or None, but is {value!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"`learning_rate` must be > 0, but is {self.learning_rate!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"`lr_schedule` must be one of {LR_SCHEDULES}, but is {self.lr_schedule!r}")
        if not 0 < self.lr_decay_rate <= 1:
            raise ValueError(f"`lr_decay_rate` must be in (0, 1], but is {self.lr_decay_rate!r}")
        if not 0 <= self.lr_min_fraction <= 1:
            raise ValueError(f"`lr_min_fraction` must be in [0, 1], but is {self.lr_min_fraction!r}")
        if self.max_nan_retries < 0:
            raise ValueError(f"`max_nan_retries` must be >= 0, but is {self.max_nan_retries!r}")
        if self.mixed_precision:
            raise ValueError("`mixed_precision` must be False, but is True: flows' log-determinants "
                             "lose too much in float16; train in float32.")
        from models.flows import FLOW_KINDS, FlowConfig

        if self.kind not in FLOW_KINDS:
            raise ValueError(f"`kind` must be one of {FLOW_KINDS}, but is {self.kind!r}")
        unknown = set(self.flow_options) - {f.name for f in dataclasses.fields(FlowConfig)}
        if unknown:
            raise ValueError(f"`flow_options` has unknown option(s) {sorted(unknown)}; valid ones are the fields "
                             "of models.FlowConfig")
        clash = {"kind", "event_dim"} & set(self.flow_options)
        if clash:
            raise ValueError(f"`flow_options` must not hold {sorted(clash)}: the kind is `kind` and "
                             "event_dim comes from the data")

    def flow_kwargs(self) -> Dict[str, Any]:
        """Keyword options for `models.build_flow(kind, event_dim, **options)`."""
        options = dict(self.flow_options)
        options.update(num_layers=self.num_layers, hidden_units=list(self.hidden_units),
                       l2=self.l2, seed=self.seed)
        if self.batch_norm is not None:
            options["batch_norm"] = self.batch_norm
        if self.num_components is not None:
            options["num_components"] = self.num_components
        return options

    def learning_rate_at(self, epoch: int) -> float:
        """The scheduled learning rate of 1-based ``epoch`` (before any divergence halving)."""
        import math

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
    """Where and whether the training is recorded in MLflow.

    Attributes:
      uri: MLflow tracking URI: ``sqlite:///<path>/mlflow.db`` for a local store or
        ``http(s)://host:port`` for a tracking server. None disables tracking.
      experiment: experiment name (created when missing).
      run_name: name of the MLflow run (None: MLflow picks one).
      enabled: False turns tracking off whatever ``uri`` says.
      artifact_location: artifact root of a newly created experiment (None: for a
        ``sqlite:///`` store, ``mlartifacts`` beside the database file; for a server, the
        server's default).
      timeout_s: HTTP timeout of each request to a tracking server; an unreachable server is
        detected by one health probe of this timeout and then skipped (training goes on).
    """

    uri: Optional[str] = None
    experiment: str = "tfflows"
    run_name: Optional[str] = None
    enabled: bool = True
    artifact_location: Optional[str] = None
    timeout_s: float = 5.0

    @property
    def active(self) -> bool:
        return bool(self.enabled and self.uri)

