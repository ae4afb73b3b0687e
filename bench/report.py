"""Turns one benchmark run's measurements into the table and the JSON.

    report.py RUN_DIR OUT.json [--latency-rate R --latency-seconds S --concurrency C
                                --malformed-share F]

RUN_DIR holds what scripts/bench.sh measured (machine.json, transform.json, queue.json,
drain.json, drain_small.json, reference.json, sink.json, latency.json). Prints the table
with a PASS/MISS per target (checks, not failures: these machines are shared and noisy),
writes the same figures to OUT.json, and exits 1 only if a correctness check failed.
"""

import argparse
import json
import os
import re
import sys

MIB = 1024.0
RSS_LIMIT_MIB = 64.0


def load(run_dir, name):
    with open(os.path.join(run_dir, name + ".json")) as file:
        return json.load(file)


def ratio(a, b):
    return a / b if b else None


def fmt(value, pattern="{:,.1f}", missing="-"):
    return missing if value is None else pattern.format(value)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("out")
    parser.add_argument("--latency-rate", type=float)
    parser.add_argument("--latency-seconds", type=float)
    parser.add_argument("--concurrency", type=int)
    parser.add_argument("--malformed-share", type=float)
    args = parser.parse_args()
    run = args.run_dir

    machine = load(run, "machine")
    transform = load(run, "transform")
    queue = load(run, "queue")
    drain = load(run, "drain")
    small = load(run, "drain_small")
    reference = load(run, "reference")
    sink = load(run, "sink")
    unbatched = load(run, "sink_unbatched")["result"]
    latency = load(run, "latency")
    n = drain["messages"]

    def per_message_us(cpu_seconds, messages):
        return cpu_seconds * 1e6 / messages if messages else None

    def share_of_core(cpu_seconds, wall_seconds):
        return 100.0 * cpu_seconds / wall_seconds if wall_seconds else None

    # (a), (b), (c): messages/s, consumer CPU, peak RSS, and the services' CPU over the run.
    a_rate = queue["result"]["messages_per_second"]
    # While busy, as sqs2pg prints it: from the first message received to the last batch
    # done, as (a) times first receive to last delete.
    b_rate = float(re.search(r"([0-9.]+) messages/s while busy", drain["summary"]).group(1))
    # From the consumer's start to its exit: start-up and the drain's final checks (two
    # empty receives, a poll apart) included.
    b_whole = float(re.search(r"([0-9.]+) messages/s;", drain["summary"]).group(1))
    b_elapsed = float(re.search(r"elapsed: ([0-9.]+) s", drain["summary"]).group(1))
    c_rate = reference["result"]["messages_per_second"]

    def phase(name, rate, rusage, services, messages, note):
        wall = rusage["wall_seconds"]
        return {
            "name": name,
            "messages": messages,
            "messages_per_second": rate,
            "cpu_us_per_message": per_message_us(rusage["cpu_seconds"], messages),
            "localstack_cpu_us_per_message": per_message_us(services["localstack_cpu_seconds"], messages),
            "postgres_cpu_us_per_message": per_message_us(services["postgres_cpu_seconds"], messages),
            "consumer_cpu_seconds": rusage["cpu_seconds"],
            "consumer_cpu_percent_of_core": share_of_core(rusage["cpu_seconds"], wall),
            "localstack_cpu_percent_of_core": share_of_core(services["localstack_cpu_seconds"], wall),
            "postgres_cpu_percent_of_core": share_of_core(services["postgres_cpu_seconds"], wall),
            "wall_seconds": wall,
            "peak_rss_mib": rusage["peak_rss_kib"] / MIB,
            "services": services,
            "note": note,
        }

    phases = {
        "a_queue_ceiling": phase(
            "(a) queue ceiling", a_rate, queue["rusage"], queue["services"], n,
            "receive + DeleteMessageBatch, no database; first receive to last delete",
        ),
        "b_sqs2pg": phase(
            "(b) sqs2pg run --drain", b_rate, drain["rusage"], drain["services"], n,
            "while busy: first message received to last batch done, as sqs2pg reports it",
        ),
        "c_reference": phase(
            "(c) reference (Python)", c_rate, reference["rusage"], reference["services"],
            reference["result"]["messages"], "first receive to last delete",
        ),
    }

    sink_result = sink["result"]
    d_rate = sink_result["sink_rows_per_second"]
    copy_rate = sink_result["copy_rows_per_second"]
    peak_big = drain["rusage"]["peak_rss_kib"] / MIB
    peak_small = small["rusage"]["peak_rss_kib"] / MIB
    peak_latency = latency["rusage"]["peak_rss_kib"] / MIB
    peak = max(peak_big, peak_small, peak_latency)

    targets = [
        ("(b) >= 0.9 x (a)", ratio(b_rate, a_rate), 0.9),
        ("(b) >= 5 x (c)", ratio(b_rate, c_rate), 5.0),
        ("(d) >= 0.5 x COPY", ratio(d_rate, copy_rate), 0.5),
    ]
    target_results = [
        {"target": name, "value": value, "threshold": threshold,
         "pass": value is not None and value >= threshold}
        for name, value, threshold in targets
    ]
    target_results.append({
        "target": "sqs2pg peak RSS <= 64 MiB",
        "value": peak,
        "threshold": RSS_LIMIT_MIB,
        "pass": peak <= RSS_LIMIT_MIB,
    })

    # Correctness: these make the run fail.
    checks = []

    def check(name, ok, detail):
        checks.append({"check": name, "ok": bool(ok), "detail": detail})

    for label, d in (("(b) N", drain), ("(b) N/10", small)):
        check(
            f"{label}: one row per valid message",
            d["row_check"],
            f"{d['rows']} rows, {d['distinct_message_ids']} distinct ids, {d['valid']} valid; "
            f"{d['dead_letters']} dead letters, {d['malformed']} malformed",
        )
    qr = queue["result"]
    check("(a) every message deleted once", qr["deleted"] == n and qr["distinct_messages"] == n,
          f"{qr['deleted']} deleted, {qr['distinct_messages']} distinct, of {n}")
    check("(d) every valid row written by both paths",
          sink_result["sink_table_rows"] == sink_result["valid_rows"]
          and sink_result["copy_table_rows"] == sink_result["valid_rows"],
          f"sink {sink_result['sink_table_rows']}, COPY {sink_result['copy_table_rows']}, "
          f"valid {sink_result['valid_rows']}")
    check("latency: every message sent became a row",
          latency["rows"] == latency["producer"]["sent"],
          f"{latency['rows']} rows of {latency['producer']['sent']} sent")
    # The reference is naive by design; its row count is informative, not a check.
    reference_valid = reference["messages"] - reference["malformed"]

    results = {
        "machine": machine,
        "parameters": {
            "messages": n,
            "concurrency": args.concurrency,
            "malformed_share": args.malformed_share,
            "latency_rate": args.latency_rate,
            "latency_seconds": args.latency_seconds,
            "run_dir": run,
        },
        "transform": transform,
        "phases": phases,
        "b_whole_run_messages_per_second": b_whole,
        "b_summary": drain["summary"],
        "ratios": {
            "b_over_a": ratio(b_rate, a_rate),
            "b_over_c": ratio(b_rate, c_rate),
            "d_share_of_copy": ratio(d_rate, copy_rate),
        },
        "sink_ceiling": sink_result | {"rusage": sink["rusage"], "services": sink["services"]},
        "sink_without_group_commit": unbatched,
        "memory": {
            "peak_rss_mib_n": peak_big,
            "peak_rss_mib_n_over_10": peak_small,
            "peak_rss_mib_latency_run": peak_latency,
            "ratio_n_vs_n_over_10": ratio(peak_big, peak_small),
        },
        "latency": {
            "p50_ms": latency["p50_ms"],
            "p99_ms": latency["p99_ms"],
            "max_ms": latency["max_ms"],
            "mean_ms": latency["mean_ms"],
            "rows": latency["rows"],
            "producer": latency["producer"],
            "cpu_us_per_message": per_message_us(latency["consumer_cpu_seconds"], latency["rows"]),
            "localstack_cpu_us_per_message": per_message_us(
                latency["services"]["localstack_cpu_seconds"], latency["rows"]),
            "postgres_cpu_us_per_message": per_message_us(
                latency["services"]["postgres_cpu_seconds"], latency["rows"]),
            "peak_rss_mib": peak_latency,
            "services": latency["services"],
            "summary": latency["summary"],
        },
        "reference_rows": {"rows": reference["rows"], "valid_messages": reference_valid},
        "targets": target_results,
        "checks": checks,
    }
    with open(args.out, "w") as file:
        json.dump(results, file, indent=2)
        file.write("\n")

    # The table.
    print(f"sqs2pg benchmark, {machine['date']}, commit {machine['commit']}")
    print(f"machine: {machine['nproc']} CPUs ({machine['cpu_model']}), {machine['ram_gib']} GiB RAM, "
          f"load average at start {machine['loadavg_at_start']}")
    print(f"N = {n:,} messages ({args.malformed_share:.0%} malformed), concurrency {args.concurrency}")
    print()
    print(f"{'':26}{'messages/s':>11}{'peak RSS':>11}   CPU µs/message: consumer / LocalStack / PostgreSQL"
          f"   (% of a core)")
    for key in ("a_queue_ceiling", "b_sqs2pg", "c_reference"):
        p = phases[key]
        print(f"{p['name']:26}{fmt(p['messages_per_second']):>11}"
              f"{fmt(p['peak_rss_mib'], '{:.1f} MiB'):>11}   "
              f"{fmt(p['cpu_us_per_message'], '{:,.0f}'):>8} / "
              f"{fmt(p['localstack_cpu_us_per_message'], '{:,.0f}')} / "
              f"{fmt(p['postgres_cpu_us_per_message'], '{:,.0f}')}"
              f"   ({fmt(p['consumer_cpu_percent_of_core'], '{:.0f}')} / "
              f"{fmt(p['localstack_cpu_percent_of_core'], '{:.0f}')} / "
              f"{fmt(p['postgres_cpu_percent_of_core'], '{:.0f}')})")
    print(f"{'    as sqs2pg prints it':26}{fmt(b_whole):>11}   "
          f"(its {b_elapsed:.2f} s include start-up and the drain's final empty checks)")
    print(f"{'(d) transform + Sink':26}{fmt(d_rate):>11} rows/s  ({sink_result['concurrency']} writers, "
          f"{sink_result['batch_messages']} messages per transaction)")
    print(f"{'    plain binary COPY':26}{fmt(copy_rate):>11} rows/s  (one COPY, one transaction)")
    print(f"{'    without group commit':26}{fmt(unbatched['sink_rows_per_second']):>11} rows/s  "
          f"({unbatched['batch_messages']} per transaction, one receive's worth: "
          f"{fmt(ratio(unbatched['sink_rows_per_second'], unbatched['copy_rows_per_second']), '{:.0%}')} of its COPY)")
    print(f"{'transform, pure core':26}{fmt(transform['messages_per_second'], '{:,.0f}'):>11}"
          f"   ({fmt(transform['us_per_message'], '{:.2f}')} µs/message on one core, no I/O)")
    print()
    print(f"ratios: (b)/(a) = {fmt(ratio(b_rate, a_rate), '{:.2f}')}, "
          f"(b)/(c) = {fmt(ratio(b_rate, c_rate), '{:.1f}')}, "
          f"(d) = {fmt(ratio(d_rate, copy_rate), '{:.0%}')} of COPY")
    print(f"memory: sqs2pg peak RSS {peak_big:.1f} MiB draining {n:,}, {peak_small:.1f} MiB draining "
          f"{small['messages']:,} (ratio {fmt(ratio(peak_big, peak_small), '{:.2f}')}), "
          f"{peak_latency:.1f} MiB under steady load")
    producer = latency["producer"]
    print(f"latency at {producer['messages_per_second']:.1f} messages/s achieved "
          f"({fmt(args.latency_rate, '{:.0f}')}/s asked, {producer['seconds']:.1f} s, {latency['rows']:,} rows), "
          f"SentTimestamp to commit: p50 {latency['p50_ms']} ms, p99 {latency['p99_ms']} ms, "
          f"max {latency['max_ms']} ms")
    lat = results["latency"]
    print(f"  while producing, CPU µs/message: sqs2pg {fmt(lat['cpu_us_per_message'], '{:,.0f}')}"
          f" / LocalStack {fmt(lat['localstack_cpu_us_per_message'], '{:,.0f}')}"
          f" / PostgreSQL {fmt(lat['postgres_cpu_us_per_message'], '{:,.0f}')}"
          f" (LocalStack's includes the producer's sends)")
    print(f"reference rows: {reference['rows']:,} for {reference_valid:,} valid messages")
    print()
    print("targets:")
    for t in target_results:
        shown = (f"{t['value']:.1f} MiB" if "RSS" in t["target"] else fmt(t["value"], "{:.2f}"))
        print(f"  {'PASS' if t['pass'] else 'MISS'}  {t['target']:28} {shown}")
    print("checks:")
    for c in checks:
        print(f"  {'OK  ' if c['ok'] else 'FAIL'}  {c['check']}: {c['detail']}")
    print(f"\nJSON: {args.out}")
    return 0 if all(c["ok"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
