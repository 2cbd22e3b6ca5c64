"""MLflow logging of one training run; never lets a tracking failure stop the training.

`RunTracker` wraps an `mlflow.tracking.MlflowClient` bound to the configured URI (no global
MLflow state is touched). Every call is guarded: the first failure disables the tracker and logs
one warning saying what was not logged; later calls are counted and listed in `not_logged`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import urllib.error
import urllib.request
from typing import Dict, Iterator, List, Mapping, Optional

from tfflows.components.train.config import TrackingConfig

__all__ = ["RunTracker", "flatten_params"]

logger = logging.getLogger("tfflows.train")


@contextlib.contextmanager
def _http_env(timeout_s: float) -> Iterator[None]:
    """MLflow's HTTP retry/timeout settings for the duration of a call (restored after)."""
    values = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, int(timeout_s)))}
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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


class RunTracker:
    """One MLflow run per training (re-opened when a resumed training passes its id).

    Args:
      config: the tracking configuration; an inactive one makes every method a no-op.
      run_id: an existing run to continue (a resumed training); None creates a run.
    """

    def __init__(self, config: TrackingConfig, run_id: Optional[str] = None):
        self.config = config
        self.run_id: Optional[str] = None
        self.not_logged: List[str] = []
        self._client = None
        self._failed = False
        if not config.active:
            return
        if not self._reachable():
            return
        self._guard("run creation", self._start, run_id)

    @property
    def enabled(self) -> bool:
        return self._client is not None and self.run_id is not None and not self._failed

    # ----- internals --------------------------------------------------------------------
    def _reachable(self) -> bool:
        uri = self.config.uri
        if not uri.startswith(("http://", "https://")):
            return True
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=self.config.timeout_s):
                return True
        except (urllib.error.URLError, OSError, ValueError) as err:
            self._fail("everything (params, metrics, plots, model artifacts)",
                       f"tracking server {uri} is unreachable ({err})")
            return False

    def _fail(self, what: str, why: str) -> None:
        self.not_logged.append(what)
        if not self._failed:
            logger.warning("MLflow tracking disabled: %s; NOT logged: %s. Training goes on.", why, what)
        self._failed = True

    def _guard(self, what: str, fn, *args, **kwargs):
        if self._failed:
            self.not_logged.append(what)
            return None
        try:
            with _http_env(self.config.timeout_s):
                return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - tracking must never stop training
            self._fail(what, f"{type(err).__name__}: {err}")
            return None

    def _artifact_location(self) -> Optional[str]:
        if self.config.artifact_location:
            return self.config.artifact_location
        uri = self.config.uri
        if uri.startswith("sqlite:///"):
            db_path = uri[len("sqlite:///"):]
            return os.path.join(os.path.dirname(os.path.abspath(db_path)), "mlartifacts")
        return None

    def _start(self, run_id: Optional[str]) -> None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.config.uri)
        if run_id:
            run = client.get_run(run_id)
            if run.info.status != "RUNNING":
                client.update_run(run_id, status="RUNNING")
            self._client, self.run_id = client, run_id
            return
        experiment = client.get_experiment_by_name(self.config.experiment)
        if experiment is None:
            experiment_id = client.create_experiment(
                self.config.experiment, artifact_location=self._artifact_location())
        else:
            experiment_id = experiment.experiment_id
        run = client.create_run(experiment_id, run_name=self.config.run_name)
        self._client, self.run_id = client, run.info.run_id

    # ----- public -------------------------------------------------------------------------
    def log_params(self, params: Mapping) -> None:
        """Logs (nested) hyper-parameters; values become strings."""
        from mlflow.entities import Param

        flat = flatten_params(params)
        if not self.enabled:
            if self.config.active:
                self.not_logged.append("params")
            return

        def _log():
            existing = self._client.get_run(self.run_id).data.params
            items = [Param(k, v) for k, v in sorted(flat.items()) if k not in existing]
            for i in range(0, len(items), 100):
                self._client.log_batch(self.run_id, params=items[i:i + 100])

        self._guard("params", _log)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Logs scalar metrics at ``step`` (the epoch)."""
        from mlflow.entities import Metric
        import time

        if not self.enabled:
            if self.config.active:
                self.not_logged.append(f"metrics of step {step}")
            return
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step)) for k, v in metrics.items()]
        self._guard(f"metrics of step {step}", self._client.log_batch, self.run_id, metrics=items)

    def log_artifact(self, path: str, artifact_path: Optional[str] = None) -> None:
        """Logs a file (or, for a folder, its contents) under ``artifact_path``."""
        if not self.enabled:
            if self.config.active:
                self.not_logged.append(f"artifact {os.path.basename(path)}")
            return
        fn = self._client.log_artifacts if os.path.isdir(path) else self._client.log_artifact
        self._guard(f"artifact {os.path.basename(path)}", fn, self.run_id, path, artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if self.enabled:
            for key, value in tags.items():
                self._guard(f"tag {key}", self._client.set_tag, self.run_id, key, str(value))

    def end(self, status: str = "FINISHED") -> None:
        """Marks the run FINISHED (or FAILED); logs the summary of what was not logged."""
        if self.enabled:
            self._guard("run end", self._client.set_terminated, self.run_id, status)
        if self.not_logged and self.config.active:
            logger.warning("MLflow: %d item(s) were NOT logged: %s", len(self.not_logged),
                           ", ".join(dict.fromkeys(self.not_logged)))
