"""Runners: the local one (LocalDagRunner, SQLite ML Metadata) and the cluster compiler
(Kubeflow Pipelines / Vertex AI pipeline spec). They choose paths and call `create_pipeline`."""

from __future__ import annotations

import dataclasses
import json
import os

from tfflows.pipeline.config import RunConfig

__all__ = ["tracking_uri", "run_local", "compile_for_cluster", "RunResult"]


def tracking_uri(config: RunConfig) -> str:
    """The configured MLflow URI, or the run's own sqlite store `<output>/mlflow.db`."""
    return config.tracking.uri or f"sqlite:///{os.path.abspath(os.path.join(config.output, 'mlflow.db'))}"


@dataclasses.dataclass
class RunResult:
    evaluation: dict
    pushed: dict
    training: dict
    tracking_uri: str

    @property
    def ok(self) -> bool:
        return bool(self.evaluation) and self.training.get("status", "ok") == "ok"

    def report(self) -> str:
        metrics = self.evaluation.get("metrics") or {}
        lines = []
        if metrics and self.evaluation.get("objective") == "reverse_kl":
            if metrics.get("elbo") is not None:
                lines.append(f"target {self.evaluation.get('target')}: ELBO {metrics['elbo']:.4f} ± "
                             f"{metrics['elbo_2se']:.4f} nats, ESS/n {metrics['ess']:.3f}, log Z ≈ "
                             f"{metrics['log_z']:.4f}, KL(q||p) ≈ {metrics['kl']:.4f} nats "
                             f"({self.evaluation.get('num_examples')} samples)")
        elif metrics and self.evaluation.get("objective") == "vae":
            if metrics.get("log_likelihood") is not None:
                lines.append(f"test log-likelihood: {metrics['log_likelihood']:.4f} ± {metrics['log_likelihood_2se']:.4f} "
                             f"nats (importance-sampled, K={metrics['importance_samples']}); ELBO "
                             f"{metrics['elbo']:.4f} ± {metrics['elbo_2se']:.4f}")
        elif metrics and metrics.get("data_log_likelihood") is not None:
            lines.append(f"test log-likelihood: {metrics['data_log_likelihood']:.4f} ± "
                         f"{metrics['data_log_likelihood_2se']:.4f} nats (data space, mean ± 2 s.e.); "
                         f"model space {metrics['model_log_likelihood']:.4f} ± "
                         f"{metrics['model_log_likelihood_2se']:.4f}")
            if "bits_per_dim" in metrics:
                lines.append(f"bits/dim: {metrics['bits_per_dim']:.4f} ± {metrics['bits_per_dim_2se']:.4f}")
        lines.append(f"blessed: {self.evaluation.get('blessed')} ({self.evaluation.get('reason', '')})")
        if self.pushed.get("pushed"):
            lines.append(f"SavedModel: {self.pushed.get('destination')}")
        else:
            lines.append("SavedModel: not pushed (model not blessed); earlier versions are untouched")
        lines.append(f"MLflow run: {self.training.get('mlflow_run_id')} in {self.tracking_uri} (tfflows ui to browse)")
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


def run_local(config: RunConfig) -> RunResult:
    """Runs the pipeline with TFX's LocalDagRunner and SQLite ML Metadata under `config.output`."""
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner

    from tfflows.pipeline.pipeline import create_pipeline

    os.makedirs(config.output, exist_ok=True)
    connection = metadata.sqlite_metadata_connection_config(os.path.abspath(config.metadata_path))
    uri = tracking_uri(config)
    pipeline = create_pipeline(config, os.path.abspath(config.pipeline_root), uri, connection)
    LocalDagRunner().run(pipeline)
    store = metadata_store.MetadataStore(connection)
    return RunResult(
        evaluation=_read_json(_latest_artifact_uri(store, "ModelEvaluation"), "evaluation.json"),
        pushed=_read_json(_latest_artifact_uri(store, "PushedModel"), "push_result.json"),
        training=_read_json(_latest_artifact_uri(store, "Model"), "summary.json"),
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
