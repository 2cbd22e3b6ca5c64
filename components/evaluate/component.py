"""Thin TFX wrapper of `run_evaluate` (ComponentSpec + Executor, as every tfflows component).

Inputs: ``model`` (Model), ``examples`` (Examples) and ``transform_graph`` (TransformGraph)
(both absent for a flow fitted to a target by reverse KL), optional ``baseline_model`` (Model,
e.g. from a latest-blessed-model resolver), optional ``drift`` (the `DriftReport` measured before
training, logged with the metrics). Outputs: ``evaluation`` (ModelEvaluation, holding
``evaluation.json``) and ``blessing`` (ModelBlessing with the ``BLESSED``/``NOT_BLESSED`` file
and custom property ``blessed`` 1/0, as the stock Evaluator writes it). Parameters: ``config``
(`EvaluateConfig` as JSON), ``baseline_push_base`` and ``champion`` (when no baseline artifact is
given, the baseline is the champion pushed under that push base: ``champion``, its push record as
JSON pinned when the pipeline is built, `artifacts.pinned_champion`) and ``tracking_config``
(`TrackingConfig` as JSON: the metrics go to the training's MLflow run).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from tfflows.components.artifacts import pinned_champion, read_drift
from tfflows.components.drift.component import DriftReport
from tfflows.components.evaluate.config import EvaluateConfig
from tfflows.components.evaluate.executor import run_evaluate
from tfflows.components.train.config import TrackingConfig

__all__ = ["EvaluateFlow", "EvaluateFlowSpec", "Executor"]


class EvaluateFlowSpec(ComponentSpec):
    """The parameters, inputs and outputs of the module docstring."""

    PARAMETERS = {"config": ExecutionParameter(type=str),
                  "baseline_push_base": ExecutionParameter(type=str, optional=True),
                  "champion": ExecutionParameter(type=str, optional=True),
                  "tracking_config": ExecutionParameter(type=str, optional=True)}
    INPUTS = {"model": ChannelParameter(type=standard_artifacts.Model),
              "examples": ChannelParameter(type=standard_artifacts.Examples, optional=True),
              "transform_graph": ChannelParameter(type=standard_artifacts.TransformGraph, optional=True),
              "baseline_model": ChannelParameter(type=standard_artifacts.Model, optional=True),
              "drift": ChannelParameter(type=DriftReport, optional=True)}
    OUTPUTS = {"evaluation": ChannelParameter(type=standard_artifacts.ModelEvaluation),
               "blessing": ChannelParameter(type=standard_artifacts.ModelBlessing)}


class Executor(base_executor.BaseExecutor):
    """Runs `run_evaluate`; records the blessing and the headline metrics on the artifacts."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
        uris = {name: artifact_utils.get_single_uri(artifacts) for name, artifacts in input_dict.items() if artifacts}
        model_uri, baseline_uri = uris["model"], uris.get("baseline_model")
        evaluation = artifact_utils.get_single_instance(output_dict["evaluation"])
        blessing = artifact_utils.get_single_instance(output_dict["blessing"])
        pushed = (pinned_champion(exec_properties.get("champion"), exec_properties.get("baseline_push_base"))
                  if baseline_uri is None else None)
        if pushed is not None:  # the champion, with its own preprocessing and recorded test metrics
            baseline_uri = pushed.get("model_uri")
        result = run_evaluate(uris.get("examples"), uris.get("transform_graph"), model_uri,
                              EvaluateConfig.from_json(exec_properties["config"]), evaluation.uri,
                              baseline_model_uri=baseline_uri, blessing_uri=blessing.uri,
                              tracking=TrackingConfig.from_json(exec_properties.get("tracking_config") or "{}"),
                              baseline_transform_graph_uri=(pushed or {}).get("transform_graph_uri"),
                              drift=read_drift(uris.get("drift")), baseline_version=(pushed or {}).get("version"))
        blessing.set_int_custom_property("blessed", 1 if result["blessed"] else 0)
        blessing.set_string_custom_property("current_model", model_uri)
        if baseline_uri:
            blessing.set_string_custom_property("baseline_model", baseline_uri)
        blessing.set_string_custom_property("reason", result["reason"][:1000])
        for key in ("data_log_likelihood", "elbo", "ess"):
            if result["metrics"].get(key) is not None:
                evaluation.set_float_custom_property(key, float(result["metrics"][key]))


class EvaluateFlow(base_component.BaseComponent):
    """Scores the model (on the test split, or against its target) and blesses it (or not);
    its output channels are ``.outputs['evaluation']`` and ``.outputs['blessing']``."""

    SPEC_CLASS = EvaluateFlowSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, model: types.BaseChannel, examples: Optional[types.BaseChannel] = None,
                 transform_graph: Optional[types.BaseChannel] = None,
                 baseline_model: Optional[types.BaseChannel] = None, config: str = "{}",
                 baseline_push_base: str = "", tracking_config: str = "{}",
                 drift: Optional[types.BaseChannel] = None, champion: str = ""):
        super().__init__(spec=EvaluateFlowSpec(
            config=config, baseline_push_base=baseline_push_base, champion=champion, tracking_config=tracking_config,
            model=model, examples=examples, transform_graph=transform_graph, baseline_model=baseline_model,
            drift=drift,
            evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing)))
