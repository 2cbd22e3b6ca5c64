"""The one MLflow helper of tfflows: train, evaluate, push and the registry commands use it.

MLflow is optional to a run's outcome. A `Tracker` wraps an `mlflow.tracking.MlflowClient` bound
to the configured URI and guards every call: the first failure disables it and logs one warning
line saying what was not logged and why; later calls are counted in `not_logged` and summed up in
one more line at `end`. A tracking server is probed once (``/health``, ``timeout_s``) before
anything else, so an outage costs seconds, not MLflow's default minutes of retries.

What the helper owns, so that no component writes it again:

- the process's MLflow HTTP settings (timeout, bounded retries), set once from the first
  `TrackingConfig` (MLflow reads them only from the environment; nothing rewrites them per call);
- a ``sqlite:///`` store's creation: serialised across processes by a file lock beside the
  database (two runs into one output used to race: ``index idx_experiments_workspace already
  exists``); a half-created store (a disk filled up while it was first migrated:
  ``_alembic_tmp_*`` tables, or not a database at all) is moved aside with one warning line and a
  fresh one is created; the store's ``Default`` experiment gets its artifact root beside the
  database (not ``./mlruns`` in the current directory);
- experiment get-or-create (a concurrent create is read back), run open or resume.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import math
import os
import sqlite3
import tempfile
import time
import urllib.error
import urllib.request
from typing import Dict, Iterator, List, Mapping, Optional

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.tracking import MlflowClient

from tfflows.components import artifacts
from tfflows.components.train.config import TrackingConfig

__all__ = ["Tracker", "flatten_params", "prepare_store", "store_artifact_root", "sqlite_path"]

logger = logging.getLogger("tfflows.tracking")

_http_settings_applied = False


def _apply_http_settings(config: TrackingConfig) -> None:
    """MLflow's HTTP timeout and retry budget, set once per process (MLflow reads the environment)."""
    global _http_settings_applied
    if _http_settings_applied:
        return
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, int(round(config.timeout_s))))
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(int(config.max_retries))
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"  # 1 s, 2 s, 4 s ... between retries
    _http_settings_applied = True


def flatten_params(params: Mapping, prefix: str = "") -> Dict[str, str]:
    """Nested dicts as ``a.b`` keys with string values (MLflow params)."""
    out: Dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, prefix=f"{name}."))
        else:
            out[name] = str(list(value) if isinstance(value, tuple) else value)[:6000]
    return out


