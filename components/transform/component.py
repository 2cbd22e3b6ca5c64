"""Thin TFX wrapper of `run_transform`: Examples in, TransformGraph out (a Beam component)."""

from __future__ import annotations

from typing import Any, Dict, List

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from tfflows.components.beam_executor import BeamExecutor
from tfflows.components.config import TransformConfig
from tfflows.components.ingest.runner import executor_beam_args
from tfflows.components.transform.executor import run_transform

__all__ = ["TransformData", "TransformDataComponent", "TransformDataSpec", "Executor"]


class TransformDataSpec(ComponentSpec):
    """Parameters: ``config`` (a `TransformConfig` as JSON). Input ``examples``, output
    ``transform_graph``."""

    PARAMETERS = {"config": ExecutionParameter(type=str)}
    INPUTS = {"examples": ChannelParameter(type=standard_artifacts.Examples)}
    OUTPUTS = {"transform_graph": ChannelParameter(type=standard_artifacts.TransformGraph)}


class Executor(BeamExecutor):
    """Runs `run_transform` from the Examples artifact into the TransformGraph artifact."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
        config = TransformConfig.from_json(exec_properties["config"])
        examples = artifact_utils.get_single_instance(input_dict["examples"])
        graph = artifact_utils.get_single_instance(output_dict["transform_graph"])
        resolved = run_transform(examples.uri, config, graph.uri,
                                 executor_beam_args(self._beam_pipeline_args))
        graph.set_string_custom_property("method", resolved["method"])


class TransformDataComponent(base_beam_component.BaseBeamComponent):
    """Fits the preprocessing (logit or standardisation) of an ingested dataset."""

    SPEC_CLASS = TransformDataSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(self, examples: types.BaseChannel, config: TransformConfig):
        super().__init__(spec=TransformDataSpec(
            config=config.to_json(), examples=examples,
            transform_graph=types.Channel(type=standard_artifacts.TransformGraph)))


def TransformData(examples: types.BaseChannel,  # noqa: N802 (TFX style)
                  config: TransformConfig) -> TransformDataComponent:
    """The transform component; its output channel is ``.outputs['transform_graph']``."""
    return TransformDataComponent(examples, config)
