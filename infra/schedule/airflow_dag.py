"""Airflow DAG running the tfflows pipeline once a day through its CLI.

Copy (or symlink) this file into the Airflow ``dags/`` folder of a deployment whose workers
have tfflows installed (``infra/setup.sh``, or run the ``tfflows`` image with a
KubernetesPodOperator instead). Works with Airflow 2.4+ and 3.x.

Run-time settings, resolved when the task runs (never while the DAG file is parsed):

- Airflow Variables ``tfflows_config`` (YAML config path), ``tfflows_output`` (the ``--output``
  directory whose ``serving/`` TF Serving reads), ``tfflows_bin`` (the CLI, default
  ``tfflows``) and optionally ``tfflows_tracking_uri`` (passed as ``--set tracking.uri=...``).
- Airflow Connection ``tfflows_mlflow``: login/password of the MLflow basic-auth user, handed to
  the CLI as ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``. Store it in Airflow's
  secrets backend; nothing secret lives in this file.

``max_active_runs=1`` and ``catchup=False`` keep runs from overlapping or piling up.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG

try:  # Airflow 3, and Airflow 2.9+ with the standard provider
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2
    from airflow.operators.bash import BashOperator

DAG_ID = "tfflows_daily"

RUN_PIPELINE = (
    "set -euo pipefail\n"
    "{% set tracking_uri = var.value.get('tfflows_tracking_uri', '') %}"
    "\"{{ var.value.get('tfflows_bin', 'tfflows') }}\" run"
    " --config \"{{ var.value.get('tfflows_config', '/etc/tfflows/config.yaml') }}\""
    " --output \"{{ var.value.get('tfflows_output', '/var/lib/tfflows') }}\""
    "{% if tracking_uri %} --set \"tracking.uri={{ tracking_uri }}\"{% endif %}\n"
)

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
    run_pipeline = BashOperator(
        task_id="tfflows_run",
        bash_command=RUN_PIPELINE,
        env={
            "MLFLOW_TRACKING_USERNAME": "{{ conn.tfflows_mlflow.login }}",
            "MLFLOW_TRACKING_PASSWORD": "{{ conn.tfflows_mlflow.password }}",
        },
        append_env=True,
    )
