#!/usr/bin/env bash
# Make PostgreSQL, Redis and RabbitMQ answer on their default local ports
# (127.0.0.1:5432 / 6379 / 5672) on a Debian machine without systemd.
# Called by `make up` and `make test`. Idempotent: a second run changes nothing.
#
# Usage: infra/local-services.sh [--check]
#   --check   only report status (no changes); exit non-zero if anything is not ready.
#
# Environment:
#   FRAUDSENSE_DB   database to create (default: fraudsense)
set -euo pipefail

readonly DB_NAME="${FRAUDSENSE_DB:-fraudsense}"
readonly PG_HOST=127.0.0.1 PG_PORT=5432 PG_USER=postgres PG_PASSWORD=postgres
readonly REDIS_PORT=6379 AMQP_PORT=5672 MGMT_PORT=15672
readonly PG_WAIT=30 REDIS_WAIT=30 RABBIT_WAIT=60 MGMT_WAIT=30
readonly RABBIT_PLUGINS=(rabbitmq_management rabbitmq_consistent_hash_exchange rabbitmq_prometheus)

CHECK_ONLY=0
case "${1:-}" in
  "") ;;
  --check) CHECK_ONLY=1 ;;
  -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "local-services: unknown argument: $1 (usage: $0 [--check])" >&2; exit 2 ;;
esac

