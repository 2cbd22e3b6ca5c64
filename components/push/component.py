"""Thin TFX wrapper of `run_push`: a Python function component.

Inputs: ``model`` (Model), ``model_blessing`` (ModelBlessing), ``transform_graph``
(TransformGraph) and ``examples`` (Examples), the last two absent for a flow fitted to a target. Output ``pushed_model`` (PushedModel) with the stock
Pusher's custom properties ``pushed`` (1/0), ``pushed_destination`` and ``pushed_version``,
and ``push_result.json`` in its folder. Parameters ``config`` (a `PushConfig` as JSON) and
``tracking_config`` (a `TrackingConfig` as JSON: the MLflow model and registry version).
"""


import json
import os

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types.standard_artifacts import (Examples, Model, ModelBlessing, PushedModel,
                                          TransformGraph)

__all__ = ["PushFlow"]


@component
def PushFlow(  # noqa: N802 (TFX style)
        model: InputArtifact[Model],
        model_blessing: InputArtifact[ModelBlessing],
        pushed_model: OutputArtifact[PushedModel],
        config: Parameter[str],
        transform_graph: InputArtifact[TransformGraph] = None,
        examples: InputArtifact[Examples] = None,
        tracking_config: Parameter[str] = "{}") -> None:
    """Pushes the model as the next serving version when it is blessed."""
    from tfflows.components.push.config import PushConfig
    from tfflows.components.push.executor import run_push
    from tfflows.components.train.config import TrackingConfig

    result = run_push(model.uri, transform_graph.uri if transform_graph is not None else None,
                      examples.uri if examples is not None else None, model_blessing.uri,
                      PushConfig.from_json(config), tracking=TrackingConfig.from_json(tracking_config))
    pushed_model.set_int_custom_property("pushed", 1 if result["pushed"] else 0)
    if result["pushed"]:
        pushed_model.set_string_custom_property("pushed_destination", result["destination"])
        pushed_model.set_string_custom_property("pushed_version", str(result["version"]))
        if result["registered"]:
            pushed_model.set_string_custom_property("registered_model_uri",
                                                    result["registered"]["model_uri"])
    os.makedirs(pushed_model.uri, exist_ok=True)
    with open(os.path.join(pushed_model.uri, "push_result.json"), "w") as f:
        json.dump(result, f, indent=2, default=str)
