"""The training run's MLflow record: opened (or resumed) before the first epoch, closed after the
artifact is written. Only the chief tracks; an unreachable server is reported by `Tracker` and
training goes on."""

from __future__ import annotations

import dataclasses
import logging
import math

from tfflows.components import run_info
from tfflows.components.ingest import read_metadata
from tfflows.components.objectives import Training
from tfflows.components.summary import ModelSummary
from tfflows.components.tracking import Tracker
from tfflows.components.train import plots
from tfflows.models import FlowModel

__all__ = ["log_run_end", "open_run"]

logger = logging.getLogger("tfflows.train")


def open_run(trainer) -> Tracker:
    """Opens (or resumes, from the checkpoint's run id) the MLflow run, named and described
    after what runs (`run_info`), with the hyper-parameters and the dataset inputs."""
    config, training = trainer.config, trainer.training
    tracker = Tracker(trainer.tracking_config, run_id=trainer.state.run_id.numpy().decode() or None)
    metadata = None
    if trainer.examples_uri:
        metadata = read_metadata(trainer.examples_uri)
    kind = trainer.objective.model_kind(config)
    fresh = not tracker.run_id
    if tracker.start_run(trainer.tracking_config.run_name or run_info.run_name(kind, metadata, config.target)):
        trainer.state.run_id.assign(tracker.run_id)
    tracker.log_params({"train": dataclasses.asdict(config),
                        "flow": trainer.model.get_config(),
                        "data": training.params,
                        "num_parameters": trainer.num_parameters,
                        "replicas": trainer.replicas})
    tracker.set_tags(run_info.run_tags(metadata, config.target))
    if fresh:
        options = {"num_layers": config.num_layers, "hidden_units": list(config.hidden_units), **config.flow_options}
        tracker.add_to_description(run_info.run_description(kind, config.objective, options, metadata,
                                                            config.target))
    if metadata is not None:  # the splits it is trained, validated and tested on, as the run's dataset inputs
        source, digest = run_info.dataset_source(metadata, trainer.examples_uri)
        tracker.log_datasets(training.params["name"], digest, source, metadata.split_sizes)
    return tracker


def log_run_end(tracker: Tracker, model: FlowModel, summary: ModelSummary, training: Training,
                model_uri: str) -> None:
    """Final metrics, the loss curve, the objective's figures and the model folder to MLflow."""
    if not tracker.config.active:
        return
    metric = summary.metric
    assert summary.epochs_run is not None  # `finish` sets it
    final = {f"best_val_{metric}": summary.best_val, f"final_val_{metric}": summary.final_val,
             "best_epoch": summary.best_epoch, **(summary.details.metrics() if summary.details else {})}
    tracker.log_metrics({k: v for k, v in final.items() if v is not None and math.isfinite(v)},
                        step=summary.epochs_run)
    tracker.set_tags({"status": summary.status, "objective": summary.objective,
                      "data_fingerprint": summary.data_fingerprint})
    if tracker.enabled:
        figures = {}
        try:
            figures["loss_curve.png"] = plots.loss_curve(summary.history, metric, summary.best_epoch)
            figures.update(training.figures(model))
        except Exception as err:  # noqa: BLE001 - a plot must not fail the training
            logger.warning("could not draw the MLflow figures: %s", err)
        for name, figure in figures.items():
            tracker.log_figure(figure, f"plots/{name}")
    tracker.log_artifact(model_uri, "model")
    tracker.end("FINISHED")
