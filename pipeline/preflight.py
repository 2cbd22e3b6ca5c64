"""Checks of a run or a compile that come before TensorFlow, TFX and Beam load, and write nothing.

`tfflows run` calls `preflight` on a checked configuration (`pipeline.config`): what would otherwise
fail only inside a component, after ML Metadata and `pipeline_root` were created (a missing input, a
MADE narrower than the data, an output it cannot write, a store that is not SQLite, a bucket it
cannot reach). `tfflows compile` calls `check_cluster`. Only then does the CLI import
`pipeline.runner`, which loads TFX. This module imports none of TensorFlow, TFX, Beam or MLflow
(`tests/test_config.py`).
"""

from __future__ import annotations

import gzip
import os

import numpy as np

from tfflows.components import artifacts
from tfflows.components.artifacts import is_object_store
from tfflows.components.config import FILE_FORMATS
from tfflows.components.errors import DataError
from tfflows.components.inputs import pattern_matches
from tfflows.components.objectives import density_notation, get_objective
from tfflows.components.tables import FORMATS as TABLE_FORMATS
from tfflows.components.tables.reader import Table, open_table
from tfflows.models.kinds import narrowest_hidden_width
from tfflows.pipeline.config import ConfigError, RunConfig, tracking_uri

__all__ = ["OUTPUT_SCHEMES", "STEP_NAMES", "check_cluster", "cluster_pipeline_root", "modelled_density", "preflight",
           "step_names"]

# Node ids of `create_pipeline`'s components -> the step names the run prints.
STEP_NAMES = {"IngestExamplesComponent": "ingest", "TransformDataComponent": "transform",
               "DriftCheck": "drift", "TrainFlowComponent": "train", "EvaluateFlow": "evaluate", "PushFlow": "push"}


def step_names(config: RunConfig) -> tuple:
    """The steps a run of ``config`` prints, in order (`create_pipeline`'s components): the drift
    check runs where a transform does (a champion scores transformed data through its own)."""
    data = get_objective(config.train.objective).data_components
    return data + (("drift",) if "transform" in data else ()) + ("train", "evaluate", "push")


# Room kept under the output for the deepest path a run writes (pipeline_root/<component>/<artifact>/
# <execution>/Split-train/data_tfrecord-...gz, mlartifacts/<experiment>/<run>/artifacts/..., TFX's
# temporary folders): an output longer than the file system's limit less this fails half-way.
_PATH_ROOM = 512


def _existing_parent(path: str) -> str:
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def _too_long(folder: str) -> str | None:
    """Why `folder` is too long a path for its file system (a folder name or the whole path), or
    None. Checked before anything is made: `os.makedirs` of such a path creates the folders up to
    the first one that fails (16 empty folders for a 4,500-character --output)."""
    path = os.path.abspath(folder)
    parent = _existing_parent(path)
    name_max, path_max = os.pathconf(parent, "PC_NAME_MAX"), os.pathconf(parent, "PC_PATH_MAX")
    longest = max(path.split(os.sep), key=lambda part: len(os.fsencode(part)))
    if len(os.fsencode(longest)) > name_max:
        return (f"the folder name {longest[:20]}... is {len(os.fsencode(longest))} bytes, the file system takes "
                f"at most {name_max}")
    if len(os.fsencode(path)) > path_max - _PATH_ROOM:
        return (f"the path is {len(os.fsencode(path))} bytes, and a run needs {_PATH_ROOM} more under it: the "
                f"file system takes at most {path_max}")
    return None


_SQLITE_HEADER = b"SQLite format 3\x00"


def _not_sqlite(path: str) -> bool:
    """Whether `path` exists and is not an SQLite database (an empty file is one SQLite fills)."""
    if not os.path.lexists(path):
        return False
    if not os.path.isfile(path):
        return True
    with open(path, "rb") as f:
        header = f.read(len(_SQLITE_HEADER))
    return bool(header) and header != _SQLITE_HEADER


