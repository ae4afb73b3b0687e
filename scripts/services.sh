#!/usr/bin/env bash
# Throwaway local services for the demo and the tests, without Docker:
# a PostgreSQL 15 cluster and LocalStack (SQS and SNS), both under .run/ (git-ignored),
# each on a port of its own, each stopped by the PID it was started with.
#
# Run as root, the cluster runs as the `postgres` OS user (initdb refuses root). When that
# user cannot reach .run/ (a checkout under /root, which is drwx------), the cluster's files
# go to a folder of this checkout's own in that user's home instead,
# ~postgres/sqs2pg-<checkout name>-<hash of its path>, and .run/pg is a symlink to it.
#
#   scripts/services.sh install   install what is missing (apt packages, the LocalStack venv)
#   scripts/services.sh up        install, then start both and wait until they are healthy
#   scripts/services.sh down      stop what `up` started
#   scripts/services.sh clean     down, then delete .run/
#   scripts/services.sh env       print the environment that points sqs2pg at them
#   scripts/services.sh status    exit 0 if both are up
#
# Ports: SQS2PG_PG_PORT (default 55439) and SQS2PG_LOCALSTACK_PORT (default 45669).
# Durability: the tests run PostgreSQL with fsync=off, which is fast and loses nothing a
# throwaway cluster needs. SQS2PG_PG_DURABLE=1 (what the benchmark sets) runs it as production
# does instead, fsync and synchronous_commit on, so that every commit waits for its WAL flush.
# `up` restarts a running cluster whose setting differs from the one asked for.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="$ROOT/.run"
PG_PORT="${SQS2PG_PG_PORT:-55439}"
LS_PORT="${SQS2PG_LOCALSTACK_PORT:-45669}"
PG_BIN="${SQS2PG_PG_BIN:-/usr/lib/postgresql/15/bin}"
VENV="$RUN/venv"
if [ "${SQS2PG_PG_DURABLE:-0}" = 1 ]; then
  PG_FSYNC=on; PG_DURABILITY="-c fsync=on -c synchronous_commit=on"
else
  PG_FSYNC=off; PG_DURABILITY="-c fsync=off"
fi
# Checked on this kind of machine: newer releases need Python 3.13, and without
# these pins start-up fails with misleading errors.
# SNS (for the envelope tests) runs on moto: localstack-core[base-runtime] alone fails
# CreateTopic with "No module named 'moto'". This moto-ext is of localstack-core's time.
LOCALSTACK_PIP=('localstack-core[base-runtime]==4.9.2' 'moto-ext==5.1.16.post39' 'cbor2<6' 'pyopenssl<26' 'cryptography<47' service_identity PyYAML)

log() { printf '[services] %s\n' "$*" >&2; }

apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    log "missing packages ($*) and not root: install them with apt-get and retry"
    exit 1
  fi
  if [ ! -f "$RUN/.apt-updated" ]; then
    mkdir -p "$RUN"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    touch "$RUN/.apt-updated"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

install() {
  mkdir -p "$RUN"
  local missing=()
  [ -x "$PG_BIN/initdb" ] || missing+=(postgresql-15)
  command -v psql >/dev/null || missing+=(postgresql-client-15)
  { command -v prometheus >/dev/null && command -v promtool >/dev/null; } || missing+=(prometheus)
  command -v curl >/dev/null || missing+=(curl)
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    apt_install "${missing[@]}"
  fi
  if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import localstack, yaml, moto' 2>/dev/null; then
    log "installing LocalStack into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "${LOCALSTACK_PIP[@]}"
  fi
}

