"""Thin TFX wrapper of `run_evaluate`: a Python function component.

Inputs: ``model`` (Model), ``examples`` (Examples) and ``transform_graph`` (TransformGraph)
(both absent for a flow fitted to a target by reverse KL), optional ``baseline_model`` (Model, e.g. from a latest-blessed-model resolver). Outputs:
``evaluation`` (ModelEvaluation, holding ``evaluation.json``) and ``blessing``
(ModelBlessing with the ``BLESSED``/``NOT_BLESSED`` file and custom property ``blessed`` 1/0,
as the stock Evaluator writes it). Parameters: ``config`` (`EvaluateConfig` as JSON) and
``baseline_push_base`` (when set and no baseline artifact is given, the baseline is the model
currently pushed under that push base) and ``tracking_config`` (`TrackingConfig` as JSON: the
metrics go to the training's MLflow run).
"""


from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types.standard_artifacts import (Examples, Model, ModelBlessing, ModelEvaluation,
                                          TransformGraph)

__all__ = ["EvaluateFlow"]


@component
def EvaluateFlow(  # noqa: N802 (TFX style)
        model: InputArtifact[Model],
        evaluation: OutputArtifact[ModelEvaluation],
        blessing: OutputArtifact[ModelBlessing],
        examples: InputArtifact[Examples] = None,
        transform_graph: InputArtifact[TransformGraph] = None,
        baseline_model: InputArtifact[Model] = None,
        config: Parameter[str] = "{}",
        baseline_push_base: Parameter[str] = "",
        tracking_config: Parameter[str] = "{}") -> None:
    """Scores the model (on the test split, or against its target) and blesses it (or not)."""
    from tfflows.components.evaluate.config import EvaluateConfig
    from tfflows.components.evaluate.executor import run_evaluate

    from tfflows.components.train.config import TrackingConfig

    eval_config = EvaluateConfig.from_json(config)
    baseline_uri = baseline_model.uri if baseline_model is not None else None
    if baseline_uri is None and baseline_push_base:
        from tfflows.components.artifacts import current_pushed_model

        baseline_uri = current_pushed_model(baseline_push_base)
    result = run_evaluate(examples.uri if examples is not None else None,
                          transform_graph.uri if transform_graph is not None else None, model.uri,
                          eval_config, evaluation.uri,
                          baseline_model_uri=baseline_uri, blessing_uri=blessing.uri,
                          tracking=TrackingConfig.from_json(tracking_config))
    blessing.set_int_custom_property("blessed", 1 if result["blessed"] else 0)
    blessing.set_string_custom_property("current_model", model.uri)
    if baseline_uri:
        blessing.set_string_custom_property("baseline_model", baseline_uri)
    blessing.set_string_custom_property("reason", result["reason"][:1000])
    for key in ("data_log_likelihood", "elbo", "ess"):
        if result["metrics"].get(key) is not None:
            evaluation.set_float_custom_property(key, float(result["metrics"][key]))
