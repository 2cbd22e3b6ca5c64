"""The one typed configuration of a tfflows run, and how files and flags become one.

A run is described by `RunConfig`; each component receives its own section. Every option is
documented on the section's dataclass:

- `ingest`    -> `components.config.IngestConfig`      (what data, splits)
- `transform` -> `components.config.TransformConfig`   (dequantisation/logit or standardisation)
- `train`     -> `components.train.config.TrainConfig`  (flow kind and sizes, optimiser, stopping)
- `tracking`  -> `components.train.config.TrackingConfig` (MLflow)
- `evaluate`  -> `components.evaluate.config.EvaluateConfig` (test metrics, blessing threshold)
- `push`      -> `components.push.config.PushConfig`    (serving export, model registry)

Precedence: defaults < YAML file (`--config`) < CLI flags < `--set section.field=value`.
The whole configuration is checked strictly (`components.config.build_config`: every value against
its field's type hint, then each section's own checks) before TensorFlow is imported; unknown
fields, wrong types and invalid values end in one line naming the field path and the fix.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Tuple

import yaml

from tfflows.components.config import ConfigError, IngestConfig, TransformConfig, build_config
from tfflows.components.evaluate.config import EvaluateConfig
from tfflows.components.push.config import PushConfig
from tfflows.components.train.config import TrackingConfig, TrainConfig

__all__ = ["ConfigError", "RunConfig", "load_run_config", "config_to_dict"]

DEFAULT_BEAM_ARGS = ("--runner=FnApiRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory")
PROGRESS = ("auto", "bar", "lines", "off")
# TFX makes folders and ML Metadata contexts of the name: no path separators, no `..`.
_PIPELINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class RunConfig:
    """Everything a pipeline run needs.

    Attributes:
      pipeline_name: TFX pipeline name (also the MLflow experiment unless tracking names one).
      output: root folder of the run: `pipeline_root/` (artifacts), `metadata.sqlite` (ML Metadata),
        `serving/<version>/` (pushed SavedModels), `mlflow.db` (default tracking store).
      beam_pipeline_args: Beam options for ingest and transform. Locally the FnApiRunner;
        `--runner=DataflowRunner|FlinkRunner|SparkRunner` plus its flags runs the same code there.
      enable_cache: TFX caching: a component whose inputs and configuration did not change reuses
        its earlier outputs.
      progress: how `tfflows run` shows training on the terminal: "bar" (one line rewritten in
        place: epoch, loss, examples/s, ETA), "lines" (one line every ``progress_every_epochs``
        epochs), "off", or "auto" (a bar on a terminal, lines otherwise). Every epoch's line is
        in the run's log file (``<output>/logs/``) whatever this says.
      progress_every_epochs: the period of "lines" progress.
      ingest, transform, train, tracking, evaluate, push: the components' sections.

    The embedded default (no file, no flags) is a quick run: two moons, a MAF of 5 layers with 64
    hidden units, at most 200 epochs with learning rate 1e-3 and patience 20. The papers' recipe
    (`TrainConfig`'s own defaults: 512 units, lr 1e-4, patience 30, 100 epochs) is what a config
    file gets by setting those fields.
    """

    pipeline_name: str = "tfflows"
    output: str = "tfflows_output"
    beam_pipeline_args: Tuple[str, ...] = DEFAULT_BEAM_ARGS
    enable_cache: bool = True
    progress: str = "auto"
    progress_every_epochs: int = 10
    ingest: IngestConfig = field(default_factory=lambda: IngestConfig(dataset="moons"))
    transform: TransformConfig = field(default_factory=TransformConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        hidden_units=(64,), epochs=200, learning_rate=1e-3, patience=20, log_every_steps=50))
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    push: PushConfig = field(default_factory=PushConfig)

    def __post_init__(self) -> None:
        if not _PIPELINE_NAME.fullmatch(self.pipeline_name) or ".." in self.pipeline_name:
            raise ConfigError(f"pipeline_name {self.pipeline_name!r} is not a plain name (it names folders and "
                              "ML Metadata contexts); fix: use letters, digits, '_', '-' or '.', e.g. tfflows")
        if not self.output:
            raise ConfigError("output is empty; fix: --output DIR")
        if self.progress not in PROGRESS:
            raise ConfigError(f"progress: expected one of {', '.join(PROGRESS)}, got {self.progress!r}; fix: "
                              "set progress to one of them")
        if self.progress_every_epochs < 1:
            raise ConfigError(f"progress_every_epochs must be >= 1, but is {self.progress_every_epochs}; fix: "
                              "set progress_every_epochs to 1 or more")

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.output, "pipeline_root")

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output, "metadata.sqlite")

    @property
    def serving_dir(self) -> str:
        return os.path.join(self.output, "serving")


def _nested_types(cls) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {name: hint for name, hint in hints.items() if dataclasses.is_dataclass(hint)}


def config_to_dict(config) -> dict:
    """A plain, YAML-friendly dict of a (nested) configuration."""
    def plain(value):
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value
    return plain(dataclasses.asdict(config))


def _merge(base: dict, update, cls) -> dict:
    """Deep-merges `update` into `base`, section by section (`build_config` then checks every key)."""
    if not isinstance(update, dict):
        return update
    nested = _nested_types(cls)
    merged = dict(base)
    for key, value in update.items():
        merged[key] = _merge(base.get(key) or {}, value, nested[key]) if key in nested else value
    return merged


def _parse_set(assignment: str) -> tuple[list[str], Any]:
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected section.field=value, e.g. train.epochs=5")
    key, raw = assignment.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {assignment!r}: cannot parse the value ({error.problem})") from error
    return key.strip().split("."), value


def load_run_config(path: str | None = None, overrides: dict | None = None, assignments=()) -> RunConfig:
    """Defaults < YAML file at `path` < `overrides` (a nested dict) < `assignments` ("a.b=v")."""
    values = config_to_dict(RunConfig())
    if path is not None:
        try:
            with open(path) as f:
                loaded = yaml.safe_load(f)
        except OSError as error:
            raise ConfigError(f"{path}: cannot read the config file ({error.strerror})") from error
        except yaml.YAMLError as error:
            raise ConfigError(f"{path}: not valid YAML ({getattr(error, 'problem', error)})") from error
        if loaded is not None:
            values = _merge(values, loaded, RunConfig)
    if overrides:
        values = _merge(values, overrides, RunConfig)
    for assignment in assignments:
        keys, value = _parse_set(assignment)
        update: dict = {}
        cursor = update
        for key in keys[:-1]:
            cursor = cursor.setdefault(key, {})
        cursor[keys[-1]] = value
        values = _merge(values, update, RunConfig)
    return build_config(RunConfig, values)