# Runs a PostgreSQL binary as the `postgres` OS user when we are root (initdb refuses root),
# from / (that user may not be able to enter the current folder; every path given is absolute).
as_pg_owner() {
  if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

# Succeeds if the `postgres` OS user can reach (search) the given directory.
postgres_reaches() { runuser -u postgres -- test -x "$1" 2>/dev/null; }

# Where the cluster's files are (data/ and log): .run/pg itself, or where it links to.
pg_dir() {
  if [ -L "$RUN/pg" ]; then readlink "$RUN/pg"; else printf '%s\n' "$RUN/pg"; fi
}

# A folder of this checkout's own that the `postgres` user owns, outside the checkout:
# in that user's home, named after the checkout's path so that two checkouts never share it.
pg_outside_dir() {
  local home name hash
  home="$(getent passwd postgres | cut -d: -f6)"
  name="$(basename "$ROOT")"
  name="${name//[^A-Za-z0-9._-]/_}"
  hash="$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)"
  if [ -n "$home" ] && [ -d "$home" ] && runuser -u postgres -- test -w "$home" 2>/dev/null; then
    printf '%s\n' "$home/sqs2pg-$name-$hash"
  else
    printf '%s\n' "/var/tmp/sqs2pg-$name-$hash"
  fi
}

# Makes .run/pg (a folder, or a symlink to one outside the checkout) and prints where it is.
pg_prepare() {
  mkdir -p "$RUN"
  if [ "$(id -u)" -ne 0 ]; then
    mkdir -p "$RUN/pg"
    pg_dir
    return
  fi
  if [ -d "$RUN/pg" ] && [ ! -L "$RUN/pg" ] && ! postgres_reaches "$RUN/pg"; then
    if [ -f "$RUN/pg/data/PG_VERSION" ]; then
      log "the postgres user cannot reach the cluster in $RUN/pg (was the checkout moved?):"
      log "run scripts/services.sh clean and retry"
      exit 1
    fi
    rm -rf "$RUN/pg" # left by a start that failed for that very reason; nothing in it
  fi
  if [ ! -e "$RUN/pg" ] && [ ! -L "$RUN/pg" ]; then
    if postgres_reaches "$RUN"; then
      mkdir -p "$RUN/pg"
    else
      local outside; outside="$(pg_outside_dir)"
      if [ -L "$outside" ] || { [ -e "$outside" ] && [ "$(stat -c %U "$outside")" != postgres ]; }; then
        log "$outside exists and is not a folder of the postgres user's: remove it and retry"
        exit 1
      fi
      install -d -o postgres -g postgres "$outside"
      ln -s "$outside" "$RUN/pg"
      log "the postgres user cannot reach $RUN: the cluster's files are in $outside (.run/pg links there)"
    fi
  fi
  local dir; dir="$(pg_dir)"
  mkdir -p "$dir"
  chown postgres: "$dir"
  printf '%s\n' "$dir"
}

pg_up() {
  local dir; dir="$(pg_prepare)"
  local data="$dir/data"
  if [ ! -f "$data/PG_VERSION" ]; then
    log "initdb $data"
    as_pg_owner "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  fi
  if as_pg_owner "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    # Asked on the port the cluster really listens on (postmaster.pid's fourth line), which
    # is not PG_PORT if it was started with another: never another checkout's cluster.
    local running port
    port="$(sed -n 4p "$data/postmaster.pid" 2>/dev/null || true)"
    running="$(psql -h 127.0.0.1 -p "${port:-$PG_PORT}" -U postgres -XAtc 'SHOW fsync' 2>/dev/null || true)"
    if [ "$running" = "$PG_FSYNC" ]; then
      log "postgres already running on port $PG_PORT (fsync=$PG_FSYNC)"
      return
    fi
    log "postgres is running with fsync=${running:-unknown}; restarting it with fsync=$PG_FSYNC"
    as_pg_owner "$PG_BIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null
  fi
  log "starting postgres on 127.0.0.1:$PG_PORT (fsync=$PG_FSYNC)"
  as_pg_owner "$PG_BIN/pg_ctl" -D "$data" -l "$dir/log" -w -t 60 \
    -o "-p $PG_PORT -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=300 $PG_DURABILITY" start >/dev/null
}

pg_down() {
  local data; data="$(pg_dir)/data"
  [ -f "$data/postmaster.pid" ] || return 0
  log "stopping postgres"
  as_pg_owner "$PG_BIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null || true
}

# Deletes the cluster's files when they live outside the checkout (.run/pg is a symlink).
pg_remove_outside() {
  [ -L "$RUN/pg" ] || return 0
  local dir; dir="$(pg_dir)"
  case "$(basename "$dir")" in
    sqs2pg-*) rm -rf "$dir"; log "removed $dir" ;;
    *) log "not removing $dir: not a folder this script made" ;;
  esac
}

