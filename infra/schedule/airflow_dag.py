"""Airflow DAG running the tfflows pipeline once a day through its CLI.

Copy (or symlink) this file into the Airflow ``dags/`` folder of a deployment whose workers
have tfflows installed (``infra/setup.sh``, or run the ``tfflows`` image with a
KubernetesPodOperator instead). Written for Airflow 3 (``airflow.sdk``); the import fallbacks
keep it loading on Airflow 2.4+. Checked with ``airflow dags test`` on Airflow 3.3
(``tests/test_infra.py``, Airflow in its own venv made by ``.ci/airflow.sh``).

Run-time settings, resolved when the task runs (never while the DAG file is parsed):

- Airflow Variables ``tfflows_config`` (YAML config path), ``tfflows_output`` (the ``--output``
  directory whose ``serving/`` TF Serving reads), ``tfflows_bin`` (the CLI, default
  ``tfflows``) and optionally ``tfflows_tracking_uri`` (passed as ``--set tracking.uri=...``).
- Airflow Connection ``tfflows_mlflow``: login/password of the MLflow basic-auth user, read by
  the task when it runs (not templated, so never among the rendered fields Airflow stores) and
  handed to the CLI as ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``. Store it in
  Airflow's secrets backend; nothing secret lives in this file.

The CLI is started with an argument list, never through a shell, and every Variable is passed
as one ``--name=value`` argument: a Variable holding quotes, ``;`` or ``$(...)`` cannot run a
command, and one starting with ``-`` cannot add options.

``max_active_runs=1`` and ``catchup=False`` keep runs from overlapping or piling up.
"""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timedelta, timezone

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG

try:  # Airflow 3, and Airflow 2.9+ with the standard provider
    from airflow.providers.standard.operators.python import PythonOperator
except ImportError:  # Airflow 2
    from airflow.operators.python import PythonOperator

DAG_ID = "tfflows_daily"


def tfflows_argv(tfflows_bin: str, config: str, output: str, tracking_uri: str = "") -> list:
    """The CLI's argument list: one ``--name=value`` element per setting, no shell."""
    argv = [tfflows_bin, "run", f"--config={config}", f"--output={output}"]
    if tracking_uri:
        argv.append(f"--set=tracking.uri={tracking_uri}")
    return argv


def mlflow_connection(conn_id: str):
    """The Airflow Connection holding the MLflow user (read when the task runs)."""
    try:  # Airflow 3
        from airflow.sdk import Connection

        return Connection.get(conn_id)
    except ImportError:  # Airflow 2
        from airflow.hooks.base import BaseHook

        return BaseHook.get_connection(conn_id)


def run_tfflows(tfflows_bin: str, config: str, output: str, tracking_uri: str = "",
                mlflow_conn_id: str = "tfflows_mlflow") -> None:
    """Runs ``tfflows run``; its output goes to the task log, a non-zero exit fails the task."""
    connection = mlflow_connection(mlflow_conn_id)
    env = dict(os.environ)
    env.update(zip(("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"),
                   (connection.login or "", connection.password or "")))
    subprocess.run(tfflows_argv(tfflows_bin, config, output, tracking_uri), env=env, check=True)


with DAG(
    dag_id=DAG_ID,
    description="Train, evaluate and push the tfflows normalizing-flow model",
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=13),
    default_args={
        "owner": "tfflows",
        "retries": 1,
        "retry_delay": timedelta(minutes=15),
        "execution_timeout": timedelta(hours=12),
    },
    tags=["tfflows", "tfx", "mlflow"],
) as dag:
    run_pipeline = PythonOperator(
        task_id="tfflows_run",
        python_callable=run_tfflows,
        # Rendered when the task runs; each value becomes one argument of the argument list.
        op_kwargs={
            "tfflows_bin": "{{ var.value.get('tfflows_bin', 'tfflows') }}",
            "config": "{{ var.value.get('tfflows_config', '/etc/tfflows/config.yaml') }}",
            "output": "{{ var.value.get('tfflows_output', '/var/lib/tfflows') }}",
            "tracking_uri": "{{ var.value.get('tfflows_tracking_uri', '') }}",
        },
    )