def _unwritable(folder: str) -> str | None:
    """Why `folder` (or the folder that would hold it) cannot be written, or None."""
    probe = _existing_parent(os.path.abspath(folder))
    if not os.path.isdir(probe):
        return f"{probe} is not a folder"
    if os.statvfs(probe).f_flag & os.ST_RDONLY:
        return f"{probe} is on a read-only file system"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


def _input_table(ingest) -> Table | None:
    """The first local input file of a table dataset (`components.tables`), opened by the one table
    reader (its header only), or None when there is none to read cheaply (ingest reads and checks
    the whole file: a bad one is its to report)."""
    files = pattern_matches(ingest.path) if ingest.path and "://" not in ingest.path else []
    if ingest.dataset not in TABLE_FORMATS or not files or not os.path.isfile(files[0]):
        return None
    try:
        return open_table(files[0], key=ingest.feature_key)
    except DataError:
        return None


def _column_names(ingest) -> list[str] | None:
    """The column names of the first local input table that names its columns, or None."""
    table = _input_table(ingest)
    return list(table.columns) if table is not None and table.named else None


def _peek_width(ingest) -> int | None:
    """The number of features of the input file from its header alone (``columns``, a table's
    columns less its context columns; the numeric ones: less its categorical columns too; an IDX
    header), or None when that is not cheap to know.
    Only for `preflight`'s width check: ingest reads and checks the whole file (a bad header is its
    to report)."""
    apart = (ingest.context_columns or ()) + (ingest.categorical_columns or ())
    if ingest.dataset in TABLE_FORMATS and ingest.columns:
        return len([c for c in ingest.columns if c not in apart])
    if (table := _input_table(ingest)) is not None:
        return len([c for c in table.columns if c not in apart])
    files = pattern_matches(ingest.path) if ingest.path and "://" not in ingest.path else []
    if ingest.dataset != "idx" or not files or not os.path.isfile(files[0]):
        return None
    try:
        with (gzip.open if files[0].endswith(".gz") else open)(files[0], "rb") as f:
            magic = f.read(4)
            if magic[:2] != b"\0\0" or not 2 <= magic[3] <= 4:  # not examples: `read_idx` says why
                return None
            shape = [int.from_bytes(f.read(4), "big") for _ in range(magic[3])]
    except (OSError, EOFError, IndexError):
        return None
    return int(np.prod(shape[1:]))


def modelled_density(config: RunConfig) -> str | None:
    """For the plan line: the density a conditional or mixed run models, named by its columns
    (`components.objectives.density_notation`: ``p(temp, vibration | machine, load)``,
    ``P(merchant) p(amount, hour | merchant)``), the features from ``ingest.columns`` or the input
    table's header (``x`` when neither names them); None for a run of all its columns."""
    ingest = config.ingest
    if "ingest" not in get_objective(config.train.objective).data_components or not (
            ingest.context_names or ingest.modelled_categorical):
        return None
    columns = list(ingest.columns) if ingest.dataset in TABLE_FORMATS and ingest.columns else _column_names(ingest)
    apart = set(ingest.context_names or ()) | set(ingest.categorical_columns or ())
    features = [c for c in columns if c not in apart] if columns else None
    return density_notation(features, ingest.context_names, ingest.modelled_categorical)


def _check_context_columns(ingest) -> None:
    """A context column that is not in the CSV's header is refused by name, as are context columns
    that leave no feature, before ingest (which checks the same on every source)."""
    if not ingest.context_columns or (header := _column_names(ingest)) is None:
        return
    if missing := [c for c in ingest.context_columns if c not in header]:
        raise DataError(ingest.path, f"ingest.context_columns {missing}", f"not in the header ({', '.join(header)})",
                        "name columns of the file's header in ingest.context_columns")
    if not ingest.columns and set(header) <= set(ingest.context_columns):
        raise DataError(ingest.path, "ingest.context_columns", "names every column: no feature is left to model",
                        "leave at least one column out of ingest.context_columns")


