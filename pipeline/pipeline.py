"""`create_pipeline`: the tfflows TFX pipeline, independent of where it runs.

ingest -> transform -> drift (the pushed champion scores the new test split, before training) ->
train -> evaluate (against the champion, on the same points) -> push (+ MLflow registry). The
champion (`artifacts.champion_push_info`: TF Serving's ``stable`` version) is resolved when the
pipeline is built and pinned as an execution property of drift, evaluate and push, so a promote,
a rollback or another pipeline's push changes their cache keys. With `train.objective:
reverse_kl` the flow is fitted to a target density, not to data: train -> evaluate -> push, no
ingest or transform; `train.objective: vae` trains a VAE on
the ingested data: ingest -> train -> evaluate -> push, no transform. Runners (`pipeline/runner.py`) only
choose paths and call this.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import tfflows.models.flows  # noqa: F401  (imports TFP with tf-keras before any component does)
from tfx.orchestration import pipeline as tfx_pipeline

from tfflows.components.artifacts import champion_push_info
from tfflows.components.drift.component import DriftCheck
from tfflows.components.evaluate.component import EvaluateFlow
from tfflows.components.objectives import get_objective
from tfflows.components.ingest.component import IngestExamples
from tfflows.components.inputs import snapshot_inputs
from tfflows.components.push.component import PushFlow
from tfflows.components.summary import ModelSummary
from tfflows.components.train.component import TrainFlow
from tfflows.components.transform.component import TransformData
from tfflows.pipeline.config import RunConfig
from tfflows.pipeline.registry import resolved_tracking

__all__ = ["create_pipeline", "resolved_sections"]


def resolved_sections(config: RunConfig, tracking_uri: str):
    """The tracking and push sections with the run-level defaults filled in: one tracking
    configuration (`pipeline.registry.resolved_tracking`) handed to train, evaluate and push; the
    push folder defaults to the run's output (a local folder or a bucket) and the TF Serving model
    name is the pipeline's."""
    push = dataclasses.replace(config.push, push_base=config.push.push_base or config.output_path(),
                               model_name=config.pipeline_name)
    return resolved_tracking(config, tracking_uri), push


def _sections(config: RunConfig) -> tuple:
    """Names of the sections the training depends on: which of ingest and transform run (the
    objective's `data_components`), and train."""
    return get_objective(config.train.objective).data_components + ("train",)


def _checkpoint_dir(config: RunConfig, inputs=None) -> str:
    """Stable across re-runs of the same training on the same data (so a killed run resumes),
    distinct otherwise: new content at the same path (``inputs``' digest) trains afresh."""
    key = "|".join([getattr(config, name).to_json() for name in _sections(config)]
                   + ([inputs.digest] if inputs is not None else []))
    return config.output_path("checkpoints", hashlib.sha256(key.encode()).hexdigest()[:16])


def _pinned_champion(config: RunConfig, push_base: str, checkpoint_dir: str) -> str:
    """The champion (its push record, JSON; ``null``: none yet) drift, evaluate and push are built
    with. A champion trained by this very training (same data and sections: its checkpoint folder
    is this run's) is this pipeline's own earlier push: with the cache on, the run is pinned to the
    champion that push was compared with (its ``baseline``), so an unchanged re-run is reused
    whole instead of comparing the model with itself."""
    champion = champion_push_info(push_base)
    model_uri = (champion or {}).get("model_uri")
    if (model_uri and config.enable_cache
            and os.path.dirname(ModelSummary.read(model_uri).checkpoint_dir or "") == checkpoint_dir):
        champion = champion.get("baseline")
    return json.dumps(champion and {k: v for k, v in champion.items() if k != "baseline"}, sort_keys=True)


def create_pipeline(config: RunConfig, pipeline_root: str, tracking_uri: str, metadata_connection_config=None,
                    local: bool = True):
    """The pipeline (six components; four for a VAE, three for reverse KL). `local=False` (cluster specs,
    compiled once and run many times) leaves checkpoints to the trainer and the champion to each run."""
    tracking, push = resolved_sections(config, tracking_uri)
    data_components, data, inputs = [], {}, None
    if "ingest" in _sections(config):
        # Locally the inputs' content fingerprint (and span) is taken now: part of ingest's cache key.
        inputs = snapshot_inputs(config.ingest) if local else None
        ingest = IngestExamples(config.ingest, inputs)
        data_components, data = [ingest], {"examples": ingest.outputs["examples"]}
    checkpoint_dir = _checkpoint_dir(config, inputs) if local else None
    champion = _pinned_champion(config, push.push_base, checkpoint_dir) if local else ""
    drift = None
    if "transform" in _sections(config):
        transform = TransformData(ingest.outputs["examples"], config.transform)
        data["transform_graph"] = transform.outputs["transform_graph"]
        # Before training: the champion scores the new test split (a limit may stop the run here).
        drift = DriftCheck(ingest.outputs["examples"], data["transform_graph"], config.evaluate.to_json(),
                           push.push_base, champion)
        data_components += [transform, drift]
    train = TrainFlow(data.get("examples"), data.get("transform_graph"), config.train, tracking,
                      checkpoint_dir=checkpoint_dir)
    if drift is not None:
        train.add_upstream_node(drift)
    evaluator = EvaluateFlow(model=train.outputs["model"], config=config.evaluate.to_json(),
                             baseline_push_base=push.push_base, tracking_config=tracking.to_json(),
                             drift=drift.outputs["drift"] if drift is not None else None, champion=champion, **data)
    pusher = PushFlow(model=train.outputs["model"], model_blessing=evaluator.outputs["blessing"],
                      config=push.to_json(), tracking_config=tracking.to_json(), champion=champion, **data)
    return tfx_pipeline.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=pipeline_root,
        components=data_components + [train, evaluator, pusher],
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(config.beam_pipeline_args),
    )
