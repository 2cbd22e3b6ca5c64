"""Schedules in infra/schedule: the Airflow DAG (argument list, no shell; a real `airflow dags
test` in Airflow's own venv) and the single-machine cron line (lock under the output folder).

The Airflow venv is `.venv-airflow`, made by `bash .ci/airflow.sh` (CI runs it); without it the
real-Airflow test is skipped locally and fails in CI.
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
from pathlib import Path

import pytest

from tests import mlflow_server as ms
from tests.test_infra import REPO, SCHEDULE, _check_cron_fields

DAG_FILE = SCHEDULE / "airflow_dag.py"
AIRFLOW = REPO / ".venv-airflow" / "bin" / "airflow"
TFFLOWS = Path(sys.executable).parent / "tfflows"
# A Variable value that would run a command if it ever reached a shell.
HOSTILE = '/cfg/a b.yaml"; touch {marker}; echo "$(touch {marker})'


# ------------------------------------------------------------------------------------------
# Airflow DAG: structure and argument list, with a recording stub of the names it imports
# ------------------------------------------------------------------------------------------


def _airflow_stub() -> tuple[dict[str, types.ModuleType], list]:
    created: list = []

    class Connection:
        login, password = "pipeline", "p w'\"$x"

        @staticmethod
        def get(conn_id):
            assert conn_id == "tfflows_mlflow"
            return Connection

    class DAG:
        _current = None

        def __init__(self, dag_id, **kwargs):
            self.dag_id, self.kwargs, self.tasks = dag_id, kwargs, []

        def __enter__(self):
            DAG._current = self
            return self

        def __exit__(self, *exc):
            DAG._current = None

    class PythonOperator:
        def __init__(self, task_id, python_callable, op_kwargs, **kwargs):
            assert DAG._current is not None, "operator created outside the DAG context"
            self.task_id, self.python_callable, self.op_kwargs = task_id, python_callable, op_kwargs
            DAG._current.tasks.append(self)
            created.append(self)

    modules = {}
    for name in ["airflow", "airflow.providers", "airflow.providers.standard",
                 "airflow.providers.standard.operators"]:
        modules[name] = types.ModuleType(name)
        modules[name].__path__ = []
    modules["airflow.sdk"] = types.ModuleType("airflow.sdk")
    modules["airflow.sdk"].DAG = DAG
    modules["airflow.sdk"].Connection = Connection
    python = "airflow.providers.standard.operators.python"
    modules[python] = types.ModuleType(python)
    modules[python].PythonOperator = PythonOperator
    return modules, created


def _render(template: str, variables: dict[str, str]) -> str:
    import jinja2

    class _Values:
        def get(self, key, default=None):
            return variables.get(key, default)

    context = {"var": types.SimpleNamespace(value=_Values())}
    return jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(template).render(
        context)


@pytest.fixture
def stub_dag(monkeypatch):
    modules, created = _airflow_stub()
    for name in list(sys.modules):
        if name == "airflow" or name.startswith("airflow."):
            monkeypatch.delitem(sys.modules, name)
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    namespace = runpy.run_path(str(DAG_FILE))
    return namespace, created


def test_airflow_dag_structure(stub_dag):
    namespace, created = stub_dag
    dag = namespace["dag"]
    assert dag.dag_id == "tfflows_daily"
    assert dag.kwargs["schedule"] == "@daily"
    assert dag.kwargs["catchup"] is False and dag.kwargs["max_active_runs"] == 1
    assert dag.kwargs["start_date"].tzinfo is not None
    (task,) = created
    assert dag.tasks == [task] and task.task_id == "tfflows_run"
    assert task.python_callable is namespace["run_tfflows"]
    defaults = {k: _render(v, {}) for k, v in task.op_kwargs.items()}
    assert namespace["tfflows_argv"](**defaults) == [
        "tfflows", "run", "--config=/etc/tfflows/config.yaml", "--output=/var/lib/tfflows"]
    # The MLflow credentials are read when the task runs, never rendered into its fields.
    assert not any("conn" in template for template in task.op_kwargs.values())


def test_airflow_variables_never_reach_a_shell(stub_dag, tmp_path):
    namespace, (task,) = stub_dag
    marker = tmp_path / "pwned"
    argv_out = tmp_path / "argv.json"
    fake = tmp_path / "tfflows"
    fake.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, os, sys
        json.dump({{"argv": sys.argv[1:], "user": os.environ.get("MLFLOW_TRACKING_USERNAME"),
                   "password": os.environ.get("MLFLOW_TRACKING_PASSWORD")}},
                  open({str(argv_out)!r}, "w"))
        """))
    fake.chmod(0o755)
    hostile = HOSTILE.format(marker=marker)
    variables = {"tfflows_bin": str(fake), "tfflows_config": hostile,
                 "tfflows_output": "--help", "tfflows_tracking_uri": "http://mlflow:5000; id"}
    kwargs = {k: _render(v, variables) for k, v in task.op_kwargs.items()}
    task.python_callable(**kwargs)
    got = json.loads(argv_out.read_text())
    assert got["argv"] == ["run", f"--config={hostile}", "--output=--help",
                           "--set=tracking.uri=http://mlflow:5000; id"]
    assert (got["user"], got["password"]) == ("pipeline", "p w'\"$x")
    assert not marker.exists()
    # A failing CLI fails the task.
    fake.write_text("#!/bin/sh\nexit 3\n")
    with pytest.raises(subprocess.CalledProcessError):
        task.python_callable(**kwargs)


