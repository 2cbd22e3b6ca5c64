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
Unknown or invalid fields are rejected with the list of valid ones.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

from tfflows.components.config import IngestConfig, TransformConfig
from tfflows.components.evaluate.config import EvaluateConfig
from tfflows.components.push.config import PushConfig
from tfflows.components.train.config import TrackingConfig, TrainConfig

__all__ = ["ConfigError", "RunConfig", "load_run_config", "config_to_dict"]

DEFAULT_BEAM_ARGS = ("--runner=FnApiRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory")


class ConfigError(ValueError):
    """A configuration problem, with a one-line message naming the field and the fix."""


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
      ingest, transform, train, tracking, evaluate, push: the components' sections.

    The embedded default (no file, no flags) is a quick run: two moons, a MAF of 5 layers with 64
    hidden units, at most 200 epochs with learning rate 1e-3 and patience 20. The papers' recipe
    (`TrainConfig`'s own defaults: 512 units, lr 1e-4, patience 30, 100 epochs) is what a config
    file gets by setting those fields.
    """

    pipeline_name: str = "tfflows"
    output: str = "tfflows_output"
    beam_pipeline_args: tuple = DEFAULT_BEAM_ARGS
    enable_cache: bool = True
    ingest: IngestConfig = field(default_factory=lambda: IngestConfig(dataset="moons"))
    transform: TransformConfig = field(default_factory=TransformConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        hidden_units=(64,), epochs=200, learning_rate=1e-3, patience=20, log_every_steps=50))
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    push: PushConfig = field(default_factory=PushConfig)

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


def _merge(base: dict, update: dict, cls, where: str) -> dict:
    """Deep-merges `update` into `base`, refusing keys that `cls` does not have."""
    if not isinstance(update, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping of fields, got {update!r}")
    valid = [f.name for f in dataclasses.fields(cls)]
    nested = _nested_types(cls)
    merged = dict(base)
    for key, value in update.items():
        path = f"{where}.{key}" if where else key
        if key not in valid:
            raise ConfigError(f"unknown field '{path}'; valid fields{' of ' + where if where else ''}: {', '.join(valid)}")
        merged[key] = _merge(base.get(key) or {}, value, nested[key], path) if key in nested else value
    return merged


def _coerce(hint, value):
    """YAML 1.1 reads `1e-4` as a string: turn such values into floats where a float is expected."""
    if isinstance(value, str) and (hint is float or float in typing.get_args(hint)):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _build(cls, values: dict, where: str):
    nested = _nested_types(cls)
    hints = typing.get_type_hints(cls)
    kwargs = {k: (_build(nested[k], v, f"{where}.{k}" if where else k) if k in nested else _coerce(hints.get(k), v))
              for k, v in values.items()}
    for name, value in kwargs.items():  # YAML gives lists where the dataclasses hold tuples
        if isinstance(value, list) and name == "beam_pipeline_args":
            kwargs[name] = tuple(value)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        message = str(error).splitlines()[0]
        raise ConfigError(f"invalid {where or 'config'}: {message}") from error


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
            values = _merge(values, loaded, RunConfig, "")
    if overrides:
        values = _merge(values, overrides, RunConfig, "")
    for assignment in assignments:
        keys, value = _parse_set(assignment)
        update: dict = {}
        cursor = update
        for key in keys[:-1]:
            cursor = cursor.setdefault(key, {})
        cursor[keys[-1]] = value
        values = _merge(values, update, RunConfig, "")
    return _build(RunConfig, values, "")
