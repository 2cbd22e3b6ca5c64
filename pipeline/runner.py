"""Runners: the local one (LocalDagRunner, SQLite ML Metadata) and the cluster compiler
(Kubeflow Pipelines / Vertex AI pipeline spec). They choose paths and call `create_pipeline`."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil

from tfflows.components.config import FILE_FORMATS
from tfflows.components.errors import DataError
from tfflows.components.objectives import get_objective
from tfflows.components.summary import ModelSummary
from tfflows.pipeline.config import ConfigError, RunConfig

__all__ = ["tracking_uri", "preflight", "run_local", "compile_for_cluster", "RunResult"]


def tracking_uri(config: RunConfig) -> str:
    """The configured MLflow URI, or the run's own sqlite store `<output>/mlflow.db`."""
    return config.tracking.uri or f"sqlite:///{os.path.abspath(os.path.join(config.output, 'mlflow.db'))}"


@dataclasses.dataclass
class RunResult:
    evaluation: dict
    pushed: dict
    training: ModelSummary | None
    tracking_uri: str

    @property
    def ok(self) -> bool:
        return bool(self.evaluation) and (self.training is None or self.training.status == "ok")

    def report(self) -> str:
        lines = []
        if self.evaluation:  # the objective's lines about its metrics
            lines += get_objective(self.evaluation.get("objective", "max_likelihood")).report(self.evaluation)
        lines.append(f"blessed: {self.evaluation.get('blessed')} ({self.evaluation.get('reason', '')})")
        if self.pushed.get("pushed"):
            lines.append(f"SavedModel: {self.pushed.get('destination')}")
        else:
            lines.append("SavedModel: not pushed (model not blessed); earlier versions are untouched")
        run_id = self.training.mlflow_run_id if self.training is not None else None
        lines.append(f"MLflow run: {run_id} in {self.tracking_uri} (tfflows ui to browse)")
        return "\n".join(lines)


def _latest_artifact_uri(store, type_name: str) -> str | None:
    artifacts = store.get_artifacts_by_type(type_name)
    return max(artifacts, key=lambda a: a.id).uri if artifacts else None


def _read_json(folder: str | None, name: str) -> dict:
    path = os.path.join(folder, name) if folder else None
    if not path or not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _read_summary(model_uri: str | None) -> ModelSummary | None:
    return ModelSummary.read(model_uri) if model_uri else None


def _unwritable(folder: str) -> str | None:
    """Why `folder` (or the folder that would hold it) cannot be written, or None."""
    probe = os.path.abspath(folder)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        return f"{probe} is not a folder"
    if os.statvfs(probe).f_flag & os.ST_RDONLY:
        return f"{probe} is on a read-only file system"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


def preflight(config: RunConfig) -> None:
    """What would otherwise fail only inside a component, after ML Metadata and `pipeline_root`
    were created: a missing input file, an output folder that cannot be written. Checked before
    anything is written; object-store URIs (``gs://``, ``s3://``) are left to the components."""
    if "ingest" in get_objective(config.train.objective).data_components:
        ingest = config.ingest
        if ingest.dataset in FILE_FORMATS and not ingest.path:
            raise DataError(ingest.dataset, "ingest.path", "no input file given", "pass --data PATH")
        for name in ("path", "test_path"):
            path = getattr(ingest, name)
            if path and "://" not in path and not glob.glob(path):
                raise DataError(path, f"ingest.{name}", "no such file or folder", "check the path given to --data")
    if "://" not in config.output and (reason := _unwritable(config.output)):
        raise ConfigError(f"output {config.output}: cannot write there ({reason}); fix: choose a writable --output")


def run_local(config: RunConfig) -> RunResult:
    """Runs the pipeline with TFX's LocalDagRunner and SQLite ML Metadata under `config.output`.

    A first run into a fresh output that fails on its input (a `DataError`) leaves no
    `metadata.sqlite` or `pipeline_root/` behind: nothing of it is worth caching or resuming."""
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner

    from tfflows.pipeline.pipeline import create_pipeline

    os.makedirs(config.output, exist_ok=True)
    connection = metadata.sqlite_metadata_connection_config(os.path.abspath(config.metadata_path))
    uri = tracking_uri(config)
    pipeline = create_pipeline(config, os.path.abspath(config.pipeline_root), uri, connection)
    fresh = not os.path.exists(config.metadata_path) and not os.path.exists(config.pipeline_root)
    try:
        LocalDagRunner().run(pipeline)
    except DataError:
        if fresh:
            shutil.rmtree(config.pipeline_root, ignore_errors=True)
            if os.path.exists(config.metadata_path):
                os.remove(config.metadata_path)
        raise
    store = metadata_store.MetadataStore(connection)
    return RunResult(
        evaluation=_read_json(_latest_artifact_uri(store, "ModelEvaluation"), "evaluation.json"),
        pushed=_read_json(_latest_artifact_uri(store, "PushedModel"), "push_result.json"),
        training=_read_summary(_latest_artifact_uri(store, "Model")),
        tracking_uri=uri,
    )


def compile_for_cluster(config: RunConfig, target: str, out: str | None, image: str) -> str:
    """Writes the pipeline spec JSON that Kubeflow Pipelines v2 / Vertex AI Pipelines run."""
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

    from tfflows.pipeline.pipeline import create_pipeline

    out = out or os.path.join(config.output, f"{config.pipeline_name}_{target}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    root = config.pipeline_root if "://" in config.pipeline_root else f"gs://CHANGE-ME/{config.pipeline_name}"
    pipeline = create_pipeline(config, root, tracking_uri(config), local=False)
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(default_image=image),
        output_dir=os.path.dirname(os.path.abspath(out)), output_filename=os.path.basename(out))
    runner.run(pipeline, write_out=True)
    return out
