"""Checks of infra/: every file (YAML, no secrets, no registry hosts), compose, the MLflow
image's entry point, and a real MLflow server on PostgreSQL (the backend infra/ deploys), plus
the helpers the other infra tests share. Kubernetes: tests/test_infra_k8s.py; schedules (cron,
Airflow): tests/test_infra_schedule.py.

No Docker engine or Kubernetes cluster is needed: files are parsed and checked structurally,
shell pieces run with stand-ins for the programs they call, and `docker compose config` runs
only where a compose client exists. The `slow` tests start real `mlflow server` processes on
127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import urllib.parse
import uuid
from pathlib import Path

import pytest
import yaml

from tests import mlflow_server as ms

REPO = Path(__file__).resolve().parents[1]
INFRA = REPO / "infra"
COMPOSE_DIR = INFRA / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
K8S = INFRA / "k8s"
SCHEDULE = INFRA / "schedule"
ENTRYPOINT = INFRA / "docker" / "mlflow" / "docker-entrypoint.sh"
README = INFRA / "README.md"

YAML_FILES = sorted(p for p in INFRA.rglob("*") if p.suffix in {".yml", ".yaml"})
TEXT_FILES = sorted(
    p for p in INFRA.rglob("*")
    if p.is_file() and "__pycache__" not in p.parts and p.suffix not in {".pyc"}
)

# Environment names that carry secrets (or, for URIs, may embed them).
SECRET_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN|_USER$")
REQUIRED_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):\?[^}]+\}")
ANY_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?+])?([^}]*)\}")


def _compose_code() -> str:
    """The compose file without its comment lines."""
    lines = COMPOSE_FILE.read_text().splitlines()
    return "\n".join(ln for ln in lines if not ln.lstrip().startswith("#"))


def _compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _k8s_docs() -> list[tuple[Path, dict]]:
    docs = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path, doc))
    return docs


def _pod_templates(doc: dict) -> list[dict]:
    """The pod templates of a workload (a TFJob: one per replica type)."""
    kind = doc["kind"]
    if kind in {"Deployment", "StatefulSet", "Job", "DaemonSet"}:
        return [doc["spec"]["template"]]
    if kind == "CronJob":
        return [doc["spec"]["jobTemplate"]["spec"]["template"]]
    if kind == "TFJob":
        return [replica["template"] for replica in doc["spec"]["tfReplicaSpecs"].values()]
    return []


def _pod_specs(doc: dict) -> list[dict]:
    return [template["spec"] for template in _pod_templates(doc)]


def _containers(doc: dict) -> list[dict]:
    return [
        c for spec in _pod_specs(doc)
        for c in spec.get("containers", []) + spec.get("initContainers", [])
    ]


def _check_cron_fields(fields: list[str]) -> None:
    ranges = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
    assert len(fields) == 5, fields
    for field, (low, high) in zip(fields, ranges):
        for part in field.split(","):
            base, _, step = part.partition("/")
            assert step == "" or step.isdigit(), field
            if base == "*":
                continue
            for number in base.split("-"):
                assert number.isdigit() and low <= int(number) <= high, f"{field} out of range"


# ------------------------------------------------------------------------------------------
# Every YAML file
# ------------------------------------------------------------------------------------------


def test_infra_has_the_expected_files():
    for rel in [
        "compose/docker-compose.yml", "compose/.env.example", "docker/mlflow/Dockerfile",
        "k8s/kustomization.yaml", "k8s/pipeline-cronjob.yaml", "schedule/airflow_dag.py",
        "schedule/crontab", "README.md",
    ]:
        assert (INFRA / rel).is_file(), rel


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_every_yaml_file_parses(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path} holds no YAML document"
    assert all(isinstance(d, dict) for d in docs)


# ------------------------------------------------------------------------------------------
# No secret values committed
# ------------------------------------------------------------------------------------------

_ASSIGNMENT = re.compile(
    r"(?i)(?<![\w${(-])[\w-]*(?:password|passwd|secret|access[_-]key|token)[\w-]*"
    r"[\"']?[ \t]*[:=][ \t]*[\"']?([^\s\"',}#]*)"
)
_URI_USERINFO = re.compile(r"[a-z][a-z0-9+.-]*://([^/\s:@]+):([^/\s@]+)@", re.IGNORECASE)


def _literal_secrets(text: str) -> list[str]:
    """Secret-looking assignments or URI passwords whose value is a literal, not a reference."""
    found = []
    for match in _ASSIGNMENT.finditer(text):
        value = match.group(1)
        # Empty, a reference ($VAR, ${VAR...}, $(VAR)), a template ({{ }}), a YAML flow
        # mapping (secretKeyRef: {...}) or a placeholder (..., <...>) is not a literal.
        if value == "" or value[0] in "${[" or re.fullmatch(r"\.+|<[^>]*>", value):
            continue
        found.append(match.group(0))
    for match in _URI_USERINFO.finditer(text):
        password = match.group(2)
        if re.fullmatch(r"(\$\{[^}]+\}|\$\([A-Za-z_][A-Za-z0-9_]*\)|PASS(WORD)?|<[^>]*>)", password):
            continue
        found.append(match.group(0))
    return found


def test_literal_secret_detector_catches_plants():
    assert _literal_secrets("POSTGRES_PASSWORD: hunter2")
    assert _literal_secrets("MINIO_ROOT_PASSWORD=abc123")
    assert _literal_secrets("uri: postgresql://mlflow:s3cret@db:5432/mlflow")
    assert _literal_secrets('{"aws_secret_access_key": "AKIAxyz"}')
    assert _literal_secrets("token = abc.def")
    assert not _literal_secrets("POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set it}")
    assert not _literal_secrets("POSTGRES_PASSWORD=")
    assert not _literal_secrets("postgresql+psycopg://$(DB_USER):$(DB_PASSWORD)@db/mlflow")
    assert not _literal_secrets("secretKeyRef: {name: tfflows-postgres, key: password}")


@pytest.mark.parametrize("path", TEXT_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_no_literal_secret_in_infra(path):
    text = path.read_text(errors="replace")
    assert _literal_secrets(text) == [], f"literal secret-looking values in {path}"


def test_no_kubernetes_secret_object_committed():
    for path, doc in _k8s_docs():
        assert doc["kind"] != "Secret", f"{path} commits a Secret; create it with kubectl"


def test_no_registry_host_in_infra():
    # PLATFORM.md: no registry host may appear in the repository. Images are Docker Hub short
    # names (or the locally built tfflows images), retagged per registry with kustomize.
    hosts = re.compile(r"(?i)\b(docker\.io|ghcr\.io|quay\.io|gcr\.io|pkg\.dev|ecr\.|pypi\.org|"
                       r"pythonhosted\.org|registry\.)")
    for path in TEXT_FILES:
        hits = hosts.findall(path.read_text(errors="replace"))
        assert not hits, f"{path} names a registry host: {hits}"


# ------------------------------------------------------------------------------------------
# docker compose
# ------------------------------------------------------------------------------------------

COMPOSE_SERVICES = {"postgres", "minio", "minio-create-bucket", "mlflow", "tf-serving"}


def test_compose_services_present():
    assert COMPOSE_SERVICES <= set(_compose()["services"])


def test_compose_secrets_are_required_env_references():
    services = _compose()["services"]
    checked = 0
    for name, service in services.items():
        env = service.get("environment", {})
        assert isinstance(env, dict), f"{name}: use the mapping form of environment"
        for key, value in env.items():
            value = str(value)
            if SECRET_NAME.search(key):
                assert REQUIRED_REF.fullmatch(value), (
                    f"{name}.{key} must be exactly a ${{VAR:?message}} reference, is {value!r}"
                )
                checked += 1
            userinfo = re.search(r"://(.+)@", value)
            if userinfo:
                leftover = REQUIRED_REF.sub("", userinfo.group(1)).replace(":", "")
                assert leftover == "", f"{name}.{key}: credentials in the URI must be references"
                checked += 1
    assert checked >= 10


def test_compose_every_secret_variable_is_required_not_defaulted():
    for match in ANY_REF.finditer(_compose_code()):
        var, op = match.group(1), match.group(2)
        if SECRET_NAME.search(var):
            assert op == ":?", f"${{{var}...}} must use :? so compose refuses to start without it"


def test_env_example_lists_every_required_variable_without_values():
    required = set(REQUIRED_REF.findall(_compose_code()))
    example = {}
    for line in (COMPOSE_DIR / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            example[key.strip()] = value.strip()
    assert required <= set(example), f"missing from .env.example: {required - set(example)}"
    assert all(v == "" for v in example.values()), "placeholders only in .env.example"
    gitignore = (COMPOSE_DIR / ".gitignore").read_text().split()
    assert ".env" in gitignore


def test_compose_mlflow_auth_postgres_minio():
    services = _compose()["services"]
    mlflow = services["mlflow"]
    command = mlflow["command"]
    assert "--app-name=basic-auth" in command
    assert any(c.startswith("--artifacts-destination=s3://") for c in command)
    assert "--serve-artifacts" in command
    env = mlflow["environment"]
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg://")
    assert env["MLFLOW_BACKEND_STORE_URI"].endswith("@postgres:5432/mlflow")
    assert env["MLFLOW_AUTH_DATABASE_URI"].endswith("@postgres:5432/mlflow_auth")
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert mlflow["depends_on"]["minio-create-bucket"]["condition"] == (
        "service_completed_successfully"
    )
    bucket = services["minio-create-bucket"]
    assert bucket["restart"] == "no"
    # The same MinIO setup script as Kubernetes (tested in tests/test_infra_k8s.py).
    assert bucket["entrypoint"] == ["/bin/sh", "/minio-setup.sh"]
    assert "../k8s/minio-setup.sh:/minio-setup.sh:ro" in bucket["volumes"]
    assert (COMPOSE_DIR / "../k8s/minio-setup.sh").is_file()
    assert env["AWS_ACCESS_KEY_ID"] == bucket["environment"]["MLFLOW_S3_ACCESS_KEY"].replace(
        " (MLflow's MinIO user)", "")
    assert "MINIO_ROOT" not in env["AWS_SECRET_ACCESS_KEY"]
    # The image the compose file builds has what the command needs.
    dockerfile = (INFRA / "docker" / "mlflow" / "Dockerfile").read_text()
    assert '"mlflow[auth]==3.17.2"' in dockerfile
    assert "psycopg[binary]" in dockerfile and "boto3" in dockerfile
    assert (COMPOSE_DIR / mlflow["build"] / "Dockerfile").resolve() == (
        INFRA / "docker" / "mlflow" / "Dockerfile"
    )
    # Published ports stay on loopback.
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_compose_tf_serving_mounts_serving_dir():
    serving = _compose()["services"]["tf-serving"]
    image, _, tag = serving["image"].partition(":")
    assert image == "tensorflow/serving" and tag and tag != "latest"
    assert serving["environment"]["MODEL_NAME"] == "tfflows"
    mounts = [str(v).split(":") for v in serving["volumes"]]
    assert any(
        src.startswith("${TFFLOWS_OUTPUT:?") and src.endswith("}/serving")
        and dst == "/models/tfflows"
        for src, dst, *_ in [(":".join(m[:-2]), m[-2], m[-1]) for m in mounts]
    ), mounts
    assert "127.0.0.1:8501:8501" in serving["ports"]


def test_compose_images_pinned():
    for name, service in _compose()["services"].items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image}"


# Compose variable interpolation (the subset of the compose spec this file uses), to check the
# file resolves with every variable set and refuses when a secret is missing.
def _interpolate(text: str, env: dict[str, str]) -> str:
    pattern = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        var, op, arg = match.groups()
        value = env.get(var)
        missing = value is None or (op is not None and op.startswith(":") and value == "")
        if op in {":?", "?"} and missing:
            raise KeyError(f"required variable {var} is missing a value: {arg}")
        if op in {":-", "-"} and missing:
            return arg
        return value or ""

    return pattern.sub(replace, text)


def _dummy_env() -> dict[str, str]:
    names = set(REQUIRED_REF.findall(_compose_code()))
    return {name: f"dummy-{name.lower()}" for name in names} | {"TFFLOWS_OUTPUT": "/srv/out"}


def test_compose_interpolation_resolves_and_refuses_missing_secret():
    env = _dummy_env()
    rendered = yaml.safe_load(_interpolate(_compose_code(), env))
    mlflow_env = rendered["services"]["mlflow"]["environment"]
    uri = urllib.parse.urlsplit(mlflow_env["MLFLOW_BACKEND_STORE_URI"])
    assert (uri.username, uri.password) == (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"])
    assert rendered["services"]["tf-serving"]["volumes"][0] == "/srv/out/serving:/models/tfflows:ro"
    for secret in ["POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "MLFLOW_ADMIN_PASSWORD",
                   "MLFLOW_FLASK_SERVER_SECRET_KEY"]:
        for broken in ({k: v for k, v in env.items() if k != secret}, env | {secret: ""}):
            with pytest.raises(KeyError, match=secret):
                _interpolate(_compose_code(), broken)


def _compose_client() -> list[str] | None:
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        probe = subprocess.run(command + ["version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return command
    return None


def test_docker_compose_config_offline(tmp_path):
    command = _compose_client()
    if command is None:
        pytest.skip(
            "no docker compose client here (`docker compose version` and `docker-compose` both "
            "fail; the docker CLI has no compose plugin). The structure, secrets and "
            "interpolation are checked by the other compose tests instead."
        )
    env = {k: v for k, v in os.environ.items() if k != "COMPOSE_FILE"} | _dummy_env()
    done = subprocess.run(
        command + ["-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    env.pop("POSTGRES_PASSWORD")
    refused = subprocess.run(
        command + ["-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )
    assert refused.returncode != 0 and "POSTGRES_PASSWORD" in refused.stderr


# ------------------------------------------------------------------------------------------
# MLflow image entry point
# ------------------------------------------------------------------------------------------


def test_mlflow_entrypoint_writes_auth_config(tmp_path, monkeypatch):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "mlflow").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGV_OUT"\n')
    (fake_bin / "mlflow").chmod(0o755)
    auth_uri = "postgresql+psycopg://mlflow:p%40ss%25word@postgres:5432/mlflow_auth"
    env = {
        "PATH": f"{fake_bin}:{os.environ['PATH']}",
        "ARGV_OUT": str(tmp_path / "argv"),
        "MLFLOW_BACKEND_STORE_URI": "postgresql+psycopg://u:p@postgres:5432/mlflow",
        "MLFLOW_AUTH_DATABASE_URI": auth_uri,
        "MLFLOW_AUTH_CONFIG_DIR": str(tmp_path / "auth"),
    }
    subprocess.run(["sh", str(ENTRYPOINT), "--app-name=basic-auth", "--port=5000"],
                   env=env, check=True, timeout=30)
    assert (tmp_path / "argv").read_text().split() == ["server", "--app-name=basic-auth",
                                                       "--port=5000"]
    ini = tmp_path / "auth" / "basic_auth.ini"
    assert oct(ini.stat().st_mode & 0o777) == "0o600"
    # Read it the way MLflow's auth app does (config.py alone: the auth package's __init__
    # needs Flask-WTF, which only the auth extra installs).
    import importlib.util

    import mlflow

    spec = importlib.util.spec_from_file_location(
        "_mlflow_auth_config", Path(mlflow.__file__).parent / "server" / "auth" / "config.py")
    auth_config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(auth_config)
    read_auth_config = auth_config.read_auth_config

    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(ini))
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_USERNAME", raising=False)
    config = read_auth_config()
    assert config.database_uri == auth_uri
    assert config.admin_username == "admin"
    assert config.default_permission == "READ"

    env.pop("MLFLOW_BACKEND_STORE_URI")
    refused = subprocess.run(["sh", str(ENTRYPOINT)], env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and "MLFLOW_BACKEND_STORE_URI" in refused.stderr


# ------------------------------------------------------------------------------------------
# README
# ------------------------------------------------------------------------------------------


def test_readme_covers_each_piece():
    readme = README.read_text()
    for needle in [
        "docker compose", "kubectl apply -k infra/k8s",
        "docker run -p 8501:8501 -v $OUTPUT/serving:/models/tfflows -e MODEL_NAME=tfflows "
        "tensorflow/serving",
        '"instances"', '"inputs"', '"signature_name"', "crontab", "airflow_dag.py",
        "bash .ci/services.sh",
    ]:
        assert needle in readme, needle
    # Every JSON request body in the README is valid JSON.
    for body in re.findall(r"-d '(\{.*?\})'", readme, flags=re.S):
        json.loads(body)


# ------------------------------------------------------------------------------------------
# Real servers (slow)
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_backend() -> str:
    reason = ms.postgres_unavailable_reason()
    if reason is not None:
        if ms.in_ci():
            pytest.fail(f"CI=true but PostgreSQL is unavailable: {reason}. "
                        ".ci/run must call `bash .ci/services.sh` before pytest.")
        pytest.skip(f"PostgreSQL unavailable (not in CI): {reason}")
    return ms.postgres_uri()


def _get_json(url: str, headers: dict[str, str] | None = None) -> dict:
    status, body = ms.http_get(url, headers)
    assert status == 200, (status, body[:500])
    return json.loads(body)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_mlflow_server_on_postgres_round_trip(postgres_backend, tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    with ms.MlflowServer(postgres_backend, workdir=tmp_path / "server") as server:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        client = MlflowClient(tracking_uri=server.url)
        name = f"tfflows-infra-test-{uuid.uuid4().hex[:8]}"
        experiment_id = client.create_experiment(name)
        run = client.create_run(experiment_id)
        run_id = run.info.run_id
        client.log_param(run_id, "flow", "maf")
        client.log_param(run_id, "hidden_units", "512")
        for step, value in enumerate([3.5, 2.25, 1.125]):
            client.log_metric(run_id, "val_nll", value, step=step)
        artifact = tmp_path / "summary.json"
        artifact.write_text(json.dumps({"bits_per_dim": 1.23}))
        client.log_artifact(run_id, str(artifact), artifact_path="reports")
        client.set_terminated(run_id)

        # Read everything back with plain HTTP through the REST API.
        quoted = urllib.parse.quote(name)
        found = _get_json(f"{server.url}/api/2.0/mlflow/experiments/get-by-name"
                          f"?experiment_name={quoted}")
        assert found["experiment"]["experiment_id"] == experiment_id
        got = _get_json(f"{server.url}/api/2.0/mlflow/runs/get?run_id={run_id}")["run"]
        params = {p["key"]: p["value"] for p in got["data"]["params"]}
        assert params == {"flow": "maf", "hidden_units": "512"}
        metrics = {m["key"]: m["value"] for m in got["data"]["metrics"]}
        assert metrics == {"val_nll": 1.125}
        assert got["info"]["status"] == "FINISHED"
        history = _get_json(f"{server.url}/api/2.0/mlflow/metrics/get-history"
                            f"?run_id={run_id}&metric_key=val_nll")["metrics"]
        assert [m["value"] for m in sorted(history, key=lambda m: m["step"])] == [3.5, 2.25, 1.125]
        listing = _get_json(f"{server.url}/api/2.0/mlflow/artifacts/list"
                            f"?run_id={run_id}&path=reports")
        assert [f["path"] for f in listing["files"]] == ["reports/summary.json"]
        # The artifact went through the server's proxy into its artifact destination.
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="reports/summary.json", dst_path=str(tmp_path / "dl"),
            tracking_uri=server.url)
        assert json.loads(Path(local).read_text()) == {"bits_per_dim": 1.23}
        # The run really lives in PostgreSQL.
        import psycopg

        scheme, sep, rest = postgres_backend.partition("://")
        with psycopg.connect(scheme.split("+")[0] + sep + rest) as conn:
            row = conn.execute("SELECT status FROM runs WHERE run_uuid = %s", (run_id,)).fetchone()
        assert row == ("FINISHED",)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_mlflow_basic_auth_server(tmp_path):
    reason = ms.auth_app_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    password = uuid.uuid4().hex
    # Started through the MLflow image's entry point, as compose and k8s start it.
    with ms.MlflowServer(workdir=tmp_path / "server", auth_admin_password=password,
                         entrypoint=ENTRYPOINT) as server:
        assert (tmp_path / "server" / "auth" / "basic_auth.ini").is_file()
        url = f"{server.url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"
        assert ms.http_get(url)[0] == 401
        assert ms.http_get(url, ms.basic_auth_header("admin", "wrong"))[0] == 401
        status, body = ms.http_get(url, ms.basic_auth_header("admin", password))
        assert status == 200, body[:500]
        assert json.loads(body)["experiment"]["name"] == "Default"
        # The mlflow client authenticates with MLFLOW_TRACKING_USERNAME/PASSWORD.
        env = dict(os.environ, MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=password,
                   MLFLOW_TRACKING_URI=server.url)
        code = textwrap.dedent("""
            import mlflow
            with mlflow.start_run() as run:
                mlflow.log_param("p", "1")
            print(run.info.run_id)
        """)
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        run_id = done.stdout.strip().splitlines()[-1]
        got = json.loads(ms.http_get(f"{server.url}/api/2.0/mlflow/runs/get?run_id={run_id}",
                                     ms.basic_auth_header("admin", password))[1])
        assert got["run"]["data"]["params"] == [{"key": "p", "value": "1"}]
