"""Training objectives as plug-ins: one module per objective, behind the registry `OBJECTIVES`.

An objective decides what is trained on what, and everything downstream that depends on it:

- its training part (`Training`: the model, the batches of an epoch, the loss of a step, the
  validation value, the figures and the summary's details), driven by the one training loop
  of `components.train` (`loop.py`);
- its scorer for evaluate (`Scorer`: the test metrics, a closed-form reference, which baselines
  compare);
- its serving export for push (the SavedModel's ``log_prob`` and ``sample``);
- the lines the CLI prints about a run (`Objective.describe`, `Objective.report`).

The registry maps each name to its declaration module, imported on first use: this module and the
declarations import neither TensorFlow nor MLflow at import time (the configuration is checked, and
the CLI says what it will run, before TensorFlow loads). An objective is two modules: the
declaration (a subclass of `Objective` as ``OBJECTIVE``: names, configuration checks, the CLI's
lines), read by the configuration check, and its runtime (``runtime_module``: the training part,
the scorer and the export, importing TensorFlow at its top), which `Objective.runtime` imports
when training, evaluate or push first asks for it. Adding an objective is those two modules and
one line in `OBJECTIVES`:

    # components/objectives/mine.py
    class Mine(Objective):
        name, metric, data_components = "mine", "elbo", ("ingest",)
        runtime_module = "tfflows.components.objectives.mine_runtime"
        def report(self, evaluation): ...

    OBJECTIVE = Mine()

    # components/objectives/mine_runtime.py
    def training(config, examples_uri, transform_graph_uri): ...
    def scorer(summary, examples_uri, transform_graph_uri, config): ...
    def export(model, summary, transform_graph_uri, metadata, export_dir, *, importance_samples, rows,
               calibration): ...

Shared pieces: `components.objectives.data` (seeds and tf.data input of the training parts),
`components.objectives.scoring` (scoring helpers of the scorers).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, ClassVar, Dict, List, Optional, Protocol, Sequence, Tuple

if TYPE_CHECKING:
    from tfflows.components.evaluate.config import EvaluateConfig
    from tfflows.components.summary import ModelSummary
    from tfflows.components.train.config import TrainConfig

__all__ = ["OBJECTIVES", "Objective", "Scorer", "SummaryDetails", "Training", "density_notation", "get_objective"]

# name -> module defining ``OBJECTIVE`` (imported by `get_objective`).
OBJECTIVES: Dict[str, str] = {
    "max_likelihood": "tfflows.components.objectives.max_likelihood",
    "reverse_kl": "tfflows.components.objectives.reverse_kl",
    "vae": "tfflows.components.objectives.vae",
}


class SummaryDetails:
    """Base of an objective's entries in the model summary (a dataclass, inlined in ``summary.json``)."""

    __dataclass_fields__: ClassVar[Dict[str, Any]]  # subclasses are dataclasses (for `dataclasses.asdict`)

    def metrics(self) -> Dict[str, float]:
        """Final metrics logged to the training's MLflow run beside the best and final values."""
        return {}


class Training(Protocol):
    """The part of an objective the training loop drives (one instance per run).

    ``metric`` names the value of `step_values` and `validate` (higher is better); ``event_dim``,
    ``fingerprint`` (identifies the data or target: checkpoints of another one are refused),
    ``feature_names`` (the modelled numeric columns by name; None: unnamed, or no data),
    ``context_names`` (the columns a conditional model is conditioned on; None: none),
    ``context_categorical_names`` (those of them that are categorical; None: none),
    ``categorical_names`` (the categorical columns a mixed density models; None: none) and
    ``params`` (logged to MLflow) describe what is fitted.
    """

    metric: str
    event_dim: int
    fingerprint: str
    feature_names: Optional[List[str]]
    context_names: Optional[List[str]]
    context_categorical_names: Optional[List[str]]
    categorical_names: Optional[List[str]]
    params: Dict[str, Any]

    def build_model(self) -> Any:
        """The model to train (a `models.FlowModel` or a `models.vae.IAFVAE`)."""

    def batches(self, epoch: int) -> Any:
        """The tf.data.Dataset of epoch ``epoch``'s steps, fixed by ``(seed, epoch)`` so a resumed
        run sees what an uninterrupted one does."""

    def initialise(self, model) -> None:
        """Data-dependent initialisation of a fresh model (not called on a resumed one)."""

    def step_values(self, model, batch) -> Tuple[Any, Any]:
        """``(loss to minimise, the batch's value of the metric)``."""

    def validate(self, model) -> float:
        """The validation value of the metric."""

    def finish(self, model) -> None:
        """After the best weights are restored (e.g. batch-norm statistics of the train split)."""

    def figures(self, model) -> Dict[str, Any]:
        """Matplotlib figures for MLflow, by file name (logged under ``plots/``)."""

    def details(self, model) -> Optional[SummaryDetails]:
        """The objective's entries of the model summary."""


class Scorer(Protocol):
    """How evaluate scores models of one objective on fixed points (same for model and baseline).

    ``headline`` is the metric compared, ``unit`` its name in the reason, ``where`` what was scored
    (e.g. "test split"), ``split`` the scored split (None: no data), ``event_dim`` and
    ``num_points`` the size of what was scored.
    """

    headline: str
    unit: str
    where: str
    split: Optional[str]
    event_dim: int
    num_points: int

    def score(self, model_uri: str, what: str) -> Tuple[Dict[str, Any], Optional[str]]:
        """``(metrics, problem)``: problem is None or why the model is not finite."""

    def reference(self) -> Tuple[Dict[str, Any], str]:
        """``(metrics, name)`` of the closed-form reference the model must beat."""

    def incomparable(self, summary: "ModelSummary") -> Optional[str]:
        """Why a baseline with this summary cannot be compared (None: it can)."""

    def extra(self) -> Dict[str, Any]:
        """Entries of ``evaluation.json`` that say how the points were drawn."""

    def calibration(self, model_uri: str) -> Optional[Dict[str, Any]]:
        """`scoring.held_out_quantiles` of the per-example scores `score` gave ``model_uri`` (on
        the same scale as the served ``log_prob``), or None: no held-out rows, or not finite. It
        travels with the pushed model (its percentiles and ``q`` thresholds)."""


