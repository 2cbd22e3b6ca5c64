#!/bin/sh
# MinIO setup for MLflow, run once after MinIO is up (the `minio-create-bucket` Job in
# minio.yaml, and the compose service of the same name): creates the artifact bucket (private)
# and MLflow's own MinIO user, whose policy allows only that bucket, so MLflow never holds the
# root keys. Idempotent: a re-run updates the policy and the user's secret key.
#
#   MINIO_ROOT_USER, MINIO_ROOT_PASSWORD        MinIO's admin (used here only)
#   MLFLOW_S3_ACCESS_KEY, MLFLOW_S3_SECRET_KEY  MLflow's user (its AWS_ACCESS_KEY_ID/SECRET)
#   MLFLOW_BUCKET (default mlflow-artifacts), MINIO_URL (default http://minio:9000)
set -eu
: "${MINIO_ROOT_USER:?MINIO_ROOT_USER must be set}"
: "${MINIO_ROOT_PASSWORD:?MINIO_ROOT_PASSWORD must be set}"
: "${MLFLOW_S3_ACCESS_KEY:?MLFLOW_S3_ACCESS_KEY must be set}"
: "${MLFLOW_S3_SECRET_KEY:?MLFLOW_S3_SECRET_KEY must be set}"
bucket="${MLFLOW_BUCKET:-mlflow-artifacts}"
policy="$(mktemp)"
trap 'rm -f "$policy"' EXIT

mc alias set tfflows "${MINIO_URL:-http://minio:9000}" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing "tfflows/$bucket"
mc anonymous set none "tfflows/$bucket"
cat > "$policy" <<JSON
{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "Action": ["s3:GetBucketLocation", "s3:ListBucket"],
   "Resource": ["arn:aws:s3:::$bucket"]},
  {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
   "Resource": ["arn:aws:s3:::$bucket/*"]}]}
JSON
mc admin policy create tfflows mlflow-artifacts "$policy"
mc admin user add tfflows "$MLFLOW_S3_ACCESS_KEY" "$MLFLOW_S3_SECRET_KEY"
# `policy attach` fails when the policy is already attached: attach only when it is not.
if ! mc admin user info tfflows "$MLFLOW_S3_ACCESS_KEY" | grep -q mlflow-artifacts; then
    mc admin policy attach tfflows mlflow-artifacts --user "$MLFLOW_S3_ACCESS_KEY"
fi
echo "bucket $bucket and MinIO user $MLFLOW_S3_ACCESS_KEY (policy mlflow-artifacts) ready"
