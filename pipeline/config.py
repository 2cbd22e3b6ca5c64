"""The one typed configuration of a tfflows run, and how files and flags become one.

A run is described by `RunConfig`; each component receives its own section. Every option is
documented on the section's dataclass:

- `ingest`    -> `components.config.IngestConfig`      (what data, splits)
- `transform` -> `components.config.TransformConfig`   (dequantisation/logit or standardisation)
- `train`     -> `components.train.config.TrainConfig`  (flow kind and sizes, optimiser, stopping)
- `tracking`  -> `components.train.config.TrackingConfig` (MLflow)
- `evaluate`  -> `components.evaluate.config.EvaluateConfig` (test metrics, blessing threshold)
- `push`      -> `components.push.config.PushConfig`    (serving export, model registry)
- `cluster`   -> `ClusterConfig` below                   (`tfflows compile`: pipeline root, image, resources)

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
from importlib.metadata import version
from typing import Any, Optional, Tuple

import yaml

from tfflows.components.artifacts import is_object_store, join
from tfflows.components.config import ConfigError, IngestConfig, TransformConfig, build_config
from tfflows.components.evaluate.config import EvaluateConfig
from tfflows.components.objectives import get_objective
from tfflows.components.push.config import PushConfig
from tfflows.components.train.config import OBJECTIVES, TrackingConfig, TrainConfig
from tfflows.models.kinds import FLOW_KINDS, get_kind

__all__ = ["ClusterConfig", "ConfigError", "RunConfig", "load_run_config", "config_to_dict", "tracking_uri"]

DEFAULT_BEAM_ARGS = ("--runner=FnApiRunner", "--direct_num_workers=1", "--direct_running_mode=in_memory")
PROGRESS = ("auto", "bar", "lines", "off")
# TFX makes folders and ML Metadata contexts of the name: no path separators, no `..`.
_PIPELINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class ClusterConfig:
    """Where a compiled pipeline (`tfflows compile`) runs: only what a cluster adds to a run. The
    MLflow server and the push destination keep their own homes, ``tracking.uri`` and
    ``push.push_base``; `compile` refuses a spec in which any of these would name a path of the
    compiling machine (`pipeline.runner.check_cluster`).

    Attributes:
      pipeline_root: bucket folder (``gs://`` or ``s3://``) under which the cluster's pipeline
        writes its artifacts (``--pipeline-root``).
      image: container image holding tfflows, with a fixed tag or digest (``--image``; None: the
        ``tfflows:<package version>`` that ``infra/k8s/kustomization.yaml`` deploys).
      cpu: vCPU limit of every step's container (None: the cluster's default).
      memory_gb: memory limit of every step's container in GB (None: the cluster's default).
    """

    pipeline_root: Optional[str] = None
    image: Optional[str] = None
    cpu: Optional[float] = None
    memory_gb: Optional[float] = None

    def __post_init__(self) -> None:
        if self.pipeline_root is not None and not is_object_store(self.pipeline_root):
            raise ConfigError(f"cluster.pipeline_root {self.pipeline_root}: not a bucket, and a cluster's steps "
                              "cannot write this machine's folders; fix: --pipeline-root gs://BUCKET/PREFIX "
                              "(or s3://)")
        if self.image is not None and (self.image.endswith(":latest") or not re.search(r":[^/]+$|@sha256:",
                                                                                     self.image)):
            raise ConfigError(f"cluster.image {self.image}: needs a fixed tag or digest, not latest (a moving tag "
                              f"runs other code than the one compiled); fix: e.g. --image tfflows:{version('tfflows')}")
        for name in ("cpu", "memory_gb"):
            if (value := getattr(self, name)) is not None and value <= 0:
                raise ConfigError(f"cluster.{name} must be positive, but is {value}; fix: set it above 0 or "
                                  "leave it out")


@dataclass(frozen=True)
class RunConfig:
    """Everything a pipeline run needs.

    Attributes:
      pipeline_name: TFX pipeline name (also the MLflow experiment unless tracking names one).
      output: root folder of the run: `pipeline_root/` (artifacts), `checkpoints/`, `logs/`,
        `serving/<version>/` (pushed SavedModels) and `models.config`, `metadata.sqlite` (ML Metadata),
        `mlflow.db` (default tracking store) and `mlartifacts/`. A bucket (``gs://BUCKET/PREFIX``)
        holds all of these but the two SQLite stores, which a bucket cannot hold: they go to the
        local folder `local_dir` (``metadata`` and ``tracking.uri`` override each).
      metadata: the ML Metadata SQLite file (None: `local_dir`/metadata.sqlite). Runs that share it
        reuse each other's unchanged steps.
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
      cluster: where `tfflows compile`'s spec runs (`ClusterConfig`); `tfflows run` ignores it.

    The embedded default (no file, no flags) is a quick run: two moons, a MAF of 5 layers with 64
    hidden units, at most 200 epochs with learning rate 1e-3 and patience 20. The papers' recipe
    (`TrainConfig`'s own defaults: 512 units, lr 1e-4, patience 30, 100 epochs) is what a config
    file gets by setting those fields.
    """

    pipeline_name: str = "tfflows"
    output: str = "tfflows_output"
    metadata: Optional[str] = None
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
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

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
        if self.push.model_name != PushConfig.model_name:  # `pipeline.pipeline.resolved_sections` sets it
            raise ConfigError(f"push.model_name {self.push.model_name!r}: TF Serving's model name is the pipeline's "
                              "(the name models.config gives it, and promote and rollback rewrite); fix: --set "
                              "pipeline_name=NAME instead")
        self._check_context()

    def _check_context(self) -> None:
        """A conditional density, and the numeric part of a mixed one (given its categories), needs an
        objective and a flow kind that take a context (the two registries say which), known before
        anything runs."""
        if self.ingest.context_names:
            what, drop = f"ingest context [{', '.join(self.ingest.context_names)}]", "drop the context"
        elif self.ingest.modelled_categorical:
            # The numeric columns are modelled given the categories: a conditional flow (`models.MixedDensity`).
            what, drop = f"categorical columns [{', '.join(self.ingest.modelled_categorical)}]", "drop them"
        else:
            return
        if not get_objective(self.train.objective).conditional:
            able = [name for name in OBJECTIVES if get_objective(name).conditional]
            raise ConfigError(f"{what}: objective {self.train.objective!r} fits no "
                              f"conditional density (only {', '.join(able)} does); fix: --set "
                              f"train.objective={able[0]}, or {drop}")
        if not get_kind(self.train.kind).conditional:
            able = [name for name in FLOW_KINDS if get_kind(name).conditional]
            raise ConfigError(f"{what}: flow kind {self.train.kind!r} has no conditional "
                              f"version (its layers have no input for a context); fix: --model one of "
                              f"{', '.join(able)}, or {drop}")

    @property
    def on_bucket(self) -> bool:
        """Whether the output is a bucket (``gs://``, ``s3://``) rather than a local folder."""
        return is_object_store(self.output)

    @property
    def local_dir(self) -> str:
        """The local folder of the run's SQLite stores (ML Metadata, the default MLflow store): the
        output itself, or for a bucket the folder of ``metadata`` when given, else
        ``~/.tfflows/<scheme>/<bucket>/<prefix>`` (the same for every run into that bucket folder,
        wherever it is started from, so that re-runs reuse unchanged steps)."""
        if not self.on_bucket:
            return self.output
        if self.metadata:
            return os.path.dirname(os.path.abspath(self.metadata))
        scheme, rest = self.output.split("://", 1)
        return os.path.join(os.path.expanduser("~"), ".tfflows", scheme, *rest.strip("/").split("/"))

    @property
    def pipeline_root(self) -> str:
        return join(self.output, "pipeline_root")

    @property
    def metadata_path(self) -> str:
        return self.metadata or os.path.join(self.local_dir, "metadata.sqlite")

    @property
    def serving_dir(self) -> str:
        return join(self.output, "serving")

    @property
    def logs_dir(self) -> str:
        """Where the run's log file is written: the output's ``logs/``, or for a bucket the local
        folder's (`tfflows run` copies the log to the bucket's ``logs/`` when it ends)."""
        return os.path.join(self.local_dir, "logs")

    def output_path(self, *parts: str) -> str:
        """A path under the output: absolute for a local folder, ``/``-joined in a bucket."""
        return join(self.output if self.on_bucket else os.path.abspath(self.output), *parts)


def _nested_types(cls) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {name: hint for name, hint in hints.items() if dataclasses.is_dataclass(hint)}


def tracking_uri(config: RunConfig) -> str:
    """The configured MLflow URI, or the run's own sqlite store `<local_dir>/mlflow.db` (the output
    folder, or for a bucket output the local folder of `RunConfig.local_dir`)."""
    return config.tracking.uri or f"sqlite:///{os.path.abspath(os.path.join(config.local_dir, 'mlflow.db'))}"


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


class _BoundedLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses aliases expanding past `MAX_YAML_VALUES` values.

    Aliases share one Python object, so loading a "billion laughs" file is quick, but every later
    walk (type checks, an error message quoting the value) expands it: nine levels of nine aliases
    took 40 s and printed a 1.26 GB line. Each node's expanded size is counted while the document is
    composed, before anything is constructed."""

    def __init__(self, stream):
        super().__init__(stream)
        self._expanded_sizes: dict[int, int] = {}  # id(node) -> values it stands for, aliases expanded

    def compose_node(self, parent, index):
        node = super().compose_node(parent, index)
        sizes = self._expanded_sizes
        if id(node) not in sizes:  # an alias returns its anchor's node, already counted
            children = (node.value if isinstance(node, yaml.SequenceNode) else
                        [part for pair in node.value for part in pair] if isinstance(node, yaml.MappingNode) else [])
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[id(node)] > MAX_YAML_VALUES:
                raise _AliasBomb(f"line {node.start_mark.line + 1}: aliases expand to more than "
                                 f"{MAX_YAML_VALUES:,} values")
        return node


class _AliasBomb(yaml.YAMLError):
    """Raised by `_BoundedLoader`; its message is the problem, for `_load_yaml`'s one line."""


MAX_YAML_VALUES = 100_000  # a whole configuration is a few hundred; 10,000 CSV column names fit


def _load_yaml(text, where: str):
    """YAML `text` (a string or a file) through `_BoundedLoader`; any problem is one `ConfigError`
    line naming `where` (the file, or the field of a --set)."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except _AliasBomb as error:
        raise ConfigError(f"{where}: {error}; fix: write the values out instead of nesting aliases "
                          f"(*name)") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{where}: not valid YAML ({getattr(error, 'problem', None) or error}); fix: "
                          "correct the YAML syntax") from error


def _parse_set(assignment: str) -> tuple[list[str], Any]:
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected section.field=value, e.g. train.epochs=5")
    key, raw = assignment.split("=", 1)
    value = _load_yaml(raw, f"--set {key.strip()}") if raw.strip() else None
    return key.strip().split("."), value


def _read_config_file(path: str) -> dict | None:
    """The `--config` file: a mapping of sections (None when empty), one line for anything else."""
    try:
        with open(path) as f:
            loaded = _load_yaml(f, path)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config file ({error.strerror}); fix: check the path given "
                          "to --config") from error
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the config file holds a {type(loaded).__name__}, not a mapping of sections; "
                          "fix: write it as `section: {field: value}` lines, e.g. `train: {epochs: 5}`")
    return loaded


def load_run_config(path: str | None = None, overrides: dict | None = None, assignments=()) -> RunConfig:
    """Defaults < YAML file at `path` < `overrides` (a nested dict) < `assignments` ("a.b=v")."""
    values = config_to_dict(RunConfig())
    if path is not None and (loaded := _read_config_file(path)) is not None:
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
