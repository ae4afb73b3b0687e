#!/usr/bin/env bash
# The benchmark (`make bench`): every figure below in one run, on this machine, with the same
# N messages, against the PostgreSQL and LocalStack that scripts/services.sh starts.
#
#   transform  the pure core (parse, validate, mask) on one core, no I/O
#   (a) queue ceiling  N preloaded messages drained with receive + DeleteMessageBatch only,
#                      no database; sqs2pg's SQS client and concurrency (benches/queue_ceiling.rs)
#   (b) sqs2pg         `sqs2pg run --drain` on N messages, then a row check: exactly one row
#                      per valid message; again on N/10 for peak memory against queue depth
#   (c) reference      the original, naive approach in Python (bench/reference.py)
#   (d) sink ceiling   transform + Sink::insert fed from memory, against a plain binary COPY
#                      of the same rows into an identical table (benches/sink_ceiling.rs)
#   latency            `sqs2pg run` under a steady produced load: SentTimestamp to commit
#
# It prints a table, checks the targets (PASS/MISS: printed, never an exit status; these
# machines are shared and noisy), and writes the same figures as JSON. It exits non-zero only
# when something is broken, e.g. the row check fails.
#
#   BENCH_MESSAGES         N, messages per measurement (default 20000)
#   BENCH_CONCURRENCY      receive loops / writers (default: sqs2pg's own default)
#   BENCH_LATENCY_RATE     produced messages per second in the latency run (default 500)
#   BENCH_LATENCY_SECONDS  how long the latency run produces (default 30)
#   BENCH_JSON             where the JSON goes (default target/bench/results.json)
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N="${BENCH_MESSAGES:-20000}"
LATENCY_RATE="${BENCH_LATENCY_RATE:-500}"
LATENCY_SECONDS="${BENCH_LATENCY_SECONDS:-30}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
JSON_OUT="${BENCH_JSON:-$TARGET_DIR/bench/results.json}"
MALFORMED_SHARE=0.01
SEED=7
RUN_DIR=".run/bench/$(date +%Y%m%d-%H%M%S)"
BIN="$RUN_DIR/bin"
PY=.run/venv/bin/python
CLK_TCK="$(getconf CLK_TCK)"
export SQS2PG_HMAC_KEY=bench-key-0123456789abcdef SQS2PG_LOG_FORMAT=json BENCH_CLK_TCK="$CLK_TCK"
# The benchmark sets these itself, per measurement.
unset SQS2PG_QUEUE_URL SQS2PG_DLQ_URL SQS2PG_CONCURRENCY SQS2PG_METRICS_ADDR

step() { printf '\n== %s\n' "$*"; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

# --- what the measurements share ------------------------------------------------------------

DATABASES=()
QUEUES=()
BACKGROUND=()

cleanup() {
  local pid
  for pid in "${BACKGROUND[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${BACKGROUND[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ "${#QUEUES[@]}" -eq 0 ] || delete_queues "${QUEUES[@]}" || true
  local db
  for db in "${DATABASES[@]}"; do
    psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db" 2>/dev/null || true
  done
  rm -rf "$BIN" # half a gigabyte of binaries; the logs and figures stay
}

start_services() {
  scripts/services.sh up >/dev/null
  # shellcheck source=/dev/null
  source .run/env
  find_service_pids
  # boto3 reads the region from AWS_DEFAULT_REGION, not AWS_REGION.
  export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-$AWS_REGION}"
  if ! "$PY" -c 'import psycopg2' 2>/dev/null; then
    echo "installing psycopg2-binary into .run/venv (for the reference consumer)"
    "$PY" -m pip install -q --disable-pip-version-check psycopg2-binary
  fi
}

# Builds once, then runs copies: others may rebuild target/ while the benchmark runs.
build() {
  mkdir -p "$BIN"
  cargo build --release --locked --bins --benches --message-format=json-render-diagnostics \
    >"$RUN_DIR/build.json"
  cp "$TARGET_DIR/release/sqs2pg" "$BIN/sqs2pg"
  local name path
  for name in transform queue_ceiling sink_ceiling paced_send; do
    path="$(grep '"reason":"compiler-artifact"' "$RUN_DIR/build.json" | grep '"kind":\["bench"\]' \
      | grep "\"name\":\"$name\"" | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1 || true)"
    [ -n "$path" ] || die "no executable for bench $name in the build output"
    cp "$path" "$BIN/$name"
  done
}