class Objective:
    """A training objective. Subclasses set the class attributes and implement the methods that
    raise here.

    Attributes:
      name: the `TrainConfig.objective` string.
      metric: the training metric ("log_likelihood" or "elbo").
      data_components: the upstream components (and configuration sections) it trains on, in
        pipeline order, e.g. ``("ingest", "transform")``; empty for none.
      multi_replica: its batches can be split across replicas (several GPUs or workers).
      conditional: it fits p(x | context) when the data has context columns
        (`IngestConfig.context_columns`); the others are refused for such data before the run.
      details: the `SummaryDetails` dataclass of its summary entries, or None.
      owned_fields: `TrainConfig` fields only this objective reads (another objective refuses
        them when set).
      min_num_layers: the smallest `TrainConfig.num_layers` it trains.
      default_steps_per_epoch: steps of an epoch when `max_steps_per_epoch` is unset (None: one
        pass over the train split).
      flow_defaults: `build_flow` options it changes from the kind's defaults (the config's
        explicit fields and ``flow_options`` still win).
    """

    name: str = ""
    metric: str = ""
    data_components: Tuple[str, ...] = ()
    multi_replica: bool = False
    conditional: bool = False
    details: Optional[type] = None
    owned_fields: Tuple[str, ...] = ()
    min_num_layers: int = 1
    default_steps_per_epoch: Optional[int] = None
    flow_defaults: Dict[str, Any] = {}
    runtime_module: str = ""

    def runtime(self) -> Any:
        """The module ``runtime_module``: the objective's TensorFlow side (`training`, `scorer`,
        `export`), imported on first use like the registry's modules (`get_objective`), so that the
        declarations load without TensorFlow."""
        if not self.runtime_module:
            raise NotImplementedError(f"objective {self.name!r} names no runtime module")
        return importlib.import_module(self.runtime_module)

    def check_config(self, config: "TrainConfig") -> None:
        """Raises ValueError (field and fix) for a `TrainConfig` this objective cannot train; runs
        before TensorFlow is imported."""

    def model_kind(self, config: "TrainConfig") -> str:
        """The summary's ``kind``: the flow kind by default."""
        return config.kind

    def describe(self, config: "TrainConfig", dataset: str) -> str:
        """What a run trains, for the CLI's first line (e.g. "moons -> maf flow")."""
        return f"{dataset} -> {config.kind} flow"

    def data_fingerprint(self, config: "TrainConfig") -> Optional[str]:
        """The fingerprint of what is fitted when the configuration alone fixes it (a target's), else
        None: the ingested data's (``DatasetMetadata.fingerprint``, which the train component reads;
        checkpoint folders are named after it)."""
        return None

    def training(self, config: "TrainConfig", examples_uri: Optional[str],
                 transform_graph_uri: Optional[str]) -> Training:
        return self.runtime().training(config, examples_uri, transform_graph_uri)

    def scorer(self, summary: "ModelSummary", examples_uri: Optional[str], transform_graph_uri: Optional[str],
               config: "EvaluateConfig") -> Scorer:
        return self.runtime().scorer(summary, examples_uri, transform_graph_uri, config)

    def export(self, model, summary: "ModelSummary", transform_graph_uri: Optional[str], metadata,
               export_dir: str, *, importance_samples: int, rows, calibration: Optional[Dict[str, Any]]) -> str:
        """Writes the serving SavedModel (`components.push.export.save_serving_model`, which adds the
        ``score`` signatures when ``calibration``, the evaluation's held-out quantiles, is given) and
        returns ``export_dir``."""
        return self.runtime().export(model, summary, transform_graph_uri, metadata, export_dir,
                                     importance_samples=importance_samples, rows=rows, calibration=calibration)

    def report(self, evaluation: Dict[str, Any]) -> List[str]:
        """The lines the CLI prints about the evaluation's metrics (none when they are missing)."""
        raise NotImplementedError


def density_notation(features: Optional[Sequence[str]], context: Optional[Sequence[str]] = None,
                     categorical: Optional[Sequence[str]] = None) -> str:
    """What a model of these columns is a density of, in the usual notation, for one-line messages:
    ``p(temp, vibration | machine, load)``; with modelled categorical columns the chain rule's two
    factors, ``P(merchant | load) p(amount, hour | merchant, load)`` (a probability of the categories
    times a density of the numeric columns given them). Feature names that are not known (a file
    without a header) read ``x``; more than four names of one role read ``first, second, ..., last``."""
    def names(columns: Sequence[str]) -> str:
        columns = list(columns)
        return ", ".join(columns if len(columns) <= 4 else columns[:2] + ["...", columns[-1]])

    def given(of: str, on: Sequence[str]) -> str:
        return f"{of} | {names(on)}" if on else of

    x, context = names(features) if features else "x", list(context or ())
    if not categorical:
        return f"p({given(x, context)})"
    return f"P({given(names(categorical), context)}) p({given(x, list(categorical) + context)})"


def get_objective(name: str) -> Objective:
    """The registered objective ``name``."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; fix: use one of {', '.join(OBJECTIVES)}")
    return importlib.import_module(OBJECTIVES[name]).OBJECTIVE
