#!/usr/bin/env bash
# The local stack for development and CI, every process on 127.0.0.1 and stopped by its PID
# (through scripts/services.sh): a real S3 server (SeaweedFS `weed mini`), an MLflow server whose
# artifacts live in S3 (proxied: clients need no S3 settings) and a Prefect server.
#   scripts/stack.sh start      start all three, create the buckets, print the client environment
#   scripts/stack.sh stop       stop them (by PID, in reverse order); data stays in OESDN_STACK_DIR
#   scripts/stack.sh status     which services run and answer
#   scripts/stack.sh env        print the client environment, secrets included: eval "$(scripts/stack.sh env)"
#   scripts/stack.sh commands   print each server's command line (docker-compose.yml must run the same)
# Settings (environment): OESDN_STACK_DIR (data, default .services/stack), OESDN_STACK_PORT_OFFSET
# (added to every default port, default 0), AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (the S3 admin
# credentials; generated once into OESDN_STACK_DIR/credentials, mode 600, when unset).
# Secrets are written only to mode-600 files and never printed, except by `env`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DIR=${OESDN_STACK_DIR:-$ROOT/.services/stack}
OFFSET=${OESDN_STACK_PORT_OFFSET:-0}
BIN=${OESDN_STACK_BIN:-$ROOT/.venv/bin}
S3_PORT=$((8333 + OFFSET)); MLFLOW_PORT=$((5000 + OFFSET)); PREFECT_PORT=$((4200 + OFFSET))
DVC_BUCKET=oesdn-dvc; MLFLOW_BUCKET=oesdn-mlflow; DATA_BUCKET=oesdn-data
S3_URL=http://127.0.0.1:$S3_PORT

weed_args() {
  echo "$BIN/weed" mini -dir="$DIR/s3" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -s3.port=$S3_PORT -master.port=$((9333 + OFFSET)) -volume.port=$((9340 + OFFSET)) \
    -filer.port=$((8888 + OFFSET)) -admin.port=$((23646 + OFFSET)) -admin.ui=false -webdav=false \
    -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false \
    -bucket=$DVC_BUCKET,$MLFLOW_BUCKET,$DATA_BUCKET
}

mlflow_args() {  # what scripts/mlflow-server.sh executes, printed by running it with MLFLOW_BIN=echo
  MLFLOW_BIN=echo MLFLOW_DB="$DIR/mlflow.db" MLFLOW_ARTIFACTS=s3://$MLFLOW_BUCKET/artifacts \
    MLFLOW_PORT=$MLFLOW_PORT MLFLOW_HOST=127.0.0.1 scripts/mlflow-server.sh | sed "s|^|$BIN/mlflow |"
}

prefect_args() {
  echo "$BIN/prefect" server start --host 127.0.0.1 --port $PREFECT_PORT
}

credentials() {  # the S3 admin credentials: from the environment, else generated once (mode 600)
  if [ -n "${AWS_ACCESS_KEY_ID:-}" ] && [ -n "${AWS_SECRET_ACCESS_KEY:-}" ]; then return 0; fi
  mkdir -p "$DIR"
  if [ ! -f "$DIR/credentials" ]; then
    (umask 077; printf 'AWS_ACCESS_KEY_ID=oesdn%s\nAWS_SECRET_ACCESS_KEY=%s\n' \
      "$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')" "$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" >"$DIR/credentials")
  fi
  # shellcheck disable=SC1091
  set -a; . "$DIR/credentials"; set +a
}

client_env() {  # $1 = "mask" to hide the secret
  local secret=$AWS_SECRET_ACCESS_KEY
  [ "${1:-}" = mask ] && secret='***'
  cat <<EOF
export OESDN_S3_ENDPOINT_URL=$S3_URL
export AWS_ENDPOINT_URL=$S3_URL
export AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1}
export AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID
export AWS_SECRET_ACCESS_KEY=$secret
export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT
export PREFECT_API_URL=http://127.0.0.1:$PREFECT_PORT/api
export OESDN_DVC_REMOTE=s3://$DVC_BUCKET/cache
export OESDN_DATA_BUCKET=s3://$DATA_BUCKET
EOF
}

start() {
  credentials
  mkdir -p "$DIR/s3" "$DIR/prefect"
  # shellcheck disable=SC2046
  scripts/services.sh start s3 "$S3_URL/healthz" $(weed_args)
  # The MLflow server alone holds S3 settings: clients send artifacts through it.
  MLFLOW_S3_ENDPOINT_URL=$S3_URL MLFLOW_DB="$DIR/mlflow.db" MLFLOW_ARTIFACTS=s3://$MLFLOW_BUCKET/artifacts \
    MLFLOW_PORT=$MLFLOW_PORT MLFLOW_HOST=127.0.0.1 MLFLOW_BIN="$BIN/mlflow" \
    scripts/services.sh start mlflow "http://127.0.0.1:$MLFLOW_PORT/health" scripts/mlflow-server.sh
  # shellcheck disable=SC2046
  env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY PREFECT_HOME="$DIR/prefect" \
    PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_UI_ENABLED=false \
    scripts/services.sh start prefect "http://127.0.0.1:$PREFECT_PORT/api/health" $(prefect_args)
  (umask 077; client_env >"$DIR/stack.env")
  echo "client environment (secret masked; all of it: . $DIR/stack.env  or  eval \"\$(scripts/stack.sh env)\"):"
  client_env mask
}

stop() {
  for name in prefect mlflow s3; do scripts/services.sh stop "$name"; done
}

status() {
  local rc=0 name url
  for pair in "s3 $S3_URL/healthz" "mlflow http://127.0.0.1:$MLFLOW_PORT/health" "prefect http://127.0.0.1:$PREFECT_PORT/api/health"; do
    read -r name url <<<"$pair"
    if curl -fsS -o /dev/null "$url" 2>/dev/null; then echo "$name: up at $url"; else echo "$name: down ($url)"; rc=1; fi
  done
  return $rc
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) credentials; client_env ;;
  commands) printf 's3: %s\nmlflow: %s\nprefect: %s\n' "$(weed_args)" "$(mlflow_args)" "$(prefect_args)" ;;
  *) sed -n '2,15p' "$0"; exit 2 ;;
esac
