#!/bin/sh
# Entry point of the tfflows MLflow server image: `mlflow server "$@"`, configured from the
# environment only.
#
#   MLFLOW_BACKEND_STORE_URI   (required) tracking store, e.g. postgresql+psycopg://USER:PASS@postgres:5432/mlflow
#                              (read by `mlflow server` itself, so the password stays out of argv)
#   MLFLOW_AUTH_DATABASE_URI   (optional) user store of the basic-auth app. When set, a
#                              basic_auth.ini is written (mode 600, outside the image) and
#                              MLFLOW_AUTH_CONFIG_PATH points at it; the auth app's own default is a
#                              SQLite file in the working directory, lost with the container.
#   MLFLOW_AUTH_ADMIN_USERNAME, MLFLOW_AUTH_ADMIN_PASSWORD, MLFLOW_FLASK_SERVER_SECRET_KEY
#                              read by MLflow's basic-auth app (the admin password is used only to
#                              create the admin user on first start).
#   MLFLOW_AUTH_DEFAULT_PERMISSION  READ (default), EDIT, MANAGE or NO_PERMISSIONS.
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, MLFLOW_S3_ENDPOINT_URL  artifact store (MinIO).
set -eu

: "${MLFLOW_BACKEND_STORE_URI:?MLFLOW_BACKEND_STORE_URI must be set}"

if [ -n "${MLFLOW_AUTH_DATABASE_URI:-}" ]; then
    auth_dir="${MLFLOW_AUTH_CONFIG_DIR:-/tmp/mlflow-auth}"
    umask 077
    mkdir -p "$auth_dir"
    # basic_auth.ini is read with configparser: a literal '%' (URL-encoded passwords) must be '%%'.
    auth_db_uri=$(printf '%s' "$MLFLOW_AUTH_DATABASE_URI" | sed 's/%/%%/g')
    cat > "$auth_dir/basic_auth.ini" <<INI
[mlflow]
default_permission = ${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}
database_uri = ${auth_db_uri}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
    MLFLOW_AUTH_CONFIG_PATH="$auth_dir/basic_auth.ini"
    export MLFLOW_AUTH_CONFIG_PATH
fi

exec mlflow server "$@"
