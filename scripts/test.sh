#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what is missing, starts the throwaway
# PostgreSQL and LocalStack (and stops them again if it started them), then runs the
# format and lint checks, a short fuzzing run of the pure core, and every test, unit and
# integration, against the real services. CI runs exactly this (.ci/run).
#
#   SQS2PG_FUZZ_SECONDS  how long to fuzz the transform (default 30; 0 skips)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust with rustup (https://rustup.rs) and retry" >&2
  exit 1
fi

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

step "the pure core builds without the service (no I/O dependencies)"
cargo build --lib --no-default-features --locked

fuzz_seconds="${SQS2PG_FUZZ_SECONDS:-30}"
if [ "$fuzz_seconds" != 0 ]; then
  step "fuzz the transform for ${fuzz_seconds} s"
  command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
  # cargo-fuzz needs nightly flags; without a nightly toolchain, let stable accept them.
  if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then toolchain=(+nightly); else toolchain=(); export RUSTC_BOOTSTRAP=1; fi
  mkdir -p fuzz/corpus/transform
  (cd fuzz && cargo "${toolchain[@]}" fuzz run transform corpus/transform seeds/transform -- \
      -max_total_time="$fuzz_seconds" -print_final_stats=1 2>&1 | grep -E '^(Done|stat::number_of_executed_units|==[0-9]+==|SUMMARY)' || true)
  # A crash leaves an artifact and a non-zero exit; check for artifacts explicitly.
  if compgen -G 'fuzz/artifacts/transform/*' >/dev/null; then
    echo "fuzzing found a failing input:" >&2; ls fuzz/artifacts/transform >&2; exit 1
  fi
fi

step "cargo test (unit, property and integration tests against the real services)"
cargo test --locked --no-fail-fast -- --nocapture 2>&1 | tee .run/test.log
