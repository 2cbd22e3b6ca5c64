"""Thin TFX wrapper of `run_train`: Examples + TransformGraph in, Model out."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.ingest import read_metadata
from components.train.config import TrackingConfig, TrainConfig
from components.train.executor import run_train

__all__ = ["TrainFlow", "TrainFlowComponent", "TrainFlowSpec", "Executor"]


class TrainFlowSpec(ComponentSpec):
    """Parameters: ``train_config`` and ``tracking_config`` (JSON of `TrainConfig` and
    `TrackingConfig`), optional ``checkpoint_dir``: a base folder; each training checkpoints into
    ``<checkpoint_dir>/<data fingerprint>``, so a re-run on the same data resumes and a run on
    changed data starts afresh (default: ``checkpoints`` beside the model artifact's folder).
    Inputs ``examples``, ``transform_graph``; output ``model``."""

    PARAMETERS = {"train_config": ExecutionParameter(type=str),
                  "tracking_config": ExecutionParameter(type=str),
                  "checkpoint_dir": ExecutionParameter(type=str, optional=True)}
    INPUTS = {"examples": ChannelParameter(type=standard_artifacts.Examples),
              "transform_graph": ChannelParameter(type=standard_artifacts.TransformGraph)}
    OUTPUTS = {"model": ChannelParameter(type=standard_artifacts.Model)}


class Executor(base_executor.BaseExecutor):
    """Runs `run_train` and records the status, best validation LL and MLflow run id on the
    Model artifact."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        graph = artifact_utils.get_single_instance(input_dict["transform_graph"])
        model = artifact_utils.get_single_instance(output_dict["model"])
        base = exec_properties.get("checkpoint_dir")
        checkpoint_dir = os.path.join(base, read_metadata(examples.uri).fingerprint[:16]) if base else None
        summary = run_train(examples.uri, graph.uri, model.uri,
                            TrainConfig.from_json(exec_properties["train_config"]),
                            TrackingConfig.from_json(exec_properties["tracking_config"]),
                            checkpoint_dir=checkpoint_dir)
        model.set_string_custom_property("status", summary["status"])
        model.set_float_custom_property("best_val_log_likelihood",
                                        summary["best_val_log_likelihood"])
        model.set_string_custom_property("mlflow_run_id", summary["mlflow_run_id"] or "")


class TrainFlowComponent(base_component.BaseComponent):
    """Trains a normalising flow on a transformed dataset."""

    SPEC_CLASS = TrainFlowSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, examples: types.BaseChannel, transform_graph: types.BaseChannel,
                 train_config: TrainConfig, tracking_config: TrackingConfig,
                 checkpoint_dir: Optional[str] = None):
        super().__init__(spec=TrainFlowSpec(
            train_config=train_config.to_json(), tracking_config=tracking_config.to_json(),
            checkpoint_dir=checkpoint_dir, examples=examples, transform_graph=transform_graph,
            model=types.Channel(type=standard_artifacts.Model)))


def TrainFlow(examples: types.BaseChannel, transform_graph: types.BaseChannel,  # noqa: N802
              train_config: TrainConfig, tracking_config: Optional[TrackingConfig] = None,
              checkpoint_dir: Optional[str] = None) -> TrainFlowComponent:
    """The train component; its output channel is ``.outputs['model']``."""
    return TrainFlowComponent(examples, transform_graph, train_config,
                              tracking_config or TrackingConfig(enabled=False), checkpoint_dir)
