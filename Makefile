# Thin wrappers around the scripts, which hold the real steps.
#   make bench   the full benchmark (BENCH_MESSAGES, BENCH_DELAYS, BENCH_PEER, BENCH_LATENCY_RATE,
#                BENCH_LATENCY_SECONDS, BENCH_IDLE_SECONDS, BENCH_JSON: see scripts/bench.sh)
#   make bench-quick  a smoke run of it (scripts/bench.sh --quick)
#   make demo    the end-to-end demo
#   make test    the whole test suite, as CI runs it
.PHONY: bench bench-quick demo test

bench:
	scripts/bench.sh

bench-quick:
	scripts/bench.sh --quick

demo:
	scripts/demo.sh

test:
	scripts/test.sh
