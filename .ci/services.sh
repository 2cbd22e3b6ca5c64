#!/usr/bin/env bash
# Installs (if absent) and starts the services the slow infra tests need, idempotently:
#   PostgreSQL 15 (Debian bookworm's package), listening on loopback only, with a role
#   `tfflows` and a database `mlflow_test` owned by it.
#
# The role's password comes from TFFLOWS_PG_PASSWORD when set; otherwise one is generated on
# the first run, kept in a root-only file and reused by later runs. The connection URI
# (postgresql+psycopg://tfflows:PASSWORD@127.0.0.1:5432/mlflow_test) is written, mode 600, to
# TFFLOWS_PG_URI_FILE (default /tmp/tfflows_pg_uri), which tests/mlflow_server.py reads. Nothing
# secret is printed.
#
# Usage: bash .ci/services.sh            (start; what .ci/run calls before pytest)
#        bash .ci/services.sh stop       (stop the cluster again)
set -euo pipefail

PG_VERSION="${TFFLOWS_PG_VERSION:-15}"
PG_CLUSTER=main
PG_PORT=5432
PG_USER=tfflows
PG_DB=mlflow_test
URI_FILE="${TFFLOWS_PG_URI_FILE:-/tmp/tfflows_pg_uri}"
PASSWORD_FILE="${URI_FILE}.password"

log() { echo "services.sh: $*" >&2; }

as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    elif [ "$(id -un)" = postgres ]; then
        "$@"
    else
        sudo -n -u postgres -- "$@"
    fi
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n -- "$@"; fi
}

if [ "${1:-start}" = stop ]; then
    if command -v pg_ctlcluster >/dev/null 2>&1; then
        as_root pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" stop || true
    fi
    exit 0
fi

# 1. Install PostgreSQL when it is absent.
if [ ! -x "/usr/lib/postgresql/$PG_VERSION/bin/postgres" ]; then
    log "installing PostgreSQL $PG_VERSION"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq postgresql >/dev/null
fi
if ! pg_lsclusters -h 2>/dev/null | awk '{print $1, $2}' | grep -qx "$PG_VERSION $PG_CLUSTER"; then
    log "creating cluster $PG_VERSION/$PG_CLUSTER"
    as_root pg_createcluster "$PG_VERSION" "$PG_CLUSTER"
fi

# 2. Start it (a running cluster is left alone) and wait until it accepts connections.
if ! pg_lsclusters -h | awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1 == v && $2 == c {print $4}' \
        | grep -qx online; then
    log "starting cluster $PG_VERSION/$PG_CLUSTER"
    as_root pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start
fi
for _ in $(seq 1 60); do
    if pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; then break; fi
    sleep 0.5
done
pg_isready -q -h 127.0.0.1 -p "$PG_PORT" || { log "PostgreSQL did not become ready"; exit 1; }

# 3. Password: from the environment, else the one generated earlier, else a new one.
umask 077
if [ -n "${TFFLOWS_PG_PASSWORD:-}" ]; then
    PG_PASSWORD="$TFFLOWS_PG_PASSWORD"
elif [ -s "$PASSWORD_FILE" ]; then
    PG_PASSWORD="$(cat "$PASSWORD_FILE")"
else
    PG_PASSWORD="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
    printf '%s' "$PG_PASSWORD" > "$PASSWORD_FILE"
fi
case "$PG_PASSWORD" in
    *[!A-Za-z0-9._~-]*) log "TFFLOWS_PG_PASSWORD must be URL-safe ([A-Za-z0-9._~-])"; exit 1 ;;
esac

# 4. Role and database (created once; the password is (re)set every time so that the URI file
#    always matches). The password reaches psql on stdin, never on a command line.
as_postgres psql -q -v ON_ERROR_STOP=1 -v pw="$PG_PASSWORD" -d postgres <<SQL
SELECT format('CREATE ROLE %I LOGIN', '$PG_USER')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') \gexec
ALTER ROLE $PG_USER WITH LOGIN PASSWORD :'pw';
SELECT format('CREATE DATABASE %I OWNER %I', '$PG_DB', '$PG_USER')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB') \gexec
SQL

printf 'postgresql+psycopg://%s:%s@127.0.0.1:%s/%s\n' \
    "$PG_USER" "$PG_PASSWORD" "$PG_PORT" "$PG_DB" > "$URI_FILE"
chmod 600 "$URI_FILE"
log "PostgreSQL $PG_VERSION ready on 127.0.0.1:$PG_PORT; database $PG_DB; URI in $URI_FILE"
