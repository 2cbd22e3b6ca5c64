"""The model summary: what train reports about a trained model, and what evaluate and push read.

`ModelSummary` is the contract between the components: train writes it as ``summary.json`` in
the model folder (`components.flow_artifact.save_flow`), evaluate and push read it back with
`ModelSummary.read`. Readers use its attributes; the file stays the flat JSON object earlier
versions wrote (``best_val_<metric>``, ``final_val_<metric>``, the objective's own entries at the
top level), and files of earlier versions, which may lack any entry, still load (missing
entries take the defaults below).

The entries that belong to one objective (reverse KL: ``target``, ``importance_diagnostics``;
VAE: ``vae``, ``data_scale``) are that objective's `details` dataclass
(`components.objectives.Objective.details`), so a new objective brings its own without changing
this module. Imports neither TensorFlow nor MLflow.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Optional

from tfflows.components import artifacts
from tfflows.components.objectives import SummaryDetails, get_objective
from tfflows.components.train.config import TrainConfig

__all__ = ["SUMMARY_FILE", "ModelSummary"]

SUMMARY_FILE = "summary.json"
# Attributes written under another key, or not at all.
_RENAMED = ("best_val", "final_val")
_NOT_WRITTEN = ("details", "mlflow_not_logged")


@dataclasses.dataclass
class ModelSummary:
    """What a training run produced (``summary.json`` of a Model artifact).

    Attributes:
      objective: the training objective (`components.objectives.OBJECTIVES`).
      metric: what was maximised and validated: "log_likelihood" (nats per example, model
        space) or "elbo" (nats); keys of `history` and `rollbacks` are ``train_<metric>`` and
        ``val_<metric>``.
      status: "ok", or "diverged" (stopped after ``max_nan_retries`` non-finite rollbacks; the
        best finite epoch was kept).
      kind: the model kind: a flow kind (`models.FLOW_KINDS`) or "vae".
      epochs_run: epochs completed (resumed ones included).
      best_epoch: the epoch whose weights were kept.
      best_val: the best epoch's validation value of `metric` (``best_val_<metric>`` in the file).
      final_val: the validation value of the saved model, after the train-set batch-norm
        statistics (``final_val_<metric>``).
      early_stopped: stopped by ``patience``.
      history: per epoch ``{"epoch", "train_<metric>", "val_<metric>", "learning_rate",
        "examples_per_sec"}``.
      rollbacks: per non-finite epoch ``{"epoch", "train_<metric>", "val_<metric>", "restored"}``.
      nan_retries: rollbacks in a row at the end of the run.
      train_time_s: seconds spent in epochs' steps.
      examples_per_sec: training throughput over the run (None: no step ran).
      num_parameters: trainable parameters.
      replicas: replicas the global batch was split across.
      data_fingerprint: the data's (or the reverse-KL target's) fingerprint.
      event_dim: D, the dimension of the modelled data.
      feature_names: the modelled numeric columns by name, in the data's order (None: unnamed, or
        a summary written before they were recorded).
      context_names: the columns a conditional model is conditioned on (its data's context
        columns, in the network's order), or None: an unconditional model.
      context_categorical_names: those of ``context_names`` that are categorical (one-hot in the
        network's context), or None: none (a summary written before they were recorded too).
      categorical_names: the categorical columns a mixed density models (`models.MixedDensity`:
        its score is log P(categories) + log p(numeric | categories)), or None: numeric columns only.
      train_config: the `TrainConfig` of the run.
      checkpoint_dir: the checkpoint folder (a re-run with it resumes).
      mlflow_run_id: the training's MLflow run (None: not tracked).
      details: the objective's own entries (its `Objective.details` dataclass), or None.
      mlflow_not_logged: what MLflow did not record (returned by `run_train`; not in the file).
    """

    objective: str = "max_likelihood"
    metric: str = "log_likelihood"
    status: str = "ok"
    kind: Optional[str] = None
    epochs_run: Optional[int] = None
    best_epoch: Optional[int] = None
    best_val: Optional[float] = None
    final_val: Optional[float] = None
    early_stopped: bool = False
    history: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    rollbacks: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    nan_retries: int = 0
    train_time_s: Optional[float] = None
    examples_per_sec: Optional[float] = None
    num_parameters: Optional[int] = None
    replicas: int = 1
    data_fingerprint: Optional[str] = None
    event_dim: Optional[int] = None
    feature_names: Optional[List[str]] = None
    context_names: Optional[List[str]] = None
    context_categorical_names: Optional[List[str]] = None
    categorical_names: Optional[List[str]] = None
    train_config: Optional[TrainConfig] = None
    checkpoint_dir: Optional[str] = None
    mlflow_run_id: Optional[str] = None
    details: Optional[SummaryDetails] = None
    mlflow_not_logged: List[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        """The ``summary.json`` object: flat, metric-named best and final values, details inlined."""
        out: Dict[str, Any] = {}
        for field in dataclasses.fields(self):
            name, value = field.name, getattr(self, field.name)
            if name in _NOT_WRITTEN:
                continue
            if name in _RENAMED:
                name = f"{name}_{self.metric}"
            elif name == "train_config" and value is not None:
                value = json.loads(value.to_json())
            out[name] = value
        if self.details is not None:
            out.update(dataclasses.asdict(self.details))
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, raw: Dict[str, Any]) -> "ModelSummary":
        """Parses a ``summary.json`` object, of this version or an earlier one (missing entries
        take their defaults, unknown ones are ignored)."""
        objective = get_objective(raw.get("objective", "max_likelihood"))
        metric = raw.get("metric", objective.metric)
        values: Dict[str, Any] = {"objective": objective.name, "metric": metric}
        for field in dataclasses.fields(cls):
            key = f"{field.name}_{metric}" if field.name in _RENAMED else field.name
            if field.name not in values and field.name not in _NOT_WRITTEN and key in raw:
                values[field.name] = raw[key]
        if values.get("train_config") is not None:
            values["train_config"] = TrainConfig.from_json(json.dumps(values["train_config"]))
        if objective.details is not None:
            names = {f.name for f in dataclasses.fields(objective.details)}
            values["details"] = objective.details(**{k: v for k, v in raw.items() if k in names})
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "ModelSummary":
        return cls.from_dict(json.loads(text))

    @classmethod
    def read(cls, model_uri: str) -> "ModelSummary":
        """The summary in the model folder ``model_uri`` (local or object store); a folder without
        one (a model saved without a summary) reads as the defaults: a max-likelihood model of
        unknown size, not tracked."""
        raw = artifacts.read_json(artifacts.join(model_uri, SUMMARY_FILE))
        return cls.from_dict(raw or {})
