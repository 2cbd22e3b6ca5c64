"""Checks of infra/: compose, Kubernetes, schedules, the MLflow image's entry point, and a real
MLflow server on PostgreSQL (the backend infra/ deploys).

No Docker engine, Kubernetes cluster or Airflow is needed: files are parsed and checked
structurally, shell pieces run with stand-ins for the programs they call, the Airflow DAG is
executed against a small recording stub of the two Airflow names it imports (unless Airflow
itself is installed), and `docker compose config` runs only where a compose client exists.
The `slow` tests start real `mlflow server` processes on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
import textwrap
import types
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


def _pod_specs(doc: dict) -> list[dict]:
    kind = doc["kind"]
    if kind in {"Deployment", "StatefulSet", "Job", "DaemonSet"}:
        return [doc["spec"]["template"]["spec"]]
    if kind == "CronJob":
        return [doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    return []


def _containers(doc: dict) -> list[dict]:
    return [
        c for spec in _pod_specs(doc)
        for c in spec.get("containers", []) + spec.get("initContainers", [])
    ]


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
    assert "mc mb --ignore-existing" in "\n".join(bucket["command"])
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
# Kubernetes
# ------------------------------------------------------------------------------------------


def test_k8s_docs_have_identity():
    docs = _k8s_docs()
    assert len(docs) >= 10
    for path, doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), path
        assert doc.get("metadata", {}).get("name"), f"{path}: {doc.get('kind')} without a name"


def test_k8s_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    assert kustomization["namespace"] == "tfflows"


def test_k8s_expected_workloads():
    kinds = {(doc["kind"], doc["metadata"]["name"]) for _, doc in _k8s_docs()}
    for expected in [
        ("StatefulSet", "postgres"), ("Service", "postgres"),
        ("Deployment", "minio"), ("Service", "minio"), ("Job", "minio-create-bucket"),
        ("Deployment", "mlflow"), ("Service", "mlflow"),
        ("Deployment", "tf-serving"), ("Service", "tf-serving"),
        ("CronJob", "tfflows-pipeline"), ("PersistentVolumeClaim", "tfflows-output"),
    ]:
        assert expected in kinds, expected


def test_k8s_images_pinned():
    for path, doc in _k8s_docs():
        for container in _containers(doc):
            image = container["image"]
            assert "@sha256:" in image or (":" in image and not image.endswith(":latest")), (
                f"{path}: {container['name']} image {image!r} is not pinned to a tag"
            )


def test_k8s_secrets_only_through_secret_key_refs():
    referenced = set()
    for path, doc in _k8s_docs():
        for container in _containers(doc):
            defined = set()
            for var in container.get("env", []):
                name = var["name"]
                if "valueFrom" in var:
                    ref = var["valueFrom"].get("secretKeyRef")
                    if ref:
                        referenced.add(ref["name"])
                        assert ref.get("key"), f"{path}: {name} secretKeyRef without key"
                elif SECRET_NAME.search(name):
                    pytest.fail(f"{path}: {container['name']} sets {name} without secretKeyRef")
                else:
                    value = str(var.get("value", ""))
                    # $(VAR) may only use variables defined earlier in the same list.
                    for used in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value):
                        assert used in defined, f"{path}: {name} uses $({used}) before it is set"
                    assert not _literal_secrets(f"{name}={value}"), f"{path}: {name}"
                defined.add(name)
    assert {"tfflows-postgres", "tfflows-minio", "tfflows-mlflow",
            "tfflows-pipeline-mlflow"} <= referenced
    readme = README.read_text()
    for secret in referenced:
        assert re.search(rf"kubectl (-n \S+ )?create secret generic {secret}\b", readme), (
            f"README.md must show how to create secret {secret}"
        )


def test_k8s_services_select_their_pods():
    docs = [doc for _, doc in _k8s_docs()]
    pod_labels = [
        doc["spec"]["template"]["metadata"]["labels"] for doc in docs
        if doc["kind"] in {"Deployment", "StatefulSet"}
    ]
    for doc in docs:
        if doc["kind"] == "Service":
            selector = doc["spec"]["selector"]
            assert any(selector.items() <= labels.items() for labels in pod_labels), (
                f"Service {doc['metadata']['name']} selects no pod"
            )
    for doc in docs:
        if doc["kind"] in {"Deployment", "StatefulSet"}:
            assert doc["spec"]["selector"]["matchLabels"].items() <= (
                doc["spec"]["template"]["metadata"]["labels"].items()
            )


def test_k8s_mlflow_and_serving():
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in _k8s_docs()}
    (mlflow,) = _containers(docs["Deployment", "mlflow"])
    assert "--app-name=basic-auth" in mlflow["args"]
    env = {v["name"]: v for v in mlflow["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"].startswith("postgresql+psycopg://$(DB_USER)")
    (serving,) = _containers(docs["Deployment", "tf-serving"])
    assert serving["image"].startswith("tensorflow/serving:")
    assert {"name": "MODEL_NAME", "value": "tfflows"} in serving["env"]
    (mount,) = serving["volumeMounts"]
    assert (mount["mountPath"], mount["subPath"], mount["readOnly"]) == (
        "/models/tfflows", "serving", True)
    assert 8501 in [p["containerPort"] for p in serving["ports"]]


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


def test_k8s_cronjob_runs_the_cli():
    cron = next(d for _, d in _k8s_docs() if d["kind"] == "CronJob")
    _check_cron_fields(cron["spec"]["schedule"].split())
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = _containers(cron)
    argv = container["command"] + container["args"]
    assert argv[:2] == ["tfflows", "run"]
    assert any(a.startswith("--config=") for a in argv)
    assert "tracking.uri=http://mlflow:5000" in argv


def test_kubeflow_recurring_run_with_stub_client(tmp_path):
    module = runpy.run_path(str(K8S / "kubeflow" / "recurring_run.py"))
    calls = []

    class StubClient:
        def get_experiment(self, experiment_name):
            calls.append(("get_experiment", experiment_name))
            raise ValueError("no such experiment")

        def create_experiment(self, name):
            calls.append(("create_experiment", name))
            return types.SimpleNamespace(experiment_id="exp-1")

        def create_recurring_run(self, **kwargs):
            calls.append(("create_recurring_run", kwargs))
            return types.SimpleNamespace(recurring_run_id="rr-1")

    run = module["schedule_recurring_run"](
        StubClient(), package_path="spec.json", experiment_name="tfflows",
        job_name="tfflows-daily", cron="0 30 2 * * *", params={"a": "1"},
    )
    assert run.recurring_run_id == "rr-1"
    kwargs = calls[-1][1]
    assert kwargs["experiment_id"] == "exp-1" and kwargs["max_concurrency"] == 1
    assert kwargs["pipeline_package_path"] == "spec.json" and kwargs["no_catchup"] is True
    with pytest.raises(ValueError, match="6 fields"):
        module["check_kfp_cron"]("30 2 * * *")
    # The keyword arguments exist on the installed kfp.Client.
    kfp = pytest.importorskip("kfp")
    import inspect

    accepted = inspect.signature(kfp.Client.create_recurring_run).parameters
    assert set(kwargs) <= set(accepted)


# ------------------------------------------------------------------------------------------
# Airflow DAG (real Airflow when installed, else a recording stub of the names it imports)
# ------------------------------------------------------------------------------------------


def _airflow_stub(variant: str) -> tuple[dict[str, types.ModuleType], list]:
    created: list = []

    class DAG:
        _current = None

        def __init__(self, dag_id, **kwargs):
            self.dag_id, self.kwargs, self.tasks = dag_id, kwargs, []

        def __enter__(self):
            DAG._current = self
            return self

        def __exit__(self, *exc):
            DAG._current = None

    class BashOperator:
        def __init__(self, task_id, bash_command, **kwargs):
            assert DAG._current is not None, "operator created outside the DAG context"
            self.task_id, self.bash_command, self.kwargs = task_id, bash_command, kwargs
            DAG._current.tasks.append(self)
            created.append(self)

    airflow = types.ModuleType("airflow")
    airflow.__path__ = []
    modules = {"airflow": airflow}
    if variant == "airflow3":
        sdk = types.ModuleType("airflow.sdk")
        sdk.DAG = DAG
        bash_module = types.ModuleType("airflow.providers.standard.operators.bash")
        bash_module.BashOperator = BashOperator
        for name in ["airflow.providers", "airflow.providers.standard",
                     "airflow.providers.standard.operators"]:
            package = types.ModuleType(name)
            package.__path__ = []
            modules[name] = package
        modules |= {"airflow.sdk": sdk, bash_module.__name__: bash_module}
    else:
        airflow.DAG = DAG
        operators = types.ModuleType("airflow.operators")
        operators.__path__ = []
        bash_module = types.ModuleType("airflow.operators.bash")
        bash_module.BashOperator = BashOperator
        modules |= {"airflow.operators": operators, "airflow.operators.bash": bash_module}
    return modules, created


def _render(template: str, variables: dict[str, str], login="pipeline", password="pw") -> str:
    import jinja2

    class _Values:
        def get(self, key, default=None):
            return variables.get(key, default)

    context = {
        "var": types.SimpleNamespace(value=_Values()),
        "conn": types.SimpleNamespace(
            tfflows_mlflow=types.SimpleNamespace(login=login, password=password)),
    }
    return jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(template).render(
        context)


def _airflow_installed() -> bool:
    try:
        import airflow  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("variant", ["airflow2", "airflow3"])
def test_airflow_dag_with_stub(variant, monkeypatch):
    if _airflow_installed():
        pytest.skip("Airflow is installed: test_airflow_dag_with_real_airflow checks the DAG")
    modules, created = _airflow_stub(variant)
    for name in list(sys.modules):
        if name == "airflow" or name.startswith("airflow."):
            monkeypatch.delitem(sys.modules, name)
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    namespace = runpy.run_path(str(SCHEDULE / "airflow_dag.py"))
    dag = namespace["dag"]
    assert dag.dag_id == "tfflows_daily"
    assert dag.kwargs["schedule"] == "@daily"
    assert dag.kwargs["catchup"] is False and dag.kwargs["max_active_runs"] == 1
    assert dag.kwargs["start_date"].tzinfo is not None
    (task,) = created
    assert dag.tasks == [task] and task.task_id == "tfflows_run"
    assert task.kwargs["append_env"] is True

    script = _render(task.bash_command, {})
    lines = [ln for ln in script.splitlines() if ln.strip()]
    assert lines[0] == "set -euo pipefail"
    assert shlex.split(lines[1]) == [
        "tfflows", "run", "--config", "/etc/tfflows/config.yaml", "--output", "/var/lib/tfflows"]
    script = _render(task.bash_command, {
        "tfflows_config": "/cfg/a b.yaml", "tfflows_output": "/out",
        "tfflows_tracking_uri": "http://mlflow:5000", "tfflows_bin": "/opt/tfflows/.venv/bin/tfflows",
    })
    assert shlex.split(script.splitlines()[1]) == [
        "/opt/tfflows/.venv/bin/tfflows", "run", "--config", "/cfg/a b.yaml", "--output", "/out",
        "--set", "tracking.uri=http://mlflow:5000"]
    env = {k: _render(v, {}) for k, v in task.kwargs["env"].items()}
    assert env == {"MLFLOW_TRACKING_USERNAME": "pipeline", "MLFLOW_TRACKING_PASSWORD": "pw"}
    # The rendered script is valid bash.
    subprocess.run(["bash", "-n", "-c", script], check=True)


def test_airflow_dag_with_real_airflow():
    if not _airflow_installed():
        pytest.skip("apache-airflow is not installed (not a project dependency); the DAG is "
                    "checked against a recording stub in test_airflow_dag_with_stub")
    from airflow.models import DagBag

    bag = DagBag(dag_folder=str(SCHEDULE / "airflow_dag.py"), include_examples=False)
    assert bag.import_errors == {}
    assert "tfflows_daily" in bag.dags


# ------------------------------------------------------------------------------------------
# Single-machine cron
# ------------------------------------------------------------------------------------------


def _cron_entries() -> list[str]:
    entries = []
    for line in (SCHEDULE / "crontab").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or re.match(r"^[A-Z_]+=", stripped):
            continue
        entries.append(stripped)
    return entries


def test_crontab_line_parses():
    (entry,) = _cron_entries()
    fields = entry.split(None, 5)
    _check_cron_fields(fields[:5])
    command = fields[5]
    assert "%" not in command, "unescaped % in a crontab command becomes a newline"
    argv = shlex.split(command)
    assert argv[0].endswith("flock") and argv[1] == "-n"
    assert argv[3].endswith("run_pipeline.sh")
    assert argv[-3:] == [">>", "/var/log/tfflows/run.log", "2>&1"]


def _localised_cron_command(tmp_path: Path) -> tuple[str, Path]:
    (entry,) = _cron_entries()
    command = entry.split(None, 5)[5]
    log = tmp_path / "log" / "run.log"
    log.parent.mkdir()
    command = (command.replace("/usr/bin/flock", shutil.which("flock") or "flock")
               .replace("/tmp/tfflows-run.lock", str(tmp_path / "run.lock"))
               .replace("/opt/tfflows/infra/schedule/run_pipeline.sh",
                        str(SCHEDULE / "run_pipeline.sh"))
               .replace("/var/log/tfflows/run.log", str(log)))
    return command, log


@pytest.mark.skipif(shutil.which("flock") is None, reason="flock (util-linux) not installed")
def test_cron_command_runs_once_at_a_time(tmp_path):
    fake = tmp_path / "tfflows"
    fake.write_text('#!/bin/sh\necho "fake tfflows $*"\necho "user=$MLFLOW_TRACKING_USERNAME"\n')
    fake.chmod(0o755)
    env_file = tmp_path / "env"
    env_file.write_text(
        f"TFFLOWS_BIN={fake}\nTFFLOWS_CONFIG=/cfg.yaml\nTFFLOWS_OUTPUT={tmp_path / 'out'}\n"
        "TFFLOWS_TRACKING_URI=http://127.0.0.1:5000\nMLFLOW_TRACKING_USERNAME=pipeline\n"
    )
    command, log = _localised_cron_command(tmp_path)
    env = {"PATH": os.environ["PATH"], "TFFLOWS_ENV_FILE": str(env_file)}
    subprocess.run(["bash", "-c", command], env=env, check=True, timeout=60)
    text = log.read_text()
    assert (f"fake tfflows run --config /cfg.yaml --output {tmp_path / 'out'} "
            "--set tracking.uri=http://127.0.0.1:5000") in text
    assert "user=pipeline" in text and "exit status 0" in text
    # While another run holds the lock (flock(1) uses flock(2), as fcntl.flock does), the next
    # one exits at once without running.
    import fcntl

    before = log.read_text()
    with open(tmp_path / "run.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        second = subprocess.run(["bash", "-c", command], env=env, timeout=60)
    assert second.returncode != 0
    assert log.read_text() == before
    # A failing run's status reaches cron (and the log).
    fake.write_text("#!/bin/sh\nexit 3\n")
    third = subprocess.run(["bash", "-c", command], env=env, timeout=60)
    assert third.returncode == 3 and "exit status 3" in log.read_text()


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
