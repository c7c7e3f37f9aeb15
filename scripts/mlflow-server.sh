#!/usr/bin/env bash
# Start the MLflow tracking server and UI on 127.0.0.1, in the foreground (Ctrl-C stops it).
# SQLite metadata in the project's mlflow.db (the store runs use when no server is set) and
# proxied artifacts, so clients need no storage settings of their own.
#   scripts/mlflow-server.sh                 # http://127.0.0.1:5000
#   MLFLOW_PORT=5001 scripts/mlflow-server.sh
# Override MLFLOW_DB, MLFLOW_ARTIFACTS (a folder or s3://bucket/prefix) and MLFLOW_HOST if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DB=${MLFLOW_DB:-$ROOT/mlflow.db}
ARTIFACTS=${MLFLOW_ARTIFACTS:-$ROOT/mlartifacts}
MLFLOW=${MLFLOW_BIN:-$(command -v mlflow || echo "$ROOT/.venv/bin/mlflow")}
# The server's background job runner (huey) is for GenAI jobs this project never submits.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}
exec "$MLFLOW" server \
  --host "${MLFLOW_HOST:-127.0.0.1}" --port "${MLFLOW_PORT:-5000}" \
  --backend-store-uri "sqlite:///$DB" \
  --artifacts-destination "$ARTIFACTS" \
  --workers 1
