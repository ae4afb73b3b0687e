#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what is missing, starts the throwaway
# PostgreSQL and LocalStack (and stops them again if it started them), then runs the
# format and lint checks, a short fuzzing run of the pure core, and every test, unit and
# integration, against the real services. CI runs exactly this (.ci/run).
#
#   SQS2PG_FUZZ_SECONDS  how long to fuzz each target of the pure core (default 30; 0 skips)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust with rustup (https://rustup.rs) and retry" >&2
  exit 1
fi

# Every crate in Cargo.lock, for every platform: a build downloads only this platform's
# crates, but cargo deny (run offline below) reads the whole graph.
step "cargo fetch (the whole dependency graph)"
cargo fetch --locked

started_services=0
if [ ! -f .run/env ] || ! scripts/services.sh status >/dev/null 2>&1; then
  started_services=1
fi
step "services"
scripts/services.sh up
if [ "$started_services" = 1 ]; then
  trap 'scripts/services.sh down' EXIT
fi
# shellcheck source=/dev/null
source .run/env

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --all-targets --locked -- -D warnings

# Advisories are left out: they need the RustSec database from the network (see README).
step "cargo deny: bans, licenses, sources (deny.toml)"
# Asked through cargo, which also finds subcommands in $CARGO_HOME/bin when that is not on PATH.
cargo deny --version >/dev/null 2>&1 || cargo install cargo-deny --locked --quiet
cargo deny --offline check --hide-inclusion-graph bans licenses sources

step "the pure core builds without the service (no I/O dependencies)"
cargo build --lib --no-default-features --locked

step "Kubernetes manifests: render both overlays, validate offline (scripts/kubernetes.sh)"
scripts/kubernetes.sh validate

fuzz_seconds="${SQS2PG_FUZZ_SECONDS:-30}"
if [ "$fuzz_seconds" != 0 ]; then
  cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
  # cargo-fuzz passes nightly-only flags (AddressSanitizer); RUSTC_BOOTSTRAP lets the stable
  # toolchain accept them. rustc facts cached without it would say otherwise: drop them.
  export RUSTC_BOOTSTRAP=1
  rm -f fuzz/target/.rustc_info.json
  for target in transform fields envelope stream_transform stream_file; do
    step "fuzz the pure core: target ${target} for ${fuzz_seconds} s"
    mkdir -p "fuzz/corpus/$target"
    seeds=(); [ -d "fuzz/seeds/$target" ] && seeds=("seeds/$target")
    log=".run/fuzz-$target.log"
    if ! (cd fuzz && cargo fuzz run "$target" "corpus/$target" "${seeds[@]}" -- \
        -max_total_time="$fuzz_seconds" -print_final_stats=1) >"$log" 2>&1; then
      tail -n 60 "$log" >&2
      echo "fuzzing failed: target $target (the failing input is under fuzz/artifacts/$target)" >&2
      exit 1
    fi
    grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log"
  done
  unset RUSTC_BOOTSTRAP
fi

step "cargo test (unit, property and integration tests against the real services)"
if ! cargo test --locked --no-fail-fast -- --nocapture 2>&1 | tee .run/test.log; then
  echo "tests failed: the logs of each failed integration test are kept in" \
    "${CARGO_TARGET_DIR:-target}/test-logs/<test name>/ (see .run/test.log)" >&2
  exit 1
fi

# The built-in login stream is streams/logins.toml compiled in; a user gives the same file
# with SQS2PG_STREAMS. These suites run again that way: every child process gets the file,
# every in-process consumer the stream compiled from it.
step "the chaos, hostile, secrets, FIFO and envelope suites again, with the login stream from streams/logins.toml"
if ! SQS2PG_TEST_LOGIN_FILE=1 cargo test --locked --no-fail-fast --test api -- --nocapture \
    chaos:: hostile:: secrets:: fifo:: envelopes:: 2>&1 | tee .run/test-login-file.log; then
  echo "tests failed with the login stream file (see .run/test-login-file.log)" >&2
  exit 1
fi
