"""Start and stop real services for tests: an ``mlflow server`` subprocess and PostgreSQL.

Plain functions and one context-manager class, no pytest import, so notebooks, benchmarks and
scripts can use them too::

    from tests.mlflow_server import MlflowServer, postgres_uri

    with MlflowServer(backend_store_uri=postgres_uri()) as server:
        mlflow.set_tracking_uri(server.url)
        ...

Everything binds to 127.0.0.1 on a free port. The server is started in its own process group
and stopped by signalling that group (the id this module recorded), so its uvicorn/gunicorn
workers end with it. Start-up takes 30-90 s on two busy cores: :meth:`MlflowServer.start`
polls ``/health`` instead of sleeping a fixed time.

PostgreSQL comes from ``.ci/services.sh`` (install + start + role + database), which writes a
connection URI to ``/tmp/tfflows_pg_uri`` (override with ``TFFLOWS_PG_URI_FILE``); the
``TFFLOWS_PG_URI`` environment variable, when set, takes precedence.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

__all__ = [
    "MlflowServer",
    "MlflowServerError",
    "auth_app_unavailable_reason",
    "free_port",
    "in_ci",
    "postgres_unavailable_reason",
    "postgres_uri",
    "preferred_backend_uri",
    "start_postgres",
    "stop_postgres",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVICES_SCRIPT = REPO_ROOT / ".ci" / "services.sh"
DEFAULT_PG_URI_FILE = "/tmp/tfflows_pg_uri"
LOOPBACK = "127.0.0.1"


class MlflowServerError(RuntimeError):
    """The server did not come up (or died); the message carries the tail of its log."""


def in_ci() -> bool:
    """True when running under CI (``CI=true``), where missing services must fail, not skip."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def basic_auth_header(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 10.0):
    """``(status, body bytes)`` of a GET; HTTP errors are returned, not raised."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


def _pg_uri_file() -> Path:
    return Path(os.environ.get("TFFLOWS_PG_URI_FILE", DEFAULT_PG_URI_FILE))


def postgres_uri() -> str | None:
    """The SQLAlchemy URI of the test database, or None when none is configured."""
    uri = os.environ.get("TFFLOWS_PG_URI", "").strip()
    if uri:
        return uri
    path = _pg_uri_file()
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def postgres_unavailable_reason(uri: str | None = None, timeout: float = 5.0) -> str | None:
    """None when the test database accepts a connection, else a sentence saying why not."""
    uri = uri or postgres_uri()
    if not uri:
        return (
            f"no PostgreSQL URI: neither TFFLOWS_PG_URI nor {_pg_uri_file()} is set; "
            "run `bash .ci/services.sh` first"
        )
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (requirements.txt: psycopg[binary])"
    # psycopg takes libpq URIs; drop SQLAlchemy's "+driver" suffix.
    scheme, sep, rest = uri.partition("://")
    libpq_uri = scheme.split("+", 1)[0] + sep + rest
    try:
        with psycopg.connect(libpq_uri, connect_timeout=int(max(timeout, 1))) as conn:
            conn.execute("SELECT 1")
    except Exception as err:  # noqa: BLE001 - any failure means "unavailable"
        return f"PostgreSQL at the configured URI is not reachable ({type(err).__name__}: {err})"
    return None


def preferred_backend_uri() -> str | None:
    """The PostgreSQL test URI when that database answers, else None (MlflowServer: SQLite)."""
    uri = postgres_uri()
    return uri if uri and postgres_unavailable_reason(uri) is None else None


def start_postgres(timeout: float = 300.0) -> str:
    """Run ``.ci/services.sh`` (install if needed, start, create role/db) and return the URI."""
    subprocess.run(["bash", str(SERVICES_SCRIPT)], check=True, timeout=timeout)
    uri = postgres_uri()
    if not uri:
        raise RuntimeError(f"{SERVICES_SCRIPT} ran but wrote no URI to {_pg_uri_file()}")
    return uri


def stop_postgres(timeout: float = 120.0) -> None:
    """Stop the cluster that ``.ci/services.sh`` started."""
    subprocess.run(["bash", str(SERVICES_SCRIPT), "stop"], check=True, timeout=timeout)


# --------------------------------------------------------------------------------------------
# MLflow tracking server
# --------------------------------------------------------------------------------------------


def auth_app_unavailable_reason() -> str | None:
    """None when ``mlflow server --app-name basic-auth`` can start in this environment.

    The auth app needs MLflow's ``auth`` extra (``Flask-WTF``): ``mlflow[auth]==3.17.2``.
    """
    try:
        import flask_wtf  # noqa: F401
    except ImportError:
        return (
            "mlflow's basic-auth app needs Flask-WTF, which is not installed: add "
            "`mlflow[auth]==3.17.2` (or `Flask-WTF<2`) to requirements.txt"
        )
    return None


class MlflowServer:
    """A real ``mlflow server`` on 127.0.0.1, as a subprocess.

    Args:
        backend_store_uri: SQLAlchemy URI of the tracking store; default a fresh SQLite file in
            ``workdir``.
        workdir: where the SQLite file, served artifacts, auth config and the log go; default a
            new temporary directory, removed on :meth:`stop`.
        auth_admin_password: when given, start the ``basic-auth`` app with admin user
            ``admin_username`` and this password (user store in SQLite under ``workdir``).
        port: default a free port.
        workers: server worker processes (1 keeps start-up light on small machines).
        extra_env: added to the server's environment.
        entrypoint: run the server through this shell script instead of ``python -m mlflow
            server`` (``infra/docker/mlflow/docker-entrypoint.sh``, the MLflow image's entry
            point: it gets the server arguments, writes the auth config from
            ``MLFLOW_AUTH_DATABASE_URI`` and execs ``mlflow server``).
    """

    def __init__(
        self,
        backend_store_uri: str | None = None,
        *,
        workdir: str | os.PathLike[str] | None = None,
        auth_admin_password: str | None = None,
        admin_username: str = "admin",
        port: int | None = None,
        workers: int = 1,
        extra_env: dict[str, str] | None = None,
        entrypoint: str | os.PathLike[str] | None = None,
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="tfflows-mlflow-"))
        self.backend_store_uri = backend_store_uri or f"sqlite:///{self.workdir / 'mlflow.db'}"
        self.auth_admin_password = auth_admin_password
        self.admin_username = admin_username
        self.port = port or free_port()
        self.workers = workers
        self.extra_env = dict(extra_env or {})
        self.entrypoint = entrypoint
        self.log_path = self.workdir / "mlflow-server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def admin_headers(self) -> dict[str, str]:
        if self.auth_admin_password is None:
            return {}
        return basic_auth_header(self.admin_username, self.auth_admin_password)

    def _command_and_env(self) -> tuple[list[str], dict[str, str]]:
        if self.entrypoint is None:
            command = [sys.executable, "-m", "mlflow", "server"]
        else:
            command = ["sh", str(self.entrypoint)]
        command += [
            "--host", LOOPBACK,
            "--port", str(self.port),
            "--workers", str(self.workers),
            "--artifacts-destination", str(self.workdir / "mlartifacts"),
        ]
        env = dict(os.environ)
        # The server execs uvicorn/gunicorn by name: the venv's bin/ must be on PATH.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        # The URI may carry a password: pass it through the environment, not argv.
        env["MLFLOW_BACKEND_STORE_URI"] = self.backend_store_uri
        env.pop("MLFLOW_TRACKING_URI", None)
        if self.auth_admin_password is not None:
            auth_db_uri = f"sqlite:///{self.workdir / 'basic_auth.db'}"
            env["MLFLOW_AUTH_DATABASE_URI"] = auth_db_uri  # read by the image's entry point
            env["MLFLOW_AUTH_CONFIG_DIR"] = str(self.workdir / "auth")
            auth_ini = self.workdir / "basic_auth.ini"
            auth_ini.write_text(
                "[mlflow]\n"
                "default_permission = READ\n"
                f"database_uri = {auth_db_uri}\n"
                f"admin_username = {self.admin_username}\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            )
            auth_ini.chmod(0o600)
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_ini)
            env["MLFLOW_AUTH_ADMIN_USERNAME"] = self.admin_username
            env["MLFLOW_AUTH_ADMIN_PASSWORD"] = self.auth_admin_password
            env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", os.urandom(24).hex())
            command += ["--app-name", "basic-auth"]
        env.update(self.extra_env)
        return command, env

    def start(self, timeout: float = 120.0) -> "MlflowServer":
        """Launch the server and poll ``/health`` until it answers 200 (or fail after timeout)."""
        if self.process is not None:
            raise MlflowServerError("server already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        command, env = self._command_and_env()
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command,
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        delay = 0.25
        while True:
            returncode = self.process.poll()
            if returncode is not None:
                log = self.log_tail()
                self.stop()
                raise MlflowServerError(f"mlflow server exited with code {returncode}:\n{log}")
            try:
                status, _ = http_get(f"{self.url}/health", self.admin_headers, timeout=5)
                if status == 200:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                log = self.log_tail()
                self.stop()
                raise MlflowServerError(
                    f"mlflow server not healthy after {timeout:.0f} s:\n{log}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the server's process group, SIGKILL it after ``timeout``; tidy up."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            pgid = process.pid  # start_new_session: the group id is the server's pid
            try:
                os.killpg(pgid, signal.SIGTERM)
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(pgid, signal.SIGKILL)
                process.wait(timeout=timeout)
            except ProcessLookupError:
                pass
        if process is not None:
            # Workers that outlived the parent are in the same group.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "MlflowServer":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
