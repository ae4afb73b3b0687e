#!/usr/bin/env bash
# The demo, end to end on a fresh clone: installs what is missing, starts PostgreSQL and
# LocalStack, creates the queues, sends 100 synthetic login events (one malformed),
# drains them into a fresh database, and shows the rows and the counts.
# The services stay up afterwards so you can look around; `scripts/services.sh down` stops them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust with rustup (https://rustup.rs) and retry" >&2
  exit 1
fi

say "Starting PostgreSQL and LocalStack (installing them if missing)"
scripts/services.sh up
# shellcheck source=/dev/null
source .run/env

say "Building sqs2pg"
cargo build --locked --quiet
sqs2pg() { "${CARGO_TARGET_DIR:-target}/debug/sqs2pg" "$@"; }

# A random key of this demo's own; in production, mount a secret as SQS2PG_HMAC_KEY_FILE.
if [ ! -s .run/demo-hmac.key ]; then
  python3 -c 'import secrets; print(secrets.token_hex(32))' > .run/demo-hmac.key
fi
export SQS2PG_HMAC_KEY_FILE="$PWD/.run/demo-hmac.key"

# A fresh database and fresh queues for every run, so the counts below are this run's.
# The database stays afterwards, to look around in; the queues are deleted on the way out.
export DATABASE_URL="${DATABASE_URL%/*}/sqs2pg_demo"
psql "${DATABASE_URL%/*}/postgres" -q -c 'SET client_min_messages = warning' \
  -c 'DROP DATABASE IF EXISTS sqs2pg_demo' -c 'CREATE DATABASE sqs2pg_demo'
queue="user-logins-demo-$(date +%s)"

# sqs2pg has no command to delete a queue; LocalStack's own Python environment has boto3.
queue_urls=()
delete_queues() {
  [ "${#queue_urls[@]}" -gt 0 ] || return 0
  .run/venv/bin/python -c 'import os, sys, boto3
sqs = boto3.client("sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=os.environ["AWS_REGION"])
for url in sys.argv[1:]:
    sqs.delete_queue(QueueUrl=url)' "${queue_urls[@]}" \
    || echo "could not delete the demo's queues (${queue_urls[*]})" >&2
}
trap delete_queues EXIT

say "sqs2pg setup: the queue and its dead-letter queue"
setup="$(sqs2pg setup --queue-name "$queue" --output json)"
echo "$setup"
# The URLs, read from setup's JSON (python3 is a prerequisite already: services.sh needs it).
url_of() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]]["url"])' "$setup" "$1"; }
SQS2PG_QUEUE_URL="$(url_of queue)"
queue_urls=("$SQS2PG_QUEUE_URL" "$(url_of dlq)")
export SQS2PG_QUEUE_URL

say "sqs2pg send: 100 login events, one of them malformed"
sqs2pg send --count 100 --malformed-share 0.01 --seed 42

say "The login stream: what each event becomes (streams/logins.toml, also built in)"
grep -v '^#' streams/logins.toml | sed '/^$/N;/^\n$/D' | head -n 40
export SQS2PG_STREAMS="$PWD/streams/logins.toml"
sqs2pg schema ddl

say "sqs2pg run --drain --streams streams/logins.toml: consume until the queue is empty"
# Its log first, then its summary (which counts what the log explains).
if ! sqs2pg run --drain --metrics-addr 127.0.0.1:0 --log-format text >.run/demo-run.out 2>.run/demo-run.log; then
  cat .run/demo-run.out
  tail -n 40 .run/demo-run.log >&2
  echo "sqs2pg run --drain failed; its log is in .run/demo-run.log" >&2
  exit 1
fi
grep -E 'Dead-lettered' .run/demo-run.log | sed 's/\x1b\[[0-9;]*m//g' || true
cat .run/demo-run.out

say "select * from user_logins"
psql "$DATABASE_URL" -P pager=off -c 'SELECT * FROM user_logins ORDER BY sent_at, message_id'

say "The counts"
psql "$DATABASE_URL" -P pager=off \
  -c "SELECT count(*) AS rows_inserted FROM user_logins" \
  -c "SELECT reason, count(*) AS dead_lettered FROM dead_letters GROUP BY reason"

say "sqs2pg dlq inspect: the dead-letter queue, PII masked"
sqs2pg dlq inspect

say "sqs2pg status: where the deployment stands (exit 2: the dead letter just recorded)"
sqs2pg status || echo "(status exited $?: attention, as the line above says)"

delete_queues
queue_urls=()
say "Done"
echo "The demo's queues are deleted; its rows stay, in: psql $DATABASE_URL"
echo "Stop the services with: scripts/services.sh down   (or clean, to delete .run/ as well)"
