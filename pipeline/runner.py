"""Runners: the local one (LocalDagRunner, SQLite ML Metadata) and the cluster compiler
(Kubeflow Pipelines / Vertex AI pipeline spec). They choose paths and call `create_pipeline`.

Past the CLI's import boundary (`pipeline/cli.py`): this module loads TFX (and through the
pipeline TensorFlow and Beam) at import; the checks that come first are `pipeline.preflight`'s."""

from __future__ import annotations

import dataclasses
import os
import time
from importlib.metadata import version

from ml_metadata.metadata_store import metadata_store
from tfx.dsl.io import fileio
from tfx.orchestration import metadata
from tfx.orchestration.local.local_dag_runner import LocalDagRunner

from tfflows.components import artifacts
from tfflows.components.errors import DataError
from tfflows.components.objectives import get_objective
from tfflows.components.summary import ModelSummary
from tfflows.pipeline.config import RunConfig, tracking_uri
from tfflows.pipeline.pipeline import create_pipeline
from tfflows.pipeline.preflight import STEP_NAMES, cluster_pipeline_root, check_cluster
from tfflows.pipeline.steps import run_steps

__all__ = ["tracking_uri", "run_local", "compile_for_cluster", "RunResult"]


@dataclasses.dataclass
class RunResult:
    """What a run did: its steps (ran or reused), and the evaluation, push and training summary of
    the model this run evaluated and pushed, cached or not."""

    evaluation: dict
    pushed: dict
    training: ModelSummary | None
    tracking_uri: str
    steps: list = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.evaluation) and (self.training is None or self.training.status == "ok")

    def _step(self, name: str):
        return next((step for step in self.steps if step.name == name), None)

    def report(self) -> str:
        lines = [step.line() for step in self.steps]
        if drift := self.evaluation.get("drift"):
            lines.append(drift["line"])
        if self.evaluation:  # the objective's lines about its metrics
            lines += get_objective(self.evaluation.get("objective", "max_likelihood")).report(self.evaluation)
        lines.append(f"blessed: {self.evaluation.get('blessed')} ({self.evaluation.get('reason', '')})")
        push = self._step("push")
        if self.pushed.get("pushed") and push is not None and push.reused:
            lines.append(f"SavedModel: {self.pushed.get('destination')} (pushed by run {push.reused_run}; "
                         "nothing new pushed or registered)")
        elif self.pushed.get("pushed"):
            lines.append(f"SavedModel: {self.pushed.get('destination')}")
        else:
            lines.append(f"SavedModel: not pushed ({self.pushed.get('reason') or 'model not blessed'}); "
                         "earlier versions are untouched")
        run_id = self.training.mlflow_run_id if self.training is not None else None
        lines.append(f"MLflow run: {run_id} in {self.tracking_uri} (tfflows ui to browse)")
        return "\n".join(lines)


def _read_json(folder: str | None, name: str) -> dict:
    """The JSON object in ``folder/name`` (a local folder or a bucket's), or {} when there is none."""
    return (artifacts.read_json(artifacts.join(folder, name)) if folder else None) or {}


def _read_summary(model_uri: str | None) -> ModelSummary | None:
    return ModelSummary.read(model_uri) if model_uri else None


def run_local(config: RunConfig) -> RunResult:
    """Runs the pipeline with TFX's LocalDagRunner and SQLite ML Metadata under `config.output`.

    A first run into a fresh output that fails on its input (a `DataError`) leaves no
    `metadata.sqlite` or `pipeline_root/` behind: nothing of it is worth caching or resuming."""
    os.makedirs(config.local_dir, exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(config.metadata_path)), exist_ok=True)
    connection = metadata.sqlite_metadata_connection_config(os.path.abspath(config.metadata_path))
    uri = tracking_uri(config)
    pipeline_root = config.output_path("pipeline_root")
    pipeline = create_pipeline(config, pipeline_root, uri, connection)
    fresh = not os.path.exists(config.metadata_path) and not fileio.exists(pipeline_root)
    started_ms = int(time.time() * 1000)
    try:
        LocalDagRunner().run(pipeline)
    except Exception as error:
        # TFX may raise its own error while cleaning up after the component's (fake-gcs-server keeps
        # no `dir/` placeholder objects, so TFX's removal of an output folder there is a NotFoundError
        # whose context is the DataError): the DataError anywhere in the chain counts.
        if fresh and _caused_by(error, DataError):
            if fileio.exists(pipeline_root):
                fileio.rmtree(pipeline_root)
            if os.path.exists(config.metadata_path):
                os.remove(config.metadata_path)
        raise
    steps = run_steps(metadata_store.MetadataStore(connection), STEP_NAMES, started_ms)
    outputs = {step.name: step.outputs for step in steps}
    return RunResult(
        evaluation=_read_json(outputs.get("evaluate", {}).get("evaluation"), "evaluation.json"),
        pushed=_read_json(outputs.get("push", {}).get("pushed_model"), "push_result.json"),
        training=_read_summary(outputs.get("train", {}).get("model")),
        tracking_uri=uri, steps=steps,
    )


def _caused_by(error: BaseException, kind: type) -> bool:
    """Whether ``error`` or an exception in its cause/context chain is a ``kind``."""
    seen: set = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, kind):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def upload_log(config: RunConfig, log_path: str | None) -> str | None:
    """Copies the run's log (written locally: a bucket has no appendable files) to the bucket's
    ``logs/`` when the output is one; returns where, or None (a local output, no log, or the copy
    failed: the local log stays and the run's outcome is not changed by it)."""
    if not config.on_bucket or not log_path:
        return None
    target = config.output_path("logs", os.path.basename(log_path))
    try:
        artifacts.upload_file(log_path, target)
    except Exception as error:  # noqa: BLE001 - the run itself is done; say so in the log
        print(f"warning: the log was not copied to {target}: {error}", flush=True)
        return None
    return target


def compile_for_cluster(config: RunConfig, target: str, out: str | None) -> str:
    """Writes the pipeline spec JSON that Kubeflow Pipelines v2 / Vertex AI Pipelines run, with the
    `cluster` section's pipeline root, image and resources (`check_cluster` first)."""
    check_cluster(config)
    # kfp is the optional [kubeflow] extra (TFX's Kubeflow V2 runner needs it too): only compile loads it.
    from kfp.pipeline_spec import pipeline_spec_pb2
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

    out = out or os.path.join(config.local_dir, f"{config.pipeline_name}_{target}.json")  # not ./gs:/...
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    cluster = config.cluster
    # Tracking off: no store at all (the run's default, `<output>/mlflow.db`, is this machine's).
    uri = tracking_uri(config) if config.tracking.enabled else ""
    pipeline = create_pipeline(config, cluster_pipeline_root(config), uri, local=False)
    if cluster.cpu or cluster.memory_gb:
        resources = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec(
            cpu_limit=cluster.cpu or 0, memory_limit=cluster.memory_gb or 0)
        for component in pipeline.components:
            component.with_platform_config(resources)
    # Default: the image infra/k8s/kustomization.yaml deploys (tfflows:<package version>, tested equal).
    image = cluster.image or f"tfflows:{version('tfflows')}"
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=os.path.dirname(os.path.abspath(out)), output_filename=os.path.basename(out))
    runner.run(pipeline, write_out=True)
    return out