# sqs2pg's default concurrency, from its own help.
default_concurrency() {
  "$BIN/sqs2pg" run --help | sed -n '/--concurrency/,/default:/p' \
    | sed -n 's/.*\[default: \([0-9]*\)\].*/\1/p' | head -n 1
}

fresh_database() {
  local name; name="bench_${1}_$(date +%s%N)"
  psql "$DATABASE_URL" -qc "CREATE DATABASE $name"
  DATABASES+=("$name")
  FRESH_DB_URL="${DATABASE_URL%/*}/$name"
}

# Creates a queue and its DLQ with `sqs2pg setup`; sets QUEUE_URL.
fresh_queue() {
  local name urls; name="bench-${1}-$(date +%s%N)"
  urls="$("$BIN/sqs2pg" setup --queue-name "$name")"
  QUEUE_URL="$(sed -n 's/^SQS2PG_QUEUE_URL=//p' <<<"$urls")"
  QUEUES+=("$QUEUE_URL" "$(sed -n 's/^SQS2PG_DLQ_URL=//p' <<<"$urls")")
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

# Preloads N events with `sqs2pg send`; sets MALFORMED to how many are malformed.
preload() {
  local n="$1" out
  out="$(SQS2PG_QUEUE_URL="$QUEUE_URL" "$BIN/sqs2pg" send --count "$n" \
    --malformed-share "$MALFORMED_SHARE" --seed "$SEED")"
  MALFORMED="$(sed -n 's/^sent [0-9]* events (\([0-9]*\) malformed).*/\1/p' <<<"$out")"
  [ -n "$MALFORMED" ] || die "unexpected output from sqs2pg send: $out"
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

# The services' PIDs, once they are up (start_services): LocalStack's Python process, and the
# postmaster, whose children are the backends. Read before `services.sh up`, they were empty
# whenever the benchmark itself started the services, and their CPU read as 0.
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

# --- the measurements -------------------------------------------------------------------------

describe_machine() {
  local model mem
  model="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
  mem="$(awk '/^MemTotal/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)"
  printf '{"nproc": %d, "cpu_model": "%s", "ram_gib": %s, "kernel": "%s", "loadavg_at_start": "%s", "commit": "%s", "date": "%s"}\n' \
    "$(nproc)" "${model//\"/}" "$mem" "$(uname -r)" "$(cut -d' ' -f1-3 /proc/loadavg)" \
    "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo -dirty)" \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$RUN_DIR/machine.json"
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
  step "(a) queue ceiling: $N messages, receive + DeleteMessageBatch only, concurrency $CONCURRENCY"
  fresh_queue queue
  preload "$N"
  services_mark
  local result
  result="$(SQS2PG_QUEUE_URL="$QUEUE_URL" BENCH_MESSAGES="$N" BENCH_CONCURRENCY="$CONCURRENCY" \
    "$PY" bench/rusage.py "$RUN_DIR/a.rusage.json" -- "$BIN/queue_ceiling" --bench)"
  printf '{"result": %s, "rusage": %s, "services": %s}\n' \
    "$result" "$(cat "$RUN_DIR/a.rusage.json")" "$(services_json)" >"$RUN_DIR/queue.json"
  echo "$result"
}

# (b): drains N messages with `sqs2pg run --drain` into a fresh database, then checks the rows.
measure_drain() {
  local n="$1" name="$2"
  step "(b) sqs2pg run --drain: $n messages (${MALFORMED_SHARE} malformed), concurrency $CONCURRENCY"
  fresh_database "$name"
  local db="$FRESH_DB_URL"
  fresh_queue "$name"
  preload "$n"
  services_mark
  local status=0
  SQS2PG_QUEUE_URL="$QUEUE_URL" DATABASE_URL="$db" \
    "$PY" bench/rusage.py "$RUN_DIR/$name.rusage.json" -- "$BIN/sqs2pg" run --drain \
    --concurrency "$CONCURRENCY" --metrics-addr 127.0.0.1:0 \
    >"$RUN_DIR/$name.out" 2>"$RUN_DIR/$name.log" || status=$?
  local services; services="$(services_json)"
  [ "$status" -eq 0 ] || die "sqs2pg run --drain exited $status; see $RUN_DIR/$name.log"
  local summary; summary="$(sed -n 's/^sqs2pg: //p' "$RUN_DIR/$name.out")"
  echo "$summary"
  # The row check: one row per valid message, each message id once; one dead letter per
  # malformed message.
  local rows distinct dead
  IFS='|' read -r rows distinct dead <<<"$(sql "$db" \
    'SELECT count(*), count(DISTINCT message_id), (SELECT count(*) FROM dead_letters) FROM user_logins')"
  local valid=$((n - MALFORMED)) ok=true
  if [ "$rows" -ne "$valid" ] || [ "$distinct" -ne "$rows" ] || [ "$dead" -ne "$MALFORMED" ]; then
    ok=false
    echo "ROW CHECK FAILED: $rows rows ($distinct distinct message ids) for $valid valid messages; $dead dead letters for $MALFORMED malformed" >&2
  else
    echo "row check: $rows rows for $valid valid messages, all distinct; $dead dead letters for $MALFORMED malformed: OK"
  fi
  printf '{"messages": %d, "malformed": %d, "valid": %d, "rows": %d, "distinct_message_ids": %d, "dead_letters": %d, "row_check": %s, "summary": "%s", "rusage": %s, "services": %s}\n' \
    "$n" "$MALFORMED" "$valid" "$rows" "$distinct" "$dead" "$ok" \
    "$summary" "$(cat "$RUN_DIR/$name.rusage.json")" "$services" >"$RUN_DIR/$name.json"
}

# (c)
measure_reference() {
  step "(c) reference: the original approach in Python, $N messages"
  fresh_database reference
  local db="$FRESH_DB_URL"
  DATABASE_URL="$db" "$BIN/sqs2pg" migrate >/dev/null 2>"$RUN_DIR/reference.migrate.log"
  fresh_queue reference
  preload "$N"
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

# (d)
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
    result="$(DATABASE_URL="$FRESH_DB_URL" BENCH_MESSAGES="$N" BENCH_CONCURRENCY="$CONCURRENCY" BENCH_BATCH_SIZE="$batch" \
      "$PY" bench/rusage.py "$RUN_DIR/$name.rusage.json" -- "$BIN/sink_ceiling" --bench)"
    echo "$result"
    printf '{"result": %s, "rusage": %s, "services": %s}\n' \
      "$result" "$(cat "$RUN_DIR/$name.rusage.json")" "$(services_json)" >"$RUN_DIR/$name.json"
  done
}

# Latency under a steady load: `sqs2pg run` on a fresh queue and database, a paced producer,
# then SIGTERM once every row is in. Lag is ingested_at (the row's transaction timestamp)
# minus sent_at (SentTimestamp), both from this machine's clock.
measure_latency() {
  step "latency: ${LATENCY_RATE} messages/s for ${LATENCY_SECONDS} s into sqs2pg run"
  fresh_database latency
  local db="$FRESH_DB_URL"
  fresh_queue latency
  SQS2PG_QUEUE_URL="$QUEUE_URL" DATABASE_URL="$db" \
    "$PY" bench/rusage.py "$RUN_DIR/latency.rusage.json" -- "$BIN/sqs2pg" run \
    --concurrency "$CONCURRENCY" --metrics-addr 127.0.0.1:0 \
    >"$RUN_DIR/latency.out" 2>"$RUN_DIR/latency.log" &
  local pid=$!
  BACKGROUND+=("$pid")
  local addr="" tries
  for tries in $(seq 1 120); do
    kill -0 "$pid" 2>/dev/null || die "sqs2pg run exited early; see $RUN_DIR/latency.log"
    [ -n "$addr" ] || addr="$(sed -n 's/.*"addr":"\([^"]*\)".*/\1/p' "$RUN_DIR/latency.log" | head -n 1)"
    if [ -n "$addr" ] && curl -fs "http://$addr/readyz" >/dev/null 2>&1; then break; fi
    [ "$tries" -lt 120 ] || die "sqs2pg run did not become ready in 60 s"
    sleep 0.5
  done
  services_mark
  local ticks_before; ticks_before="$(tree_ticks "$pid")"
  local produced
  produced="$(SQS2PG_QUEUE_URL="$QUEUE_URL" BENCH_LATENCY_RATE="$LATENCY_RATE" \
    BENCH_LATENCY_SECONDS="$LATENCY_SECONDS" "$BIN/paced_send" --bench)"
  echo "producer: $produced"
  local sent rows=0
  sent="$("$PY" -c 'import json, sys; print(json.loads(sys.argv[1])["sent"])' "$produced")"
  for _ in $(seq 1 120); do
    rows="$(sql "$db" 'SELECT count(*) FROM user_logins')"
    [ "$rows" -lt "$sent" ] || break
    sleep 0.5
  done
  local services; services="$(services_json)"
  # sqs2pg's CPU while producing and catching up, without start-up and shutdown.
  local consumer_cpu
  consumer_cpu="$(awk -v t=$(($(tree_ticks "$pid") - ticks_before)) -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')"
  kill -TERM "$pid"
  local status=0
  wait "$pid" || status=$?
  BACKGROUND=()
  [ "$status" -eq 0 ] || die "sqs2pg run exited $status after SIGTERM; see $RUN_DIR/latency.log"
  [ "$rows" -eq "$sent" ] || die "latency run: $rows rows for $sent messages sent"
  local p50 p99 max mean
  IFS='|' read -r p50 p99 max mean <<<"$(sql "$db" "
    SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY lag)::numeric, 1),
           round(percentile_cont(0.99) WITHIN GROUP (ORDER BY lag)::numeric, 1),
           round(max(lag)::numeric, 1), round(avg(lag)::numeric, 1)
    FROM (SELECT extract(epoch FROM ingested_at - sent_at) * 1000 AS lag FROM user_logins) AS lags")"
  echo "end-to-end lag: p50 ${p50} ms, p99 ${p99} ms, max ${max} ms ($rows rows)"
  printf '{"producer": %s, "rows": %d, "p50_ms": %s, "p99_ms": %s, "max_ms": %s, "mean_ms": %s, "consumer_cpu_seconds": %s, "summary": "%s", "rusage": %s, "services": %s}\n' \
    "$produced" "$rows" "$p50" "$p99" "$max" "$mean" "$consumer_cpu" "$(sed -n 's/^sqs2pg: //p' "$RUN_DIR/latency.out")" \
    "$(cat "$RUN_DIR/latency.rusage.json")" "$services" >"$RUN_DIR/latency.json"
}

# --- the run ----------------------------------------------------------------------------------

main() {
  mkdir -p "$RUN_DIR" "$(dirname "$JSON_OUT")"
  start_services
  trap cleanup EXIT
  trap 'echo "bench: failed at line $LINENO" >&2' ERR
  step "build (release)"
  build
  CONCURRENCY="${BENCH_CONCURRENCY:-$(default_concurrency)}"
  [ -n "$CONCURRENCY" ] || die "could not read sqs2pg's default concurrency from its help"
  describe_machine
  echo "N=$N, concurrency $CONCURRENCY, results in $RUN_DIR"

  measure_transform
  measure_queue_ceiling
  measure_drain "$N" drain
  # Peak memory against queue depth: a 10x shallower queue should need about as much.
  measure_drain $((N / 10)) drain_small
  measure_reference
  measure_sink_ceiling
  measure_latency

  step "results"
  "$PY" bench/report.py "$RUN_DIR" "$JSON_OUT" \
    --latency-rate "$LATENCY_RATE" --latency-seconds "$LATENCY_SECONDS" \
    --concurrency "$CONCURRENCY" --malformed-share "$MALFORMED_SHARE"
}

main "$@"
