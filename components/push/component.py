"""Thin TFX wrapper of `run_push` (ComponentSpec + Executor, as every tfflows component).

Inputs: ``model`` (Model), ``model_blessing`` (ModelBlessing), ``transform_graph``
(TransformGraph) and ``examples`` (Examples), the last two absent for a flow fitted to a
target. Output ``pushed_model`` (PushedModel) with the stock Pusher's custom properties
``pushed`` (1/0), ``pushed_destination`` and ``pushed_version``, and ``push_result.json`` in its
folder. Parameters ``config`` (a `PushConfig` as JSON), ``tracking_config`` (a
`TrackingConfig` as JSON: the MLflow model and registry version) and ``champion`` (the champion
evaluate compared with, as JSON: recorded in the push record as its ``baseline``).
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from tfflows.components import artifacts
from tfflows.components.push.config import PushConfig
from tfflows.components.push.executor import already_serving, run_push
from tfflows.components.train.config import TrackingConfig

__all__ = ["PushFlow", "PushFlowSpec", "Executor"]


class PushFlowSpec(ComponentSpec):
    """The parameters, inputs and output of the module docstring."""

    PARAMETERS = {"config": ExecutionParameter(type=str),
                  "tracking_config": ExecutionParameter(type=str, optional=True),
                  "champion": ExecutionParameter(type=str, optional=True)}
    INPUTS = {"model": ChannelParameter(type=standard_artifacts.Model),
              "model_blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
              "transform_graph": ChannelParameter(type=standard_artifacts.TransformGraph, optional=True),
              "examples": ChannelParameter(type=standard_artifacts.Examples, optional=True)}
    OUTPUTS = {"pushed_model": ChannelParameter(type=standard_artifacts.PushedModel)}


class Executor(base_executor.BaseExecutor):
    """Runs `run_push` (not for a trained model a version already serves: `already_serving`); records the push on the
    PushedModel artifact and in ``push_result.json``."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
        uris = {name: artifact_utils.get_single_uri(artifacts) for name, artifacts in input_dict.items() if artifacts}
        pushed_model = artifact_utils.get_single_instance(output_dict["pushed_model"])
        config = PushConfig.from_json(exec_properties["config"])
        result = already_serving(uris["model"], config) or run_push(
            uris["model"], uris.get("transform_graph"), uris.get("examples"), uris["model_blessing"], config,
            tracking=TrackingConfig.from_json(exec_properties.get("tracking_config") or "{}"),
            champion=json.loads(exec_properties.get("champion") or "null"))
        pushed_model.set_int_custom_property("pushed", 1 if result["pushed"] else 0)
        if result["pushed"]:
            pushed_model.set_string_custom_property("pushed_destination", result["destination"])
            pushed_model.set_string_custom_property("pushed_version", str(result["version"]))
            if result["registered"]:
                pushed_model.set_string_custom_property("registered_model_uri",
                                                        result["registered"]["model_uri"])
        # local or a bucket (an output on gs://)
        artifacts.write_json(artifacts.join(pushed_model.uri, "push_result.json"), result)


class PushFlow(base_component.BaseComponent):
    """Pushes the model as the next serving version when it is blessed; its output channel is
    ``.outputs['pushed_model']``."""

    SPEC_CLASS = PushFlowSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, model: types.BaseChannel, model_blessing: types.BaseChannel, config: str,
                 transform_graph: Optional[types.BaseChannel] = None,
                 examples: Optional[types.BaseChannel] = None, tracking_config: str = "{}",
                 champion: str = ""):
        super().__init__(spec=PushFlowSpec(
            config=config, tracking_config=tracking_config, champion=champion, model=model,
            model_blessing=model_blessing, transform_graph=transform_graph, examples=examples,
            pushed_model=types.Channel(type=standard_artifacts.PushedModel)))