die() { echo "local-services: error: $*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
is_root() { [[ $(id -u) -eq 0 ]]; }

# Bounded TCP connect using bash's /dev/tcp (no curl/nc needed).
port_open() {
  # shellcheck disable=SC2016 # $0/$1 are expanded by the inner bash
  timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

# wait_until SECONDS CMD...: retry CMD once per second until it succeeds or time runs out.
wait_until() {
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 1
  done
}

# --- apt (runs `apt-get update` at most once, only when something must be installed) ---
APT_UPDATED=0
apt_install() { # apt_install SERVICE PACKAGE
  local service=$1 pkg=$2 log
  if ! is_root || ! have apt-get; then
    die "$service is not installed and cannot be installed automatically (needs root and apt-get)." \
        "Install the '$pkg' package (e.g. 'sudo apt-get install $pkg') and re-run."
  fi
  log=$(mktemp "${TMPDIR:-/tmp}/local-services-apt.XXXXXX")
  echo "$service: installing $pkg with apt-get (log: $log) ..." >&2
  if ((APT_UPDATED == 0)); then
    apt-get update >>"$log" 2>&1 || { tail -n 20 "$log" >&2; die "apt-get update failed (see $log)"; }
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$pkg" >>"$log" 2>&1 \
    || { tail -n 20 "$log" >&2; die "apt-get install $pkg failed (see $log)"; }
  rm -f "$log"
}

# Run a start command; on failure show its output but keep going: the bounded
# wait that follows decides (e.g. a package post-install script may have
# started the service concurrently). Output goes to a file, not a pipe, so a
# daemon that keeps an inherited stdout/stderr open cannot make us hang.
run_start() { # run_start SERVICE CMD...
  local service=$1 out; shift
  out=$(mktemp "${TMPDIR:-/tmp}/local-services-start.XXXXXX")
  if ! timeout 120 "$@" </dev/null >"$out" 2>&1; then
    echo "$service: start command failed: $*" >&2
    cat "$out" >&2
  fi
  rm -f "$out"
}

# ============================== PostgreSQL ==============================
pg_up() {
  if have pg_isready; then
    pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 3
  else
    port_open "$PG_HOST" "$PG_PORT"
  fi
}

pg_cluster_version() { # newest version that has a 'main' cluster
  local conf
  for conf in /etc/postgresql/*/main/postgresql.conf; do
    [[ -e $conf ]] || continue
    conf=${conf#/etc/postgresql/}
    echo "${conf%%/*}"
  done | sort -V | tail -n 1
}

pg_installed() { have pg_ctlcluster && [[ -n $(pg_cluster_version) ]]; }

pg_start() {
  local version
  version=$(pg_cluster_version)
  [[ -n $version ]] || die "postgresql: no cluster found under /etc/postgresql (create one: pg_createcluster <version> main)"
  run_start postgresql pg_ctlcluster --skip-systemctl-redirect "$version" main start
}

# psql against the postgres database over TCP, exactly like the application connects.
pg_sql() {
  PGPASSWORD=$PG_PASSWORD PGCONNECT_TIMEOUT=5 \
    psql -X -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -v ON_ERROR_STOP=1 -At "$@"
}
pg_auth_ok() { [[ $(pg_sql -c 'select 1' 2>/dev/null) == 1 ]]; }
pg_db_exists() {
  local out
  out=$(pg_sql -v db="$DB_NAME" <<<"select 1 from pg_database where datname = :'db'") || return 2
  [[ $out == 1 ]]
}

ensure_postgresql() {
  local state
  if pg_up; then
    state="already running"
  else
    state="started"
    if ! pg_installed; then
      apt_install postgresql postgresql
      state="installed and started"
    fi
    pg_up || pg_start
    wait_until "$PG_WAIT" pg_up \
      || die "postgresql: not accepting connections on $PG_HOST:$PG_PORT after ${PG_WAIT}s (see /var/log/postgresql/)"
  fi
  echo "postgresql: $state"

  have psql || apt_install postgresql-client postgresql-client
  have createdb || apt_install postgresql-client postgresql-client

  # Credentials postgres/postgres over TCP (fresh Debian uses scram on 127.0.0.1
  # and the postgres role has no password). Only touch the password if needed.
  if ! pg_auth_ok; then
    if ! is_root || ! have runuser; then
      die "postgresql: cannot log in as $PG_USER/$PG_PASSWORD on $PG_HOST:$PG_PORT." \
          "Set the password as root: runuser -u postgres -- psql -c \"ALTER USER postgres PASSWORD 'postgres'\""
    fi
    (cd / && runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -c "ALTER USER postgres PASSWORD 'postgres'") \
      || die "postgresql: failed to set the password of role postgres"
    pg_auth_ok || die "postgresql: still cannot log in as $PG_USER/$PG_PASSWORD on $PG_HOST:$PG_PORT (check pg_hba.conf)"
    echo "postgresql: password of role postgres set"
  fi

  local rc=0
  pg_db_exists || rc=$?
  case $rc in
    0) echo "postgresql database $DB_NAME: exists" ;;
    1)
      PGPASSWORD=$PG_PASSWORD createdb -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -- "$DB_NAME" \
        || die "postgresql: failed to create database $DB_NAME"
      echo "postgresql database $DB_NAME: created" ;;
    *) die "postgresql: could not query pg_database" ;;
  esac
}

# ================================ Redis ================================
redis_up() {
  if have redis-cli; then
    [[ $(timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
  else # speak RESP directly
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" && printf "PING\r\n" >&3 && read -r line <&3 && [[ $line == +PONG* ]]' \
      "$REDIS_PORT" 2>/dev/null
  fi
}

ensure_redis() {
  local state
  if redis_up; then
    state="already running"
  else
    state="started"
    if ! have redis-server; then
      apt_install redis redis-server
      state="installed and started"
    fi
    if ! redis_up; then
      mkdir -p /var/lib/redis /var/log/redis \
        || die "redis: cannot create /var/lib/redis and /var/log/redis (run as root)"
      run_start redis redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
    fi
    wait_until "$REDIS_WAIT" redis_up \
      || die "redis: no PONG on 127.0.0.1:$REDIS_PORT after ${REDIS_WAIT}s (see /var/log/redis/ci.log)"
  fi
  echo "redis: $state"
}

# =============================== RabbitMQ ===============================
rabbit_up() {
  port_open 127.0.0.1 "$AMQP_PORT" || return 1
  # check_running needs the Erlang cookie, i.e. root (or the rabbitmq user);
  # otherwise the open AMQP port is all we can check.
  if is_root && have rabbitmq-diagnostics; then
    timeout 30 rabbitmq-diagnostics -q check_running >/dev/null 2>&1
  fi
}

# Prints the requested plugins that are not enabled; fails if the list cannot be read.
# Falls back to the enabled_plugins file (readable without the Erlang cookie).
rabbit_missing_plugins() {
  local enabled p file=${RABBITMQ_ENABLED_PLUGINS_FILE:-/etc/rabbitmq/enabled_plugins}
  if ! enabled=$(timeout 60 rabbitmq-plugins -q list -e -m 2>/dev/null); then
    [[ -r $file ]] || return 1
    enabled=$(tr -d '[]. \n\t\r' <"$file" | tr ',' '\n')  # "[a,b,c]." -> one name a line
  fi
  for p in "${RABBIT_PLUGINS[@]}"; do
    grep -qxF "$p" <<<"$enabled" || echo "$p"
  done
}

mgmt_up() { # the management API answers HTTP
  # shellcheck disable=SC2016 # expanded by the inner bash
  timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$0" && printf "GET /api/overview HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3 && read -r line <&3 && [[ $line == HTTP/* ]]' \
    "$MGMT_PORT" 2>/dev/null
}

ensure_rabbitmq() {
  local state
  if rabbit_up; then
    state="already running"
  else
    state="started"
    if ! have rabbitmq-server; then
      apt_install rabbitmq rabbitmq-server
      state="installed and started"
    fi
    rabbit_up || run_start rabbitmq rabbitmq-server -detached
    wait_until "$RABBIT_WAIT" rabbit_up \
      || die "rabbitmq: not running on 127.0.0.1:$AMQP_PORT after ${RABBIT_WAIT}s (see /var/log/rabbitmq/)"
  fi
  echo "rabbitmq: $state"

  local missing
  missing=$(rabbit_missing_plugins) \
    || die "rabbitmq: 'rabbitmq-plugins list' failed (run as root so the CLI can read the Erlang cookie)"
  if [[ -z $missing ]]; then
    echo "rabbitmq plugins: already enabled"
  else
    timeout 120 rabbitmq-plugins -q enable "${RABBIT_PLUGINS[@]}" >/dev/null \
      || die "rabbitmq: 'rabbitmq-plugins enable ${RABBIT_PLUGINS[*]}' failed"
    echo "rabbitmq plugins: enabled"
  fi
  wait_until "$MGMT_WAIT" mgmt_up \
    || die "rabbitmq: management API not answering on 127.0.0.1:$MGMT_PORT after ${MGMT_WAIT}s"
}

# ================================ --check ================================
check_all() {
  local failed=0 missing rc
  if pg_up; then
    echo "postgresql: running"
    if ! have psql; then
      echo "postgresql database $DB_NAME: unknown (psql not installed)"; failed=1
    elif ! pg_auth_ok; then
      echo "postgresql database $DB_NAME: unknown (cannot log in as $PG_USER/$PG_PASSWORD)"; failed=1
    else
      rc=0; pg_db_exists || rc=$?
      case $rc in
        0) echo "postgresql database $DB_NAME: exists" ;;
        1) echo "postgresql database $DB_NAME: missing"; failed=1 ;;
        *) echo "postgresql database $DB_NAME: unknown (query failed)"; failed=1 ;;
      esac
    fi
  else
    echo "postgresql: down"; failed=1
  fi

  if redis_up; then echo "redis: running"; else echo "redis: down"; failed=1; fi

  if rabbit_up; then
    echo "rabbitmq: running"
    if ! have rabbitmq-plugins || ! missing=$(rabbit_missing_plugins); then
      echo "rabbitmq plugins: unknown (cannot run rabbitmq-plugins)"; failed=1
    elif [[ -n $missing ]]; then
      echo "rabbitmq plugins: missing $(echo "$missing" | tr '\n' ' ' | sed 's/ $//')"; failed=1
    elif mgmt_up; then
      echo "rabbitmq plugins: enabled"
    else
      echo "rabbitmq plugins: enabled, but management API not answering on 127.0.0.1:$MGMT_PORT"; failed=1
    fi
  else
    echo "rabbitmq: down"; failed=1
  fi
  return "$failed"
}

# ================================= main =================================
if ((CHECK_ONLY)); then
  check_all
  exit
fi

[[ $DB_NAME =~ ^[A-Za-z_][A-Za-z0-9_-]*$ ]] || die "FRAUDSENSE_DB='$DB_NAME' is not a plain database name"

# Serialise concurrent runs (e.g. `make -j up test`) so they don't race to start
# the same service. The script re-runs itself under flock(1) with -o so the lock
# fd is NOT inherited by the daemons we start (otherwise e.g. redis-server would
# hold the lock forever and every later run would block).
if [[ -z ${FRAUDSENSE_LOCAL_SERVICES_LOCKED:-} ]] && have flock; then
  lock="${TMPDIR:-/tmp}/fraudsense-local-services.$(id -u).lock"
  rc=0
  FRAUDSENSE_LOCAL_SERVICES_LOCKED=1 flock -o -E 75 -w 600 "$lock" "$BASH" "${BASH_SOURCE[0]}" "$@" || rc=$?
  ((rc != 75)) || die "timed out after 600s waiting for another run of $0 (lock: $lock)"
  exit "$rc"
fi

ensure_postgresql
ensure_redis
ensure_rabbitmq
