"""Thin TFX wrapper of `run_train`: Examples + TransformGraph in (none for reverse KL), Model out."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from tfflows.components.ingest import read_metadata
from tfflows.components.objectives import get_objective
from tfflows.components.train.config import TrackingConfig, TrainConfig
from tfflows.components.train.executor import run_train

__all__ = ["TrainFlow", "TrainFlowComponent", "TrainFlowSpec", "Executor"]


class TrainFlowSpec(ComponentSpec):
    """Parameters: ``train_config`` and ``tracking_config`` (JSON of `TrainConfig` and
    `TrackingConfig`), optional ``checkpoint_dir``: a base folder; each training checkpoints into
    ``<checkpoint_dir>/<data fingerprint>``, so a re-run on the same data resumes and a run on
    changed data starts afresh (default: ``checkpoints`` beside the model artifact's folder).
    Inputs ``examples``, ``transform_graph`` (both optional: objective "reverse_kl" fits a
    target and reads no data); output ``model``."""

    PARAMETERS = {"train_config": ExecutionParameter(type=str),
                  "tracking_config": ExecutionParameter(type=str),
                  "checkpoint_dir": ExecutionParameter(type=str, optional=True)}
    INPUTS = {"examples": ChannelParameter(type=standard_artifacts.Examples, optional=True),
              "transform_graph": ChannelParameter(type=standard_artifacts.TransformGraph, optional=True)}
    OUTPUTS = {"model": ChannelParameter(type=standard_artifacts.Model)}


def _data_fingerprint(examples_uri: Optional[str]) -> str:
    """The ingested data's fingerprint (``DatasetMetadata.fingerprint``)."""
    if examples_uri is None:
        raise ValueError("this objective fits ingested data: it needs the Examples artifact's URI")
    return read_metadata(examples_uri).fingerprint


class Executor(base_executor.BaseExecutor):
    """Runs `run_train` and records the objective, status, best validation value of its metric
    and the MLflow run id on the Model artifact."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
        def uri(name):
            artifacts = input_dict.get(name) or []
            return artifact_utils.get_single_instance(artifacts).uri if artifacts else None

        examples_uri, graph_uri = uri("examples"), uri("transform_graph")
        model = artifact_utils.get_single_instance(output_dict["model"])
        config = TrainConfig.from_json(exec_properties["train_config"])
        fingerprint = get_objective(config.objective).data_fingerprint(config) or _data_fingerprint(examples_uri)
        base = exec_properties.get("checkpoint_dir")
        checkpoint_dir = os.path.join(base, fingerprint[:16]) if base else None
        summary = run_train(examples_uri, graph_uri, model.uri, config,
                            TrackingConfig.from_json(exec_properties["tracking_config"]),
                            checkpoint_dir=checkpoint_dir)
        model.set_string_custom_property("status", summary.status)
        model.set_string_custom_property("objective", summary.objective)
        model.set_float_custom_property(f"best_val_{summary.metric}", summary.best_val)
        model.set_string_custom_property("mlflow_run_id", summary.mlflow_run_id or "")


class TrainFlowComponent(base_component.BaseComponent):
    """Trains a normalising flow on a transformed dataset."""

    SPEC_CLASS = TrainFlowSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, examples: Optional[types.BaseChannel], transform_graph: Optional[types.BaseChannel],
                 train_config: TrainConfig, tracking_config: TrackingConfig,
                 checkpoint_dir: Optional[str] = None):
        super().__init__(spec=TrainFlowSpec(
            train_config=train_config.to_json(), tracking_config=tracking_config.to_json(),
            checkpoint_dir=checkpoint_dir, examples=examples, transform_graph=transform_graph,
            model=types.Channel(type=standard_artifacts.Model)))


def TrainFlow(examples: Optional[types.BaseChannel], transform_graph: Optional[types.BaseChannel],  # noqa: N802
              train_config: TrainConfig, tracking_config: Optional[TrackingConfig] = None,
              checkpoint_dir: Optional[str] = None) -> TrainFlowComponent:
    """The train component; its output channel is ``.outputs['model']``."""
    return TrainFlowComponent(examples, transform_graph, train_config,
                              tracking_config or TrackingConfig(enabled=False), checkpoint_dir)
