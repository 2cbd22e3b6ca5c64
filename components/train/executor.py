"""Executor logic of the train component: `run_train` (what the TFX component calls) and `main`
(one worker of a multi-machine job).

The trainer's units: `trainer` (`Trainer`: one run, set-up and order), `strategy` (devices,
``TF_CONFIG`` workers and the replicated gradient step), `checkpoints` (what they hold, the folder
lock, resuming from the newest readable one), `loop` (the epoch loop: keep an epoch or roll back on
a non-finite one), `run_tracking` (the MLflow run) and `finish` (best weights, the artifact and
its summary). The gradient step itself is `models.training.gradient_step`, the one
`FlowModel.fit` runs.

Several machines: when ``TF_CONFIG`` names more than one task, training runs under
`tf.distribute.MultiWorkerMirroredStrategy`. Run one worker with
``python -m tfflows.components.train.executor`` (`main`; see ``infra/k8s/training/``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from tfflows.components.errors import TrainingDivergedError
from tfflows.components.objectives.data import epoch_seed, make_dataset
from tfflows.components.summary import ModelSummary
from tfflows.components.train.checkpoints import default_checkpoint_dir
from tfflows.components.train.config import TrackingConfig, TrainConfig
from tfflows.components.train.trainer import EpochHook, Trainer

__all__ = ["Trainer", "run_train", "make_dataset", "epoch_seed", "default_checkpoint_dir",
           "TrainingDivergedError"]


def run_train(examples_uri: Optional[str], transform_graph_uri: Optional[str], model_uri: str,
              train_config: TrainConfig, tracking_config: Optional[TrackingConfig] = None,
              checkpoint_dir: Optional[str] = None, *,
              epoch_hook: Optional[EpochHook] = None) -> ModelSummary:
    """Trains a flow (on the transformed train split, or to a target) and writes it with `save_flow`.

    Args:
      examples_uri: an ingested Examples artifact (`components.ingest.run_ingest`); None for
        objective "reverse_kl".
      transform_graph_uri: its TransformGraph artifact (`components.transform.run_transform`);
        None for objective "reverse_kl".
      model_uri: folder of the Model artifact (written by `save_flow`; by the chief only when
        several workers train).
      train_config: the objective, the flow and the optimisation.
      tracking_config: MLflow tracking (None: none).
      checkpoint_dir: checkpoint folder; a re-run with the same folder resumes
        (default `default_checkpoint_dir(model_uri)`).
      epoch_hook: ``hook(epoch, model)`` called after each epoch's gradient steps, before the epoch is
        checked and checkpointed (for tests: poison weights, simulate a crash).

    Returns:
      The `ModelSummary` (also ``summary.json`` in the artifact): status ("ok" or "diverged": it
      stopped after too many non-finite rollbacks and keeps the best finite epoch), the best and
      final validation values of the objective's metric, the history, rollbacks, throughput and
      the objective's details (reverse KL: the target and its importance diagnostics, ESS/n,
      log Z and KL estimates from 10,000 samples; VAE: its arguments and data scale).

    Raises:
      TrainingDivergedError: no epoch ended with a finite model; no artifact is written.
      ValueError: ``checkpoint_dir`` holds checkpoints of a different training.
      DataError: another run holds ``checkpoint_dir``, or none of its checkpoints is readable.
    """
    return Trainer(examples_uri, transform_graph_uri, model_uri, train_config, tracking_config,
                   checkpoint_dir, epoch_hook=epoch_hook).run()


def main(argv: Optional[List[str]] = None) -> int:
    """One training worker (the command of each task of a TFJob / Vertex custom job).

    ``python -m tfflows.components.train.executor --examples DIR --transform-graph DIR --model DIR
    --train-config train.json [--tracking-config tracking.json] [--checkpoint-dir DIR]``: the
    config files hold `TrainConfig` / `TrackingConfig` JSON (their ``to_json``); the folders are
    artifacts of an earlier ``tfflows run`` on storage every worker sees. ``TF_CONFIG`` decides
    the workers; prints the summary's status line.
    """
    parser = argparse.ArgumentParser(prog="python -m tfflows.components.train.executor")
    parser.add_argument("--examples", help="ingested Examples folder (not for reverse_kl)")
    parser.add_argument("--transform-graph", help="TransformGraph folder (not for reverse_kl)")
    parser.add_argument("--model", required=True, help="output folder of the trained model (chief)")
    parser.add_argument("--train-config", required=True, help="TrainConfig JSON file")
    parser.add_argument("--tracking-config", help="TrackingConfig JSON file (default: no MLflow)")
    parser.add_argument("--checkpoint-dir", help="shared checkpoint folder (default: beside --model)")
    args = parser.parse_args(argv)

    def read(path):
        with open(path) as f:
            return f.read()

    tracking = TrackingConfig.from_json(read(args.tracking_config)) if args.tracking_config else None
    summary = run_train(args.examples, args.transform_graph, args.model,
                        TrainConfig.from_json(read(args.train_config)), tracking, args.checkpoint_dir)
    print(f"status {summary.status}: {summary.epochs_run} epochs on {summary.replicas} replica(s), "
          f"best val {summary.metric} {summary.best_val:.4f} (epoch {summary.best_epoch})")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
