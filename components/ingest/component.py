"""Thin TFX wrapper of `run_ingest`: a Beam component with one Examples output.

``IngestExamples(config)`` builds the component; Beam arguments come from the pipeline's
``beam_pipeline_args`` (or ``component.with_beam_pipeline_args([...])``).
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from tfflows.components.beam_executor import BeamExecutor
from tfflows.components.config import IngestConfig
from tfflows.components.ingest.executor import SPLITS, run_ingest
from tfflows.components.ingest.runner import executor_beam_args
from tfflows.components.inputs import InputSnapshot

__all__ = ["IngestExamples", "IngestExamplesComponent", "IngestExamplesSpec", "Executor"]


class IngestExamplesSpec(ComponentSpec):
    """Parameters: ``config`` (an `IngestConfig` as JSON) and ``inputs`` (the `InputSnapshot` as
    JSON: files, content digest, spans; part of the cache key, so changed data re-runs ingest).
    Output: ``examples``."""

    PARAMETERS = {"config": ExecutionParameter(type=str),
                  "inputs": ExecutionParameter(type=str, optional=True)}
    INPUTS: Dict[str, ChannelParameter] = {}
    OUTPUTS = {"examples": ChannelParameter(type=standard_artifacts.Examples)}


class Executor(BeamExecutor):
    """Runs `run_ingest` into the Examples artifact; records its split names, span(s), version,
    the input's content digest and the columns' roles (features, context) on the artifact (ML
    Metadata)."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
        config = IngestConfig.from_json(exec_properties["config"])
        snapshot = exec_properties.get("inputs")
        examples = artifact_utils.get_single_instance(output_dict["examples"])
        metadata = run_ingest(config, examples.uri, executor_beam_args(self._beam_pipeline_args),
                              InputSnapshot.from_json(snapshot) if snapshot else None)
        examples.split_names = artifact_utils.encode_split_names(list(SPLITS))
        inputs = metadata.inputs or {}
        examples.span = (inputs.get("spans") or [0])[-1]
        examples.version = inputs.get("version") or 0
        examples.set_string_custom_property("payload_format", "FORMAT_TF_EXAMPLE")
        examples.set_string_custom_property("file_format", "tfrecords_gzip")
        examples.set_string_custom_property("dataset_fingerprint", metadata.fingerprint)
        # The columns' roles, so that ML Metadata says what a model of these examples conditions on.
        examples.set_string_custom_property("feature_names", json.dumps(metadata.feature_names)[:60000])
        examples.set_string_custom_property("context_names", json.dumps(metadata.context_names or []))
        examples.set_string_custom_property("categorical_names", json.dumps(metadata.categorical_names or []))
        examples.set_string_custom_property("context_categorical_names",
                                            json.dumps(metadata.context_categorical_names or []))
        if inputs:
            examples.set_string_custom_property("input_digest", inputs["digest"])
            examples.set_string_custom_property("spans", ",".join(str(s) for s in inputs["spans"]))
            examples.set_string_custom_property("input_files", json.dumps([f[0] for f in inputs["files"]])[:60000])


class IngestExamplesComponent(base_beam_component.BaseBeamComponent):
    """Ingests a dataset into ``train``/``eval``/``test`` tf.Examples (feature ``x``)."""

    SPEC_CLASS = IngestExamplesSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(self, config: IngestConfig, inputs: Optional[InputSnapshot] = None):
        super().__init__(spec=IngestExamplesSpec(
            config=config.to_json(), inputs=inputs.to_json() if inputs is not None else None,
            examples=types.Channel(type=standard_artifacts.Examples)))


def IngestExamples(config: IngestConfig, inputs: Optional[InputSnapshot] = None) -> IngestExamplesComponent:  # noqa: N802
    """The ingest component for ``config`` and its input snapshot (`snapshot_inputs`, taken when
    the pipeline is built; None: taken at run time); its output channel is ``.outputs['examples']``."""
    return IngestExamplesComponent(config, inputs)