def _check_width(config: RunConfig) -> None:
    """Refuses MADE layers narrower than the data needs (one unit per conditional), found before
    ingest and transform ran, when the width is in the file's header."""
    train = config.train
    if train.objective != "max_likelihood" or not train.hidden_units or not (width := _peek_width(config.ingest)):
        return
    need = narrowest_hidden_width(train.kind, width)
    if min(train.hidden_units) < need:
        raise ConfigError(f"train.hidden_units {list(train.hidden_units)} is too narrow for the {width} features of "
                          f"{config.ingest.path}: a {train.kind} MADE needs {need} units or more per layer; fix: "
                          f"--set train.hidden_units=[{need}] or wider, or keep fewer columns")


def preflight(config: RunConfig) -> None:
    """What would otherwise fail only inside a component, after ML Metadata and `pipeline_root`
    were created: a missing input file, a MADE narrower than the data, an output folder that
    cannot be written or whose path is too long, an ML Metadata or MLflow store there that is not
    SQLite, an output on a scheme the run cannot write (`OUTPUT_SCHEMES`) or on a bucket it cannot
    reach. Checked before anything is written; object-store inputs (``gs://``, ``s3://``) are left
    to the components."""
    if "ingest" in get_objective(config.train.objective).data_components:
        ingest = config.ingest
        if ingest.dataset in FILE_FORMATS and not ingest.path:
            raise DataError(ingest.dataset, "ingest.path", "no input file given", "pass --data PATH")
        for name in ("path", "test_path"):
            path = getattr(ingest, name)
            if path and "://" not in path and not pattern_matches(path):  # {SPAN} patterns included
                raise DataError(path, f"ingest.{name}", "no such file or folder", "check the path given to --data")
        _check_context_columns(config.ingest)
        _check_width(config)
    _check_output_scheme(config.output)
    if config.on_bucket:
        _check_bucket(config.output)
    # The output, or the local folder that holds a bucket output's SQLite stores (`RunConfig.local_dir`).
    folder, name, flag = ((config.output, "output", "--output") if not config.on_bucket else
                          (config.local_dir, f"output {config.output}: its local store folder", "--metadata FILE"))
    if reason := _too_long(folder):
        raise ConfigError(f"{name}: too long a path ({reason}): {folder}; fix: choose a shorter {flag}")
    if reason := _unwritable(folder):
        raise ConfigError(f"{name} {folder}: cannot write there ({reason}); fix: choose a writable {flag}")
    if config.metadata and (reason := _unwritable(os.path.dirname(os.path.abspath(config.metadata)))):
        raise ConfigError(f"metadata {config.metadata}: cannot write there ({reason}); fix: choose a writable "
                          "--metadata FILE")
    stores = [config.metadata_path] + ([] if config.tracking.uri else [os.path.join(folder, "mlflow.db")])
    for store in stores:  # TFX and MLflow would fail on it only after TensorFlow, TFX and Beam loaded
        if _not_sqlite(store):
            raise ConfigError(f"{store}: not an SQLite database, but this run keeps its records there; fix: move "
                              "it away or choose another --output")


# The schemes an output may name besides a local folder: every layer that writes the output has a
# file system for them (TensorFlow's own gs://, Beam's and the artifact layer's google-cloud-storage).
# s3:// is not one: TensorFlow 2.21 has no s3:// file system ("File system scheme 's3' not
# implemented"), and the examples, transform graph, model and checkpoints go through TensorFlow. Its
# home since TF 2.6, tensorflow-io, stops at 0.37.1 (built for TF 2.16), whose file-system plugin
# does not load into TF 2.21 (undefined symbol tsl::mutex::unlock; checked 2026-12).
OUTPUT_SCHEMES = ("gs://",)