localstack_healthy() {
  local health
  health="$(curl -fsS "http://127.0.0.1:$LS_PORT/_localstack/health" 2>/dev/null)" || return 1
  grep -Eq '"sqs": *"(running|available)"' <<<"$health" && grep -Eq '"sns": *"(running|available)"' <<<"$health"
}

localstack_up() {
  if localstack_healthy; then
    log "localstack already running on port $LS_PORT"
    return
  fi
  mkdir -p "$RUN/localstack"
  log "starting localstack on 127.0.0.1:$LS_PORT"
  # DNS_ADDRESS=0 and OVERRIDE_IN_DOCKER=0 keep it from rewriting /etc/resolv.conf.
  (
    cd "$RUN/localstack"
    env SERVICES=sqs,sns EAGER_SERVICE_LOADING=1 \
      GATEWAY_LISTEN="127.0.0.1:$LS_PORT" LOCALSTACK_HOST="127.0.0.1:$LS_PORT" \
      SQS_ENDPOINT_STRATEGY=off DNS_ADDRESS=0 OVERRIDE_IN_DOCKER=0 DISABLE_EVENTS=1 \
      SKIP_SSL_CERT_DOWNLOAD=1 PERSISTENCE=0 LS_LOG=warn \
      FILESYSTEM_ROOT="$RUN/localstack/fs" \
      setsid "$VENV/bin/python" -m localstack.runtime.main >"$RUN/localstack/log" 2>&1 &
    echo $! >"$RUN/localstack/pid"
  )
  for _ in $(seq 1 120); do
    if localstack_healthy; then return; fi
    if ! kill -0 "$(cat "$RUN/localstack/pid")" 2>/dev/null; then
      log "localstack exited; its log:"; tail -n 40 "$RUN/localstack/log" >&2; exit 1
    fi
    sleep 0.5
  done
  log "localstack did not become healthy in 60 s; its log:"; tail -n 40 "$RUN/localstack/log" >&2
  exit 1
}

localstack_down() {
  local pidfile="$RUN/localstack/pid"
  [ -f "$pidfile" ] || return 0
  local pid; pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping localstack"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

print_env() {
  cat <<EOF
export DATABASE_URL='postgres://postgres@127.0.0.1:$PG_PORT/postgres'
export AWS_ENDPOINT_URL='http://127.0.0.1:$LS_PORT'
export AWS_REGION='us-east-1'
export AWS_ACCESS_KEY_ID='test'
export AWS_SECRET_ACCESS_KEY='test'
export SQS2PG_PG_BIN='$PG_BIN'
EOF
}

case "${1:-}" in
  install) install ;;
  up) install; pg_up; localstack_up; print_env >"$RUN/env"; log "up; environment in .run/env" ;;
  down) localstack_down; pg_down ;;
  clean) localstack_down; pg_down; pg_remove_outside; rm -rf "$RUN"; log "removed .run/" ;;
  env) print_env ;;
  status)
    as_pg_owner "$PG_BIN/pg_ctl" -D "$(pg_dir)/data" status >/dev/null 2>&1 && localstack_healthy \
      && echo "postgres on $PG_PORT and localstack on $LS_PORT are up" ;;
  *) echo "usage: $0 install|up|down|clean|env|status" >&2; exit 2 ;;
esac
