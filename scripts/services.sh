#!/usr/bin/env bash
# Start and stop background services by PID: each runs in its own process group, so stopping it
# also stops the workers it spawned. State lives in .services/<name>.{pid,log}.
#   scripts/services.sh start NAME URL COMMAND...   start; wait until URL answers (up to 180 s)
#   scripts/services.sh stop NAME                    TERM the group, KILL it after 20 s
#   scripts/services.sh stop-all
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${OESDN_SERVICES_DIR:-.services}
mkdir -p "$STATE"

start() {
  local name=$1 url=$2; shift 2
  if [ -f "$STATE/$name.pid" ] && kill -0 "$(cat "$STATE/$name.pid")" 2>/dev/null; then
    echo "$name already running (pid $(cat "$STATE/$name.pid"))"; return 0
  fi
  setsid "$@" >"$STATE/$name.log" 2>&1 < /dev/null &
  echo $! >"$STATE/$name.pid"
  for _ in $(seq 180); do
    if curl -fsS -o /dev/null "$url" 2>/dev/null; then echo "$name up at $url (pid $(cat "$STATE/$name.pid"))"; return 0; fi
    if ! kill -0 "$(cat "$STATE/$name.pid")" 2>/dev/null; then
      echo "$name exited while starting; its log:" >&2; tail -n 40 "$STATE/$name.log" >&2; rm -f "$STATE/$name.pid"; return 1
    fi
    sleep 1
  done
  echo "$name did not answer at $url within 180 s; its log:" >&2; tail -n 40 "$STATE/$name.log" >&2
  stop "$name"; return 1
}

stop() {
  local name=$1 pid
  [ -f "$STATE/$name.pid" ] || { echo "$name not running"; return 0; }
  pid=$(cat "$STATE/$name.pid")
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 20); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$STATE/$name.pid"
  echo "$name stopped (pid $pid)"
}

case ${1:-} in
  start) shift; start "$@" ;;
  stop) stop "$2" ;;
  stop-all) for f in "$STATE"/*.pid; do [ -e "$f" ] && stop "$(basename "$f" .pid)"; done; true ;;
  *) sed -n '2,7p' "$0"; exit 2 ;;
esac
