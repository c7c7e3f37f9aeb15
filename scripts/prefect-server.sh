#!/usr/bin/env bash
# Start a Prefect server and UI on 127.0.0.1, in the foreground (Ctrl-C stops it). Then, elsewhere:
#   export PREFECT_API_URL=http://127.0.0.1:4200/api && oesdn serve
# Its database lives in $PREFECT_HOME (default: .prefect in the project). Override PREFECT_PORT if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PREFECT_SERVER_ANALYTICS_ENABLED=${PREFECT_SERVER_ANALYTICS_ENABLED:-false}  # no calls home
export PREFECT_HOME=${PREFECT_HOME:-$(pwd)/.prefect}
PREFECT=${PREFECT_BIN:-$(command -v prefect || echo "$(pwd)/.venv/bin/prefect")}
exec "$PREFECT" server start --host "${PREFECT_HOST:-127.0.0.1}" --port "${PREFECT_PORT:-4200}"
