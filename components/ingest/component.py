"""Thin TFX wrapper of `run_ingest`: a Beam component with one Examples output.

``IngestExamples(config)`` builds the component; Beam arguments come from the pipeline's
``beam_pipeline_args`` (or ``component.with_beam_pipeline_args([...])``).
"""

from __future__ import annotations

from typing import Any, Dict, List

from tfx import types
from tfx.dsl.components.base import base_beam_component, base_beam_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from tfflows.components.config import IngestConfig
from tfflows.components.ingest.executor import SPLITS, run_ingest

__all__ = ["IngestExamples", "IngestExamplesComponent", "IngestExamplesSpec", "Executor"]


class IngestExamplesSpec(ComponentSpec):
    """Parameters: ``config`` (an `IngestConfig` as JSON). Output: ``examples``."""

    PARAMETERS = {"config": ExecutionParameter(type=str)}
    INPUTS: Dict[str, ChannelParameter] = {}
    OUTPUTS = {"examples": ChannelParameter(type=standard_artifacts.Examples)}


class Executor(base_beam_executor.BaseBeamExecutor):
    """Runs `run_ingest` into the Examples artifact and sets its split names."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
        config = IngestConfig.from_json(exec_properties["config"])
        examples = artifact_utils.get_single_instance(output_dict["examples"])
        metadata = run_ingest(config, examples.uri, self._beam_pipeline_args or None)
        examples.split_names = artifact_utils.encode_split_names(list(SPLITS))
        examples.span = 0
        examples.set_string_custom_property("payload_format", "FORMAT_TF_EXAMPLE")
        examples.set_string_custom_property("file_format", "tfrecords_gzip")
        examples.set_string_custom_property("dataset_fingerprint", metadata.fingerprint)


class IngestExamplesComponent(base_beam_component.BaseBeamComponent):
    """Ingests a dataset into ``train``/``eval``/``test`` tf.Examples (feature ``x``)."""

    SPEC_CLASS = IngestExamplesSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(self, config: IngestConfig):
        super().__init__(spec=IngestExamplesSpec(
            config=config.to_json(),
            examples=types.Channel(type=standard_artifacts.Examples)))


def IngestExamples(config: IngestConfig) -> IngestExamplesComponent:  # noqa: N802 (TFX style)
    """The ingest component for ``config``; its output channel is ``.outputs['examples']``."""
    return IngestExamplesComponent(config)
