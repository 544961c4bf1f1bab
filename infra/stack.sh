#!/usr/bin/env bash
# Runs the FraudSense binaries in the background on the local services.
#   infra/stack.sh up      build release binaries, migrate, start api + worker, wait until ready
#   infra/stack.sh down    stop exactly the processes `up` started (pid files in .run/)
#   infra/stack.sh status  show what runs
#   infra/stack.sh token analyst [SUB] [TTL]  print a development token (roles comma-separated)
set -euo pipefail

cd "$(dirname "$0")/.."
RUN_DIR=.run
BIN=target/release
API_ADDR=${FRAUDSENSE_API_ADDR:-127.0.0.1:8080}
WORKER_ADDR=${FRAUDSENSE_WORKER_ADDR:-127.0.0.1:9100}
export LOG_FORMAT=${LOG_FORMAT:-json}

SECRET_FILE=$RUN_DIR/auth-hs256.secret

# Development authentication: unless the caller configured keys, the api verifies tokens
# with a random HS256 secret kept in .run/ (mode 0600, gitignored), generated once.
auth_env() {
  if [[ -n "${AUTH_HS256_SECRET:-}${AUTH_HS256_SECRET_FILE:-}${AUTH_JWKS_FILE:-}" ]]; then
    return
  fi
  ensure_secret
  export AUTH_HS256_SECRET_FILE=$PWD/$SECRET_FILE
}

# Writes the development secret once (the compose stack mounts the same file).
ensure_secret() {
  mkdir -p "$RUN_DIR"
  if [[ ! -s "$SECRET_FILE" ]]; then
    (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(32))' >"$SECRET_FILE")
  fi
}

# Prints a development token: token ROLES(comma-separated) [SUB] [TTL].
token() {
  local roles=${1:-} sub=${2:-dev} ttl=${3:-3600} args=()
  if [[ -z "$roles" ]]; then
    echo "usage: make token ROLE=ingest|analyst|admin (comma-separated for several) [SUB=name] [TTL=seconds]" >&2
    exit 2
  fi
  IFS=, read -ra list <<<"$roles"
  for role in "${list[@]}"; do args+=(--role "$role"); done
  auth_env
  if [[ ! -x "$BIN/fraudsense-api" ]]; then
    cargo build --quiet --release --bin fraudsense-api
  fi
  "$BIN/fraudsense-api" token "${args[@]}" --sub "$sub" --ttl "$ttl"
}

alive() { [[ -f "$RUN_DIR/$1.pid" ]] && kill -0 "$(cat "$RUN_DIR/$1.pid")" 2>/dev/null; }

# Waits (bounded) until http://$1/ready answers 200.
wait_ready() {
  local name=$1 addr=$2
  for _ in $(seq 1 120); do
    if python3 - "$addr" <<'PY' 2>/dev/null; then return 0; fi
import sys, urllib.request
urllib.request.urlopen(f"http://{sys.argv[1]}/ready", timeout=1)
PY
    if ! alive "$name"; then
      echo "$name exited during start-up; last log lines:" >&2
      tail -n 20 "$RUN_DIR/$name.log" >&2
      return 1
    fi
    sleep 0.5
  done
  echo "$name did not become ready at http://$addr/ready within 60 s; see $RUN_DIR/$name.log" >&2
  return 1
}

start() {
  local name=$1 binary=$2 addr=$3
  if alive "$name"; then
    echo "$name: already running (pid $(cat "$RUN_DIR/$name.pid"))"
    return
  fi
  nohup "$BIN/$binary" >>"$RUN_DIR/$name.log" 2>&1 &
  echo $! >"$RUN_DIR/$name.pid"
  wait_ready "$name" "$addr"
  echo "$name: started (pid $(cat "$RUN_DIR/$name.pid"), log $RUN_DIR/$name.log)"
}

stop() {
  local name=$1
  if ! alive "$name"; then
    echo "$name: not running"
    rm -f "$RUN_DIR/$name.pid"
    return
  fi
  local pid
  pid=$(cat "$RUN_DIR/$name.pid")
  kill -TERM "$pid"
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "$name: did not stop within 30 s; killing" >&2
    kill -KILL "$pid"
  fi
  rm -f "$RUN_DIR/$name.pid"
  echo "$name: stopped"
}

case "${1:-}" in
  up)
    mkdir -p "$RUN_DIR"
    auth_env
    cargo build --release --bins
    "$BIN/fraudsense-api" migrate
    start api fraudsense-api "$API_ADDR"
    start worker fraudsense-worker "$WORKER_ADDR"
    cat <<MSG

FraudSense is up.
  api          http://$API_ADDR   (POST /transactions, GET /transactions/{id}, /health, /ready)
  dashboard    http://$API_ADDR/dashboard   (sign in with the token of: make token ROLE=analyst)
  worker       http://$WORKER_ADDR/ready   (/metrics, /health)
  RabbitMQ UI  http://127.0.0.1:15672   (guest / guest)
  logs         make logs        stop: make down
MSG
    ;;
  down)
    stop worker
    stop api
    ;;
  token)
    shift
    token "$@"
    ;;
  secret)
    ensure_secret
    ;;
  exec)
    # Runs a command with the development auth settings (make load, make bench).
    shift
    auth_env
    exec "$@"
    ;;
  status)
    for name in api worker; do
      if alive "$name"; then echo "$name: running (pid $(cat "$RUN_DIR/$name.pid"))"; else echo "$name: stopped"; fi
    done
    ;;
  *)
    echo "usage: $0 up|down|status|secret|token ROLES [SUB] [TTL]|exec COMMAND..." >&2
    exit 2
    ;;
esac