# ------------------------------------------------------------------------------------------
# Airflow DAG under real Airflow 3: `airflow dags test`, the whole tfflows pipeline end to end
# ------------------------------------------------------------------------------------------

TINY_CONFIG = """\
ingest: {dataset: moons, num_samples: 300}
train: {kind: maf, num_layers: 1, hidden_units: [8], epochs: 1}
"""


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_airflow_dags_test_runs_the_pipeline(tmp_path):
    if not AIRFLOW.exists():
        message = f"{AIRFLOW} is missing: run `bash .ci/airflow.sh` (Airflow in its own venv)"
        if ms.in_ci():
            pytest.fail(message)
        pytest.skip(message)
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    output = tmp_path / "out"
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(DAG_FILE, dags)
    env = {
        "PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8",
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_VAR_TFFLOWS_BIN": str(TFFLOWS),
        "AIRFLOW_VAR_TFFLOWS_CONFIG": str(config),
        "AIRFLOW_VAR_TFFLOWS_OUTPUT": str(output),
        "AIRFLOW_CONN_TFFLOWS_MLFLOW": json.dumps(
            {"conn_type": "http", "login": "pipeline", "password": "not-used-locally"}),
    }
    migrate = subprocess.run([str(AIRFLOW), "db", "migrate"], env=env, capture_output=True,
                             text=True, timeout=600)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    # A failing task would wait out retry_delay (15 min): KILL bounds it.
    done = subprocess.run(["timeout", "-s", "KILL", "1200", str(AIRFLOW), "dags", "test",
                           "tfflows_daily", "2026-12-01"], env=env, capture_output=True,
                          text=True)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-5000:]
    assert "import error" not in log.lower()
    # The whole pipeline ran in the task (one epoch: blessing and the push depend on the fit).
    assert "tfflows run: moons -> maf flow" in log
    assert "test log-likelihood: " in log and "SavedModel: " in log, log[-5000:]
    assert (output / "metadata.sqlite").is_file()
    states = subprocess.run([str(AIRFLOW), "tasks", "states-for-dag-run", "tfflows_daily",
                             _dag_run_id(log), "--output", "json"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert states.returncode == 0, states.stderr[-3000:]
    assert [t["state"] for t in json.loads(states.stdout)] == ["success"]


def _dag_run_id(log: str) -> str:
    match = re.search(r"run_id=(manual__\S+?)(?:\s|$)", log)
    assert match, log[-3000:]
    return match.group(1)


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
    assert "/tmp" not in command, "no lock or file in world-writable /tmp"
    argv = shlex.split(command)
    assert argv[0] == "/opt/tfflows/infra/schedule/run_pipeline.sh"
    assert argv[-3:] == [">>", "/var/log/tfflows/run.log", "2>&1"]


def _localised_cron_command(tmp_path: Path) -> tuple[str, Path]:
    (entry,) = _cron_entries()
    command = entry.split(None, 5)[5]
    log = tmp_path / "log" / "run.log"
    log.parent.mkdir()
    command = (command.replace("/opt/tfflows/infra/schedule/run_pipeline.sh",
                               str(SCHEDULE / "run_pipeline.sh"))
               .replace("/var/log/tfflows/run.log", str(log)))
    return command, log


@pytest.mark.skipif(shutil.which("flock") is None, reason="flock (util-linux) not installed")
def test_cron_command_runs_once_at_a_time(tmp_path):
    fake = tmp_path / "tfflows"
    fake.write_text('#!/bin/sh\necho "fake tfflows $*"\necho "user=$MLFLOW_TRACKING_USERNAME"\n')
    fake.chmod(0o755)
    output = tmp_path / "out"
    env_file = tmp_path / "env"
    env_file.write_text(
        f"TFFLOWS_BIN={fake}\nTFFLOWS_CONFIG=/cfg.yaml\nTFFLOWS_OUTPUT={output}\n"
        "TFFLOWS_TRACKING_URI=http://127.0.0.1:5000\nMLFLOW_TRACKING_USERNAME=pipeline\n"
    )
    command, log = _localised_cron_command(tmp_path)
    env = {"PATH": os.environ["PATH"], "TFFLOWS_ENV_FILE": str(env_file)}
    subprocess.run(["bash", "-c", command], env=env, check=True, timeout=60)
    text = log.read_text()
    assert (f"fake tfflows run --config /cfg.yaml --output {output} "
            "--set tracking.uri=http://127.0.0.1:5000") in text
    assert "user=pipeline" in text and "exit status 0" in text
    lock = output / ".tfflows-cron.lock"
    assert lock.is_file()
    # While another run holds the lock (flock(1) uses flock(2), as fcntl.flock does), the next
    # one logs one line and exits at once without running.
    import fcntl

    before = log.read_text()
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        second = subprocess.run(["bash", "-c", command], env=env, timeout=60)
    assert second.returncode == 75
    added = log.read_text()[len(before):]
    assert added.count("\n") == 1 and f"skipped: another run holds {lock}" in added
    # A failing run's status reaches cron (and the log).
    fake.write_text("#!/bin/sh\nexit 3\n")
    third = subprocess.run(["bash", "-c", command], env=env, timeout=60)
    assert third.returncode == 3 and "exit status 3" in log.read_text()


# ------------------------------------------------------------------------------------------
# Scheduled retraining: three nightly runs of the cron recipe over a folder of spans
# ------------------------------------------------------------------------------------------

SPANS_CONFIG = """\
ingest: {{dataset: csv, path: "{data}/{{SPAN}}/readings.csv"}}
train: {{kind: maf, num_layers: 1, hidden_units: [8], epochs: 2, batch_size: 50}}
# Two epochs need not beat the Gaussian reference: the test is about reuse, drift and the champion.
evaluate: {{reference_tolerance: 2.0}}
progress: lines
"""
STEPS = ("ingest", "transform", "drift", "train", "evaluate", "push")


def _readings(path: Path, shift: float, seed: int) -> Path:
    """300 rows of two correlated columns, moved by ``shift``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, 2)) @ np.array([[1.0, 0.6], [0.0, 0.8]]) + shift
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, x, delimiter=",", header="temperature,pressure", comments="", fmt="%.6f")
    return path


def _nightly(command: str, env: dict, log: Path) -> str:
    """One cron run; its lines of the log."""
    before = log.read_text() if log.exists() else ""
    subprocess.run(["bash", "-c", command], env=env, check=True, timeout=600)
    added = log.read_text()[len(before):]
    assert "exit status 0" in added, added[-3000:]
    return added


def _newest_examples(output: Path):
    """The newest Examples artifact in the run's ML Metadata store."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = str(output / "metadata.sqlite")
    return max(metadata_store.MetadataStore(connection).get_artifacts_by_type("Examples"), key=lambda a: a.id)


def _registered_versions(uri: str) -> list:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri).search_model_versions("name='tfflows'")


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(shutil.which("flock") is None, reason="flock (util-linux) not installed")
def test_scheduled_retraining_over_changing_spans(tmp_path):
    data, output = tmp_path / "data", tmp_path / "out"
    config = tmp_path / "config.yaml"
    config.write_text(SPANS_CONFIG.format(data=data))
    env_file = tmp_path / "env"
    env_file.write_text(f"TFFLOWS_BIN={TFFLOWS}\nTFFLOWS_CONFIG={config}\nTFFLOWS_OUTPUT={output}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["TFFLOWS_ENV_FILE"] = str(env_file)
    command, log = _localised_cron_command(tmp_path)
    store = f"sqlite:///{output}/mlflow.db"

    # Night 1: span 1 -> trained and pushed as version 1.
    span1 = _readings(data / "1" / "readings.csv", 0.0, seed=1)
    night1 = _nightly(command, env, log)
    assert all(f"{step}: ran" in night1 for step in STEPS), night1[-3000:]
    assert "no pushed baseline" in night1 and "data drift" not in night1
    assert sorted(int(v.version) for v in _registered_versions(store)) == [1]

    # Night 2: no new span (span 1 rewritten with the same bytes: a new mtime, the same content).
    span1.write_bytes(span1.read_bytes())
    night2 = _nightly(command, env, log)
    reused = re.findall(r"^(\w+): reused \(inputs unchanged since run (\S+), (\d{4}-\d\d-\d\d \d\d:\d\d UTC)\)$",
                        night2, re.M)
    assert [step for step, _, _ in reused] == list(STEPS), night2[-3000:]
    assert len({run for _, run, _ in reused}) == 1
    assert "nothing new pushed or registered" in night2
    assert sorted(int(v.version) for v in _registered_versions(store)) == [1]
    run1 = re.search(r"MLflow run: (\w+)", night1).group(1)
    assert f"MLflow run: {run1} " in night2  # the training run that was reused, not the newest run

    # Night 3: a new span, shifted: drift is measured with its error bar, the challenger meets the
    # champion on the same points.
    _readings(data / "2" / "readings.csv", 4.0, seed=2)
    night3 = _nightly(command, env, log)
    assert all(f"{step}: ran" in night3 for step in STEPS), night3[-3000:]
    drift = re.search(r"data drift: champion \(serving version 1\) scores the new test split (-\d+\.\d+) ± (\d+\.\d+) nats below its own "
                      r"test split \(span 2\)", night3)
    assert drift and float(drift.group(1)) + float(drift.group(2)) < 0, night3[-3000:]
    blessing = re.search(r"on the same (\d+) points: new - baseline ([-+]\d+\.\d+) ± (\d+\.\d+) nats per example "
                         r"\(paired mean ± 2 s\.e\.\)", night3)
    assert blessing, night3[-3000:]
    pushed = "SavedModel: " in night3 and "not pushed" not in night3
    examples = _newest_examples(output)  # ML Metadata records the span and the content digest
    assert examples.properties["span"].int_value == 2 and examples.custom_properties["spans"].string_value == "2"
    assert len(examples.custom_properties["input_digest"].string_value) == 64
    assert sorted(int(v.version) for v in _registered_versions(store)) == ([1, 2] if pushed else [1])

    # A file overwritten in place with other rows re-runs ingest (and what depends on it).
    _readings(data / "2" / "readings.csv", 4.0, seed=3)
    night4 = _nightly(command, env, log)
    assert "ingest: ran" in night4 and "train: ran" in night4, night4[-3000:]

    # MLflow: one training run per trained night, each named, described and sourced from the user's file.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store)
    runs = client.search_runs([client.get_experiment_by_name("tfflows").experiment_id], order_by=["start_time ASC"])
    names = [run.info.run_name for run in runs]
    assert len(runs) == 3 and len(set(names)) == 3, names
    assert names[0].startswith("maf-readings.csv-span1-") and names[2].startswith("maf-readings.csv-span2-")
    for run, span in zip(runs, ("1", "2", "2")):
        assert run.data.tags["data.span"] == span
        note = run.data.tags["mlflow.note.content"]
        assert f"{data}/{span}/readings.csv" in note and "temperature, pressure" in note and "Blessing: " in note
        sources = {json.loads(d.dataset.source)["uri"] for d in run.inputs.dataset_inputs}
        assert sources == {f"{data}/{span}/readings.csv"}
    assert runs[1].data.metrics["drift_log_likelihood_delta"] == pytest.approx(float(drift.group(1)), abs=0.01)
    assert runs[1].data.tags["drift.span"] == "2"
    version = max(_registered_versions(store), key=lambda v: int(v.version))
    assert version.description.startswith("maf on readings.csv-span") and version.tags["kind"] == "maf"

    # The champion by registry URI, from elsewhere: with --output, and with MLFLOW_TRACKING_URI.
    rows = tmp_path / "rows.csv"
    rows.write_text("temperature,pressure\n0.1,0.2\n4.0,4.1\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for extra, extra_env in (([f"--output={output}"], {}), ([], {"MLFLOW_TRACKING_URI": store})):
        done = subprocess.run([str(TFFLOWS), "evaluate", "--model", "models:/tfflows@champion", "--data", str(rows),
                               *extra], env={**env, **extra_env}, cwd=elsewhere, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0 and "rows: 2" in done.stdout, done.stderr[-3000:]

    # Back to version 1 (`tfflows promote --version 1`, TF Serving's stable label with it): the next
    # run on the same data reuses the training but compares it with version 1, not with the newest
    # version nor with what night 4 compared it with: drift and evaluate run again.
    back = subprocess.run([str(TFFLOWS), "promote", "--version", "1", f"--config={config}", f"--output={output}"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert back.returncode == 0 and "(serving version 1)" in back.stdout, back.stderr[-3000:]
    night5 = _nightly(command, env, log)
    assert all(f"{step}: reused" in night5 for step in ("ingest", "transform", "train")), night5[-3000:]
    assert "drift: ran" in night5 and "evaluate: ran" in night5, night5[-3000:]
    assert "data drift: champion (serving version 1) scores the new test split" in night5, night5[-3000:]
    assert "(the champion, serving version 1) on the same" in night5, night5[-3000:]
    # Night 4's model, if it was pushed, is not pushed again over the rollback under a new number.
    night4_version = re.search(r"SavedModel: \S+/serving/(\d+)\n", night4)
    if night4_version:
        assert (f"SavedModel: not pushed (this trained model is serving version {night4_version.group(1)} already, "
                in night5), night5[-3000:]
