# Thin wrappers around the scripts, which hold the real steps.
#   make bench   the benchmark (BENCH_MESSAGES, BENCH_CONCURRENCY, BENCH_LATENCY_RATE,
#                BENCH_LATENCY_SECONDS, BENCH_JSON: see scripts/bench.sh)
#   make demo    the end-to-end demo
#   make test    the whole test suite, as CI runs it
.PHONY: bench demo test

bench:
	scripts/bench.sh

demo:
	scripts/demo.sh

test:
	scripts/test.sh
