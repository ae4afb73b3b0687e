#!/usr/bin/env bash
# Benchmarks that print figures (never assertions: these machines are shared and noisy, so
# compare ratios measured within one run).
#  1. the pure core's throughput on one core;
#  2. end-to-end drains against LocalStack and PostgreSQL at several concurrencies;
#  3. peak memory for a shallow and a 10x deeper queue: bounded memory means a ratio near 1.
#
#   BENCH_MESSAGES   messages per drain (default 10000)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N="${BENCH_MESSAGES:-10000}"

scripts/services.sh up >/dev/null
# shellcheck source=/dev/null
source .run/env
cargo build --release --locked --quiet --bins --benches
export SQS2PG_HMAC_KEY=bench-key-0123456789abcdef
bin="${CARGO_TARGET_DIR:-target}/release/sqs2pg"

echo "== 1. transform (pure core)"
cargo bench --locked --quiet --bench transform 2>/dev/null | grep -v '^$'

# Drains N messages at concurrency C into a fresh database; prints messages/s and peak RSS.
drain() {
  local n="$1" c="$2" tag="bench_$(date +%s%N)"
  psql "$DATABASE_URL" -qc "CREATE DATABASE $tag"
  local urls; urls="$($bin setup --queue-name "$tag")"
  export SQS2PG_QUEUE_URL; SQS2PG_QUEUE_URL="$(sed -n 's/^SQS2PG_QUEUE_URL=//p' <<<"$urls")"
  $bin send --count "$n" --malformed-share 0.01 --seed 7 >/dev/null
  DATABASE_URL="${DATABASE_URL%/*}/$tag" $bin run --drain --concurrency "$c" --metrics-addr 127.0.0.1:0 \
    >".run/$tag.out" 2>".run/$tag.err" &
  local pid=$! peak=0 rss ticks=0 t
  while kill -0 "$pid" 2>/dev/null; do
    rss="$(awk '/VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)"
    [ -n "$rss" ] && [ "$rss" -gt "$peak" ] && peak="$rss"
    # utime + stime of sqs2pg itself, to tell its cost apart from LocalStack's.
    t="$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || true)"
    [ -n "$t" ] && ticks="$t"
    sleep 0.2
  done
  wait "$pid"
  local summary; summary="$(grep '^sqs2pg:' ".run/$tag.out")"
  local rate; rate="$(sed -E 's/.* ([0-9.]+) messages\/s.*/\1/' <<<"$summary")"
  local cpu; cpu="$(awk "BEGIN {print $ticks / $(getconf CLK_TCK)}")"
  local seconds; seconds="$(sed -E 's/.*elapsed: ([0-9.]+) s.*/\1/' <<<"$summary")"
  printf '%8d messages  concurrency %3d  %7.1f messages/s  peak RSS %5.1f MiB  sqs2pg CPU %5.2f s (%3.0f%% of a core)\n' \
    "$n" "$c" "$rate" "$(awk "BEGIN {print $peak / 1024}")" "$cpu" "$(awk "BEGIN {print 100 * $cpu / $seconds}")"
  echo "           ${summary#sqs2pg: }"
  psql "$DATABASE_URL" -qc "DROP DATABASE $tag"
  rm -f ".run/$tag.out" ".run/$tag.err"
  LAST_RATE="$rate"; LAST_PEAK="$peak"
}

echo "== 2. end-to-end drain, $N messages (1% malformed), LocalStack + PostgreSQL on this machine"
drain "$N" 1; base="$LAST_RATE"
for c in 4 16; do
  drain "$N" "$c"
  printf '           speed-up over concurrency 1: %.2fx\n' "$(awk "BEGIN {print $LAST_RATE / $base}")"
done

echo "== 3. memory against queue depth (concurrency 8)"
small=$((N / 10))
drain "$small" 8; small_peak="$LAST_PEAK"
drain "$N" 8; big_peak="$LAST_PEAK"
printf '           peak RSS ratio, %d vs %d queued messages: %.2f\n' "$N" "$small" "$(awk "BEGIN {print $big_peak / $small_peak}")"
