#!/usr/bin/env bash
# Creates ./.venv-airflow: Apache Airflow 3 in its own environment (its pins clash with the
# TFX stack's, see infra/schedule/airflow-requirements.lock), for tests/test_infra_schedule.py's
# `airflow dags test` of infra/schedule/airflow_dag.py. Safe to re-run; takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet uv
[ -x .venv-airflow/bin/python ] || uv venv --quiet -p python3.11 .venv-airflow
uv pip install --quiet -p .venv-airflow/bin/python -r infra/schedule/airflow-requirements.lock