def _check_output_scheme(output: str) -> None:
    """Refuses, in one line and before anything is written, an output that names a scheme the run
    cannot write (`os.path` would make it a local folder named ``hdfs:`` and say nothing)."""
    if "://" not in output or output.startswith(OUTPUT_SCHEMES):
        return
    scheme = output.split("://", 1)[0]
    if scheme == "s3":
        raise ConfigError(f"output {output}: TensorFlow 2.21 has no s3:// file system for the run's examples, "
                          f"model and checkpoints; fix: --output gs://BUCKET/PREFIX, or --output DIR with --set "
                          f"push.push_base={output} (serving versions to the bucket)")
    raise ConfigError(f"output {output}: cannot write to {scheme}:// (a run writes a local folder or a gs:// "
                      "bucket); fix: --output DIR or --output gs://BUCKET/PREFIX")


def _check_bucket(output: str) -> None:
    """One line, before TensorFlow loads, for a bucket output the run cannot reach: no credentials,
    no endpoint, or no such bucket (the artifact layer's client names the variable to set)."""
    bucket = output.split("://", 1)[1].split("/", 1)[0]
    if not bucket:
        raise ConfigError(f"output {output}: names no bucket; fix: --output gs://BUCKET/PREFIX")
    if not artifacts.bucket_exists(output):
        raise ConfigError(f"output {output}: no bucket {bucket} (or no access to it); fix: create it "
                          f"(gcloud storage buckets create gs://{bucket}) or choose another --output")


def _on_this_machine(uri: str) -> bool:
    """Whether an MLflow store or artifact URI names this machine's files (a path, ``file:``,
    ``sqlite:``): in a cluster's pod it would be the pod's scratch disk."""
    return uri.startswith(("sqlite:", "file:")) or ("://" not in uri and not uri.startswith("databricks"))


_THIS_MACHINE = "a path of this machine, which a cluster's pods cannot reach"


def _cluster_problems(config: RunConfig):
    """(setting and value, problem, fix) of every setting that a cluster's spec would lack or would
    carry as a path of this machine."""
    tracking = config.tracking
    if cluster_pipeline_root(config) is None:
        yield ("cluster.pipeline_root", "unset, and the cluster's steps need a bucket for their artifacts",
               "--pipeline-root gs://BUCKET/tfflows (or s3://)")
    if tracking.enabled:
        uri = tracking.uri or tracking_uri(config)
        if _on_this_machine(uri):
            yield (f"tracking.uri {uri}", _THIS_MACHINE, "--tracking-uri http://MLFLOW:5000 (the cluster's MLflow "
                                                          "server), or --set tracking.enabled=false")
        for name in ("registry_uri", "artifact_location"):
            if (value := getattr(tracking, name)) and _on_this_machine(value):
                yield (f"tracking.{name} {value}", _THIS_MACHINE, f"a server URI or a bucket, or leave tracking.{name} "
                                                                  "out")
    if not is_object_store(config.push.push_base or config.output_path()):  # the push default: the output
        yield (f"push.push_base {config.push.push_base or f'unset (the output, {config.output_path()})'}",
               _THIS_MACHINE, "--push-base gs://BUCKET/tfflows (or s3://)")
    if "ingest" in get_objective(config.train.objective).data_components:
        for name in ("path", "test_path"):
            if (path := getattr(config.ingest, name)) and "://" not in path:
                yield (f"ingest.{name} {path}", _THIS_MACHINE, "copy the data to a bucket and --set "
                                                               f"ingest.{name}=gs://BUCKET/FILE")


def cluster_pipeline_root(config: RunConfig) -> str | None:
    """``cluster.pipeline_root``, else for an output on a bucket its ``pipeline_root/``."""
    return config.cluster.pipeline_root or (config.pipeline_root if config.on_bucket else None)


def check_cluster(config: RunConfig) -> None:
    """Refuses, in one line, a configuration whose compiled spec would name a path of the compiling
    machine: run by Kubeflow or Vertex, the pipeline would write its artifacts, track and push into
    a pod's scratch disk, or read data the pod does not have."""
    if first := next(_cluster_problems(config), None):
        setting, problem, fix = first
        raise ConfigError(f"{setting}: {problem}; fix: {fix}")
