"""EvaluateFlow + PushFlow under a real LocalDagRunner (SQLite metadata), with a tiny trainer.

(No ``from __future__ import annotations`` here: TFX's @component reads real annotations.)
"""

import os

import pytest

import tfflows.models.flows  # noqa: F401  (TFP before TFX: TFP picks tf-keras only if imported first)
from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact
from tfx.dsl.component.experimental.decorators import component
from tfx.types.standard_artifacts import Examples, Model, TransformGraph

from tfflows.components.config import IngestConfig, TransformConfig
from tfflows.components.evaluate import EvaluateConfig
from tfflows.components.push import PushConfig


@component
def TinyTrain(examples: InputArtifact[Examples],  # noqa: N802 (TFX style)
              transform_graph: InputArtifact[TransformGraph],
              model: OutputArtifact[Model]) -> None:
    """A stand-in for the train component: two epochs of a small MAF."""
    import tensorflow as tf
    import tf_keras

    from tfflows.components.flow_artifact import save_flow
    from tfflows.components.ingest import load_split
    from tfflows.components.transform import load_transform
    from tfflows.models import build_flow

    tf_keras.utils.set_random_seed(0)
    z = load_transform(transform_graph.uri)(tf.constant(load_split(examples.uri, "train")))[0]
    flow = build_flow("maf", int(z.shape[1]), num_layers=2, hidden_units=[16])
    flow.compile(optimizer=tf_keras.optimizers.Adam(1e-2))
    flow.fit(z.numpy(), batch_size=100, epochs=2, verbose=0)
    save_flow(flow, model.uri, {"epochs": 2})


@pytest.mark.slow
def test_local_dag_runner_evaluate_and_push(tmp_path):
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata, pipeline
    from tfx.orchestration.local import local_dag_runner

    from tfflows.components.evaluate.component import EvaluateFlow
    from tfflows.components.ingest.component import IngestExamples
    from tfflows.components.ingest.runner import DEFAULT_BEAM_ARGS
    from tfflows.components.push.component import PushFlow
    from tfflows.components.transform.component import TransformData

    push_base = str(tmp_path / "push")
    ingest = IngestExamples(IngestConfig("moons", num_samples=300))
    transform = TransformData(ingest.outputs["examples"], TransformConfig())
    train = TinyTrain(examples=ingest.outputs["examples"],
                      transform_graph=transform.outputs["transform_graph"])
    evaluate = EvaluateFlow(examples=ingest.outputs["examples"],
                            transform_graph=transform.outputs["transform_graph"],
                            model=train.outputs["model"],
                            config=EvaluateConfig().to_json(), baseline_push_base=push_base)
    push = PushFlow(model=train.outputs["model"],
                    transform_graph=transform.outputs["transform_graph"],
                    examples=ingest.outputs["examples"],
                    model_blessing=evaluate.outputs["blessing"],
                    config=PushConfig(push_base=push_base).to_json())
    db = str(tmp_path / "metadata.db")
    p = pipeline.Pipeline(
        pipeline_name="evaluate_push", pipeline_root=str(tmp_path / "root"),
        components=[ingest, transform, train, evaluate, push],
        metadata_connection_config=metadata.sqlite_metadata_connection_config(db),
        beam_pipeline_args=list(DEFAULT_BEAM_ARGS), enable_cache=False)
    local_dag_runner.LocalDagRunner().run(p)

    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(db))
    [blessing] = store.get_artifacts_by_type("ModelBlessing")
    assert blessing.custom_properties["blessed"].int_value == 1
    assert os.path.exists(os.path.join(blessing.uri, "BLESSED"))
    [evaluation] = store.get_artifacts_by_type("ModelEvaluation")
    assert os.path.exists(os.path.join(evaluation.uri, "evaluation.json"))
    [pushed] = store.get_artifacts_by_type("PushedModel")
    assert pushed.custom_properties["pushed"].int_value == 1
    assert pushed.custom_properties["pushed_version"].string_value == "1"
    destination = pushed.custom_properties["pushed_destination"].string_value
    assert destination == os.path.join(push_base, "serving", "1")
    assert os.path.exists(os.path.join(destination, "saved_model.pb"))
