#!/bin/sh
# Run once by the postgres image on an empty data directory: a second database for the users
# and permissions of MLflow's basic-auth app, owned by the same role as the tracking store.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -c "CREATE DATABASE mlflow_auth OWNER \"$POSTGRES_USER\""
