#!/usr/bin/env bash
# One scheduled tfflows run (called by infra/schedule/crontab).
#
# Reads settings from TFFLOWS_ENV_FILE (default /etc/tfflows/env, keep it mode 600), e.g.
#   TFFLOWS_CONFIG=/etc/tfflows/config.yaml
#   TFFLOWS_OUTPUT=/var/lib/tfflows
#   TFFLOWS_TRACKING_URI=http://127.0.0.1:5000
#   MLFLOW_TRACKING_USERNAME=...        # MLflow basic-auth user of the pipeline
#   MLFLOW_TRACKING_PASSWORD=...
# and runs `tfflows run --config ... --output ... [--set tracking.uri=...]`, printing UTC start
# and end lines around the CLI's own output; exits with the CLI's status. The same command every
# night: with `ingest.path: data/{SPAN}/*.csv` a night takes the newest span; unchanged inputs
# (by content) reuse every step and the CLI prints `<step>: reused (inputs unchanged since run ...)`
# (README "Scheduled retraining"; tests/test_infra_schedule.py plays four nights).
# One run at a time per output folder: the lock file is OUTPUT/.tfflows-cron.lock (flock(2) on a
# file only the output's owner can write; a lock in world-writable /tmp could be taken, or
# replaced by a symlink, by any local user). While a run holds it, a new one logs one line and
# exits 75 (EX_TEMPFAIL) without running.
set -euo pipefail

TFFLOWS_HOME="${TFFLOWS_HOME:-$(cd "$(dirname "$0")/../.." && pwd)}"
ENV_FILE="${TFFLOWS_ENV_FILE:-/etc/tfflows/env}"
if [ -f "$ENV_FILE" ]; then
    set -a
    # shellcheck disable=SC1090
    . "$ENV_FILE"
    set +a
fi

TFFLOWS_BIN="${TFFLOWS_BIN:-$TFFLOWS_HOME/.venv/bin/tfflows}"
OUTPUT="${TFFLOWS_OUTPUT:-/var/lib/tfflows}"
args=(run --config "${TFFLOWS_CONFIG:-/etc/tfflows/config.yaml}" --output "$OUTPUT")
if [ -n "${TFFLOWS_TRACKING_URI:-}" ]; then
    args+=(--set "tracking.uri=${TFFLOWS_TRACKING_URI}")
fi

stamp() { date -u +%Y-%m-%dT%H:%M:%SZ; }
mkdir -p "$OUTPUT"
LOCK="$OUTPUT/.tfflows-cron.lock"
exec 9>>"$LOCK"  # fd 9 (and the lock) is inherited by tfflows: held until the run ends
if ! flock -n 9; then
    echo "[$(stamp)] tfflows scheduled run skipped: another run holds $LOCK"
    exit 75
fi
echo "[$(stamp)] tfflows scheduled run start (pid $$): ${args[*]}"
status=0
"$TFFLOWS_BIN" "${args[@]}" || status=$?
echo "[$(stamp)] tfflows scheduled run end: exit status $status"
exit "$status"
