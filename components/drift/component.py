"""Thin TFX wrapper of `run_drift`: runs after transform and before train.

Inputs: ``examples`` and ``transform_graph``. Output: ``drift`` (a `DriftReport` artifact holding
``drift.json``, with the delta, its error bar and the span as custom properties). Parameters:
``config`` (`EvaluateConfig` as JSON: the split, ``drift_limit``, ``drift_action``), ``push_base``
(where the champion is pushed) and ``champion`` (its push record as JSON, pinned when the pipeline
is built: `artifacts.pinned_champion`).
"""

from __future__ import annotations

from typing import Any, Dict, List

from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from tfflows.components.artifacts import pinned_champion
from tfflows.components.drift.executor import run_drift
from tfflows.components.evaluate.config import EvaluateConfig

__all__ = ["DriftCheck", "DriftCheckSpec", "DriftReport", "Executor"]


class DriftReport(types.Artifact):
    """The drift of the new data from the champion (``drift.json``)."""

    TYPE_NAME = "tfflows.DriftReport"


class DriftCheckSpec(ComponentSpec):
    """The parameters, inputs and outputs of the module docstring."""

    PARAMETERS = {"config": ExecutionParameter(type=str),
                  "push_base": ExecutionParameter(type=str, optional=True),
                  "champion": ExecutionParameter(type=str, optional=True)}
    INPUTS = {"examples": ChannelParameter(type=standard_artifacts.Examples),
              "transform_graph": ChannelParameter(type=standard_artifacts.TransformGraph)}
    OUTPUTS = {"drift": ChannelParameter(type=DriftReport)}


class Executor(base_executor.BaseExecutor):
    """Runs `run_drift`; records the delta and its error bar on the artifact (ML Metadata)."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
        report = artifact_utils.get_single_instance(output_dict["drift"])
        drift = run_drift(artifact_utils.get_single_uri(input_dict["examples"]),
                          artifact_utils.get_single_uri(input_dict["transform_graph"]),
                          EvaluateConfig.from_json(exec_properties["config"]),
                          pinned_champion(exec_properties.get("champion"), exec_properties.get("push_base")),
                          report.uri)
        if drift is not None:
            report.set_float_custom_property("drift_log_likelihood_delta", drift["delta"])
            report.set_float_custom_property("drift_log_likelihood_delta_2se", drift["delta_2se"])
            report.set_string_custom_property("spans", ",".join(str(s) for s in drift["spans"]))


class DriftCheck(base_component.BaseComponent):
    """Measures the new data's drift from the champion before training; its output channel is
    ``.outputs['drift']``."""

    SPEC_CLASS = DriftCheckSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, examples: types.BaseChannel, transform_graph: types.BaseChannel, config: str,
                 push_base: str = "", champion: str = ""):
        super().__init__(spec=DriftCheckSpec(
            config=config, push_base=push_base, champion=champion, examples=examples,
            transform_graph=transform_graph, drift=types.Channel(type=DriftReport)))