def sqlite_path(uri: str) -> Optional[str]:
    """The database file of a ``sqlite:///`` URI (absolute), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return os.path.abspath(uri[len("sqlite:///"):])


def store_artifact_root(config: TrackingConfig) -> Optional[str]:
    """Artifact root of experiments this helper creates: the configured one, else ``mlartifacts``
    beside a sqlite database, else None (the tracking server's default)."""
    if config.artifact_location:
        return config.artifact_location
    path = sqlite_path(config.uri or "")
    return os.path.join(os.path.dirname(path), "mlartifacts") if path else None


@contextlib.contextmanager
def _file_lock(path: str) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _half_created(path: str) -> Optional[str]:
    """Why the sqlite file at ``path`` is not a usable MLflow store, or None."""
    if os.path.getsize(path) == 0:
        return None  # sqlite creates an empty file on first connect; MLflow fills it
    try:
        with contextlib.closing(sqlite3.connect(path)) as db:
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                return "it fails sqlite's integrity check"
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as err:
        return f"it is not a readable database ({err})"
    leftovers = sorted(t for t in tables if t.startswith("_alembic_tmp_"))
    if leftovers:
        return f"a schema migration stopped half-way (leftover table {leftovers[0]})"
    if tables and "alembic_version" not in tables:
        return "it has tables but no schema version"
    return None


def prepare_store(config: TrackingConfig) -> None:
    """Creates (or repairs) a ``sqlite:///`` store under a file lock; no-op for other URIs.

    A half-created database is renamed to ``<file>.broken-<unix time>`` (kept for inspection) and
    replaced by a fresh store, with one warning line. The fresh store's ``Default`` experiment
    gets ``store_artifact_root(config)`` as its artifact root.
    """
    path = sqlite_path(config.uri or "")
    if path is None:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with _file_lock(path + ".lock"):
        problem = _half_created(path) if os.path.exists(path) else None
        if problem:
            broken = f"{path}.broken-{int(time.time())}"
            os.replace(path, broken)
            # MLflow keeps one engine per URI for the process: its pooled connections still point
            # at the moved file, so close them (the engine reconnects to the new file).
            for store in (SqlAlchemyStore, RegistryStore):
                if config.uri in store._engine_map:
                    store._engine_map[config.uri].dispose()
            logger.warning("MLflow store %s was half-created (%s): moved it to %s and created a fresh "
                           "store", path, problem, broken)
        # Creating the store runs MLflow's migrations: inside the lock, so that concurrent runs
        # into one output do not create the same tables twice.
        SqlAlchemyStore(config.uri, store_artifact_root(config))
        RegistryStore(config.uri)


class Tracker:
    """Guarded MLflow calls on one run (a training run, or the run a pushed model belongs to).

    Args:
      config: the tracking configuration; an inactive one makes every method a no-op.
      run_id: an existing run to continue (a resumed training, or evaluate/push logging into
        the training run); None creates a run in ``config.experiment`` (named
        ``config.run_name``) when `start_run` is called.
      what: what this tracker logs, for the warning lines ("training", "evaluation", "push").
    """

    def __init__(self, config: TrackingConfig, run_id: Optional[str] = None, what: str = "training"):
        self.config = config
        self.what = what
        self.run_id: Optional[str] = None
        self.not_logged: List[str] = []
        self.client: Optional[MlflowClient] = None
        self._failed = False
        if not config.active:
            return
        _apply_http_settings(config)
        if self._reachable():
            self.guard("the store", self._open, run_id)

    @property
    def enabled(self) -> bool:
        return self.client is not None and not self._failed

    # ----- internals --------------------------------------------------------------------
    def _reachable(self) -> bool:
        uri = self.config.uri
        assert uri is not None  # called only for an active config, which has a URI
        if not uri.startswith(("http://", "https://")):
            return True
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=self.config.timeout_s):
                return True
        except urllib.error.HTTPError:
            return True  # it answers (e.g. 401 behind authentication): the client decides
        except (urllib.error.URLError, OSError, ValueError) as err:
            self._fail(f"the {self.what} (everything)", f"tracking server {uri} is unreachable ({err})")
            return False

    def _fail(self, what: str, why: str) -> None:
        self.not_logged.append(what)
        if not self._failed:
            logger.warning("MLflow tracking disabled: %s; NOT logged: %s. The run goes on.", why, what)
        self._failed = True

    def guard(self, what: str, fn, *args, **kwargs):
        """``fn(*args, **kwargs)``, or None (and ``what`` recorded as not logged) on any failure."""
        if self._failed or not self.config.active:
            if self.config.active:
                self.not_logged.append(what)
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - tracking must never stop the pipeline
            self._fail(what, f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}")
            return None

    def _open(self, run_id: Optional[str]) -> None:
        prepare_store(self.config)
        client = MlflowClient(tracking_uri=self.config.uri,
                              registry_uri=self.config.registry_uri or self.config.uri)
        if run_id:
            client.get_run(run_id)  # raises if the run is gone
            self.run_id = run_id
        self.client = client

    @property
    def _mlflow(self) -> MlflowClient:
        """The client, for the guarded calls (a failure there is recorded by `guard`)."""
        if self.client is None:
            raise RuntimeError("the MLflow store is not open")
        return self.client

    def experiment_id(self) -> str:
        """The configured experiment, created (with `store_artifact_root`) when missing."""
        name = self.config.experiment
        experiment = self._mlflow.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return self._mlflow.create_experiment(name, artifact_location=store_artifact_root(self.config))
        except MlflowException:  # another run created it a moment ago
            experiment = self._mlflow.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    # ----- public -------------------------------------------------------------------------
    def _unique_name(self, experiment_id: str, name: str) -> str:
        """``name``, or ``name-2``, ``name-3`` ... when the experiment already has a run of that name
        (MLflow allows duplicates; a run's name is how people tell runs apart)."""
        quoted = name.replace("'", "\\'")
        taken = {run.info.run_name for run in self._mlflow.search_runs(
            [experiment_id], filter_string=f"attributes.run_name LIKE '{quoted}%'", max_results=5000)}
        return name if name not in taken else next(
            f"{name}-{i}" for i in itertools.count(2) if f"{name}-{i}" not in taken)

    def start_run(self, run_name: Optional[str] = None, resume: bool = True) -> Optional[str]:
        """Opens a new run (when none was given) or marks the given one RUNNING again. A new run is
        named ``run_name``, else ``config.run_name`` (else MLflow's random name), made unique in the
        experiment (`_unique_name`)."""
        def _start():
            if self.run_id:
                if resume and self._mlflow.get_run(self.run_id).info.status != "RUNNING":
                    self._mlflow.update_run(self.run_id, status="RUNNING")
                return self.run_id
            experiment_id = self.experiment_id()
            name = run_name or self.config.run_name
            run = self._mlflow.create_run(experiment_id, run_name=self._unique_name(experiment_id, name) if name else None)
            self.run_id = run.info.run_id
            return self.run_id

        return self.guard("the run", _start) if self.enabled else None

    def log_params(self, params: Mapping) -> None:
        """Logs (nested) hyper-parameters; values become strings (already logged ones are kept)."""
        flat = flatten_params(params)

        def _log():
            existing = self._mlflow.get_run(self.run_id).data.params
            items = [Param(k, v) for k, v in sorted(flat.items()) if k not in existing]
            for i in range(0, len(items), 100):
                self._mlflow.log_batch(self.run_id, params=items[i:i + 100])

        self.guard("params", _log)

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Logs finite scalar metrics at ``step`` (the epoch; 0 for evaluation metrics)."""
        def _log():
            now = int(time.time() * 1000)
            items = [Metric(k, float(v), now, int(step)) for k, v in metrics.items()
                     if v is not None and math.isfinite(float(v))]
            self._mlflow.log_batch(self.run_id, metrics=items)

        self.guard(f"metrics of step {step}", _log)

    def client_call(self, method: str, *args, **kwargs):
        return getattr(self.client, method)(*args, **kwargs)

    def log_datasets(self, name: str, digest: str, source: Mapping, splits: Mapping[str, int]) -> None:
        """Records each split as an input of the run: dataset ``<name>-<split>`` with context
        ``train``/``eval``/``test`` (MLflow merges inputs of one name and digest, so the name carries
        the split), ``source`` (``{"uri": the user's file or pattern, ...}``) and ``digest`` (the
        input's content digest; MLflow keeps 36 characters of it)."""
        def _log():
            inputs = [DatasetInput(
                Dataset(name=f"{name}-{split}", digest=digest[:36], source_type="local", source=json.dumps(dict(source)),
                        profile=json.dumps({"num_rows": int(rows)})),
                tags=[InputTag("mlflow.data.context", split)]) for split, rows in splits.items()]
            self._mlflow.log_inputs(self.run_id, datasets=inputs)

        self.guard("dataset inputs", _log)

    def log_artifact(self, path: str, artifact_path: Optional[str] = None) -> None:
        """Logs a file (or, for a folder, its contents) under ``artifact_path``; a file or folder in a
        bucket (a run's output on ``gs://``) is downloaded first (MLflow logs local files)."""
        if not artifacts.is_object_store(path):
            method = "log_artifacts" if os.path.isdir(path) else "log_artifact"
            self.guard(f"artifact {os.path.basename(path)}", self.client_call, method, self.run_id, path,
                       artifact_path)
            return
        with tempfile.TemporaryDirectory(prefix="tfflows-artifact-") as tmp:
            local = self.guard(f"artifact {os.path.basename(path)}", artifacts.local_copy, path, tmp)
            if local is not None:
                self.log_artifact(local, artifact_path)

    def log_figure(self, figure, artifact_file: str) -> None:
        """Logs a matplotlib figure as the image ``artifact_file`` (e.g. ``plots/loss_curve.png``)."""
        self.guard(f"figure {artifact_file}", self.client_call, "log_figure", self.run_id, figure, artifact_file)

    def add_to_description(self, text: str) -> None:
        """Appends a paragraph to the run's description (the ``mlflow.note.content`` tag the UI shows)."""
        def _add():
            note = self._mlflow.get_run(self.run_id).data.tags.get("mlflow.note.content", "")
            self._mlflow.set_tag(self.run_id, "mlflow.note.content", f"{note}\n\n{text}".strip()[:5000])

        self.guard("the run description", _add)

    def set_tags(self, tags: Mapping[str, object]) -> None:
        for key, value in tags.items():
            self.guard(f"tag {key}", self.client_call, "set_tag", self.run_id, key, str(value)[:5000])

    def end(self, status: str = "FINISHED") -> None:
        """Marks a run this tracker opened FINISHED (or FAILED); one line for what was not logged."""
        if self.run_id:
            self.guard("run end", self.client_call, "set_terminated", self.run_id, status)
        self.report()

    def report(self) -> None:
        if self.not_logged and self.config.active:
            logger.warning("MLflow: %d item(s) of the %s were NOT logged: %s", len(self.not_logged),
                           self.what, ", ".join(dict.fromkeys(self.not_logged)))
