"""Turns one benchmark run's measurements into the table and the JSON.

    report.py RUN_DIR OUT.json --delays "0 5 20 50" [--latency-rate R --latency-seconds S
                                                      --malformed-share F]
    report.py RUN_DIR OUT.json --only-baseline

RUN_DIR holds what scripts/bench.sh measured (machine.json, transform.json, queue.json,
drain.json, drain_small.json, drain_big.json, reference.json, sink.json,
sink_unbatched.json, sweep_<delay>.point.json, latency.json, and with --baseline
baseline.json and its runs). Prints the table with a
PASS/MISS per target (checks, not failures: these machines are shared and noisy), writes
every figure to OUT.json, and exits 1 only if a correctness check failed.
"""

import argparse
import json
import os
import sys

MIB = 1024.0
SHARE_DELAY_MS = 20


def load(run_dir, name):
    with open(os.path.join(run_dir, name + ".json")) as file:
        return json.load(file)


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt(value, pattern="{:,.1f}", missing="-"):
    return missing if value is None else pattern.format(value)


def per_message_us(cpu_seconds, messages):
    return cpu_seconds * 1e6 / messages if messages else None


def share_of_core(cpu_seconds, wall_seconds):
    return 100.0 * cpu_seconds / wall_seconds if wall_seconds else None


def sqs2pg_connections(run):
    return run["connections"]["peak_by_application"].get("sqs2pg", 0)


def requests(proxy, action=None):
    return proxy["requests"] if action is None else proxy["requests_by_action"].get(action, 0)


def phase(name, rate, rusage, services, messages, note, connections=None):
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
        "database_connections": connections,
        "services": services,
        "note": note,
    }


def drain_phase(name, run, note):
    return phase(name, run["summary"]["busy_messages_per_second"], run["rusage"], run["services"],
                 run["messages"], note, sqs2pg_connections(run))


def fastest(rounds, rate):
    return max(rounds, key=rate) if rounds else None


def sweep_point(point):
    """One delay of the sweep: the fastest round of sqs2pg's drain and of the peer's."""
    best = fastest(point["sqs2pg"], lambda r: r["run"]["summary"]["busy_messages_per_second"])
    ours = best["run"]
    n = ours["messages"]
    entry = {
        "delay_ms": point["delay_ms"],
        "messages": n,
        "rounds": len(point["sqs2pg"]),
        "sqs2pg": {
            "messages_per_second": ours["summary"]["busy_messages_per_second"],
            "every_round_messages_per_second": [
                r["run"]["summary"]["busy_messages_per_second"] for r in point["sqs2pg"]],
            "whole_run_messages_per_second": ours["summary"]["messages_per_second"],
            "cpu_us_per_message": per_message_us(ours["rusage"]["cpu_seconds"], n),
            "peak_rss_mib": ours["rusage"]["peak_rss_kib"] / MIB,
            "database_connections": max(sqs2pg_connections(r["run"]) for r in point["sqs2pg"]),
            "sqs_requests": requests(best["proxy"]),
            "sqs_requests_by_action": best["proxy"]["requests_by_action"],
            "peak_sqs_connections": best["proxy"]["peak_open_connections"],
            "summary": ours["summary"],
        },
        "peer": None,
        "rows": {"sqs2pg": sorted({r["rows"] for r in point["sqs2pg"]}),
                 "peer": sorted({r["rows"] for r in point["peer"]})},
    }
    entry["rows"]["same"] = (len(entry["rows"]["sqs2pg"]) == 1
                             and entry["rows"]["peer"] in ([], entry["rows"]["sqs2pg"]))
    peer_best = fastest(point["peer"], lambda r: r["run"]["result"]["busy_messages_per_second"])
    if peer_best is not None:
        run, proxy = peer_best["run"], peer_best["proxy"]
        result = run["result"]
        entry["peer"] = {
            "messages_per_second": result["busy_messages_per_second"],
            "every_round_messages_per_second": [
                r["run"]["result"]["busy_messages_per_second"] for r in point["peer"]],
            "cpu_us_per_message": per_message_us(run["rusage"]["cpu_seconds"], result["handled"]),
            "peak_rss_mib": run["rusage"]["peak_rss_kib"] / MIB,
            "database_connections": max(
                r["run"]["connections"]["peak_by_application"].get("sqs-consumer-peer", 0)
                for r in point["peer"]),
            "sqs_requests": requests(proxy),
            "sqs_requests_by_action": proxy["requests_by_action"],
            "peak_sqs_connections": proxy["peak_open_connections"],
            "result": result,
        }
    return entry


def baseline_comparison(run):
    """(b) with the baseline's binary and with this one, the fastest round of each; None
    without a baseline. Its runs' row checks are returned as (label, drain) pairs."""
    if not os.path.exists(os.path.join(run, "baseline.json")):
        return None, []
    baseline = load(run, "baseline")
    by_who = {"baseline": [], "current": []}
    for name in baseline["runs"]:
        by_who[name.rsplit("_", 1)[0]].append(load(run, name))
    best = {}
    for who, runs in by_who.items():
        fastest_run = max(runs, key=lambda r: r["summary"]["busy_messages_per_second"])
        best[who] = {
            "messages_per_second": fastest_run["summary"]["busy_messages_per_second"],
            "cpu_us_per_message": per_message_us(fastest_run["rusage"]["cpu_seconds"],
                                                 fastest_run["messages"]),
            "peak_rss_mib": fastest_run["rusage"]["peak_rss_kib"] / MIB,
            "rounds_messages_per_second": [r["summary"]["busy_messages_per_second"] for r in runs],
        }
    comparison = {
        "revision": baseline["revision"],
        "rounds": baseline["rounds"],
        "baseline": best["baseline"],
        "current": best["current"],
        "throughput_ratio": ratio(best["current"]["messages_per_second"],
                                  best["baseline"]["messages_per_second"]),
        "cpu_ratio": ratio(best["current"]["cpu_us_per_message"],
                           best["baseline"]["cpu_us_per_message"]),
    }
    drains = [(f"baseline comparison {name}", load(run, name)) for name in baseline["runs"]]
    return comparison, drains


def print_baseline(comparison):
    base, cur = comparison["baseline"], comparison["current"]
    print(f"against the baseline {comparison['revision']} (the fastest of {comparison['rounds']} "
          f"alternating rounds each, N messages, messages/s while busy):")
    for who, figures in (("baseline", base), ("this commit", cur)):
        rounds = ", ".join(f"{rate:,.0f}" for rate in figures["rounds_messages_per_second"])
        print(f"  {who:12}{fmt(figures['messages_per_second'], '{:,.0f}'):>8} messages/s   "
              f"CPU {fmt(figures['cpu_us_per_message'], '{:,.0f}')} µs/message   peak RSS "
              f"{fmt(figures['peak_rss_mib'], '{:.1f}')} MiB   (rounds: {rounds})")
    print(f"  ratio: throughput {fmt(comparison['throughput_ratio'], '{:.3f}')}, "
          f"CPU per message {fmt(comparison['cpu_ratio'], '{:.3f}')}")


def streams_comparison(run):
    """The login stream built in against declared in its file (the fastest round of each;
    CPU per message as the mean of the rounds, which is steadier), and the orders stream's
    rate; None without streams.json. Its runs' row checks are returned too."""
    if not os.path.exists(os.path.join(run, "streams.json")):
        return None, []
    streams = load(run, "streams")
    by_variant = {"built_in": [], "file": []}
    for name in streams["runs"]:
        by_variant[name.rsplit("_", 1)[0]].append(load(run, name))
    figures = {}
    for variant, runs in by_variant.items():
        cpu = [per_message_us(r["rusage"]["cpu_seconds"], r["messages"]) for r in runs]
        figures[variant] = {
            "messages_per_second": max(r["summary"]["busy_messages_per_second"] for r in runs),
            "rounds_messages_per_second": [r["summary"]["busy_messages_per_second"] for r in runs],
            "cpu_us_per_message_mean": sum(cpu) / len(cpu),
        }
    orders = load(run, streams["orders"])
    comparison = {
        "rounds": streams["rounds"],
        "built_in": figures["built_in"],
        "file": figures["file"],
        "throughput_ratio": ratio(figures["file"]["messages_per_second"],
                                  figures["built_in"]["messages_per_second"]),
        "cpu_ratio": ratio(figures["file"]["cpu_us_per_message_mean"],
                           figures["built_in"]["cpu_us_per_message_mean"]),
        "orders": {
            "messages_per_second": orders["summary"]["busy_messages_per_second"],
            "cpu_us_per_message": per_message_us(orders["rusage"]["cpu_seconds"], orders["messages"]),
            "peak_rss_mib": orders["rusage"]["peak_rss_kib"] / MIB,
        },
    }
    drains = [(f"streams {name}", load(run, name)) for name in streams["runs"]]
    drains.append(("streams: the orders stream", orders))
    return comparison, drains


def stream_targets(comparison):
    return [
        ("login file >= 0.95 x built-in (drain rate)", comparison["throughput_ratio"], 0.95, "min"),
        ("login file CPU/message <= built-in's", comparison["cpu_ratio"], 1.0, "max"),
    ]


def print_streams(comparison):
    built_in, file = comparison["built_in"], comparison["file"]
    print(f"streams (the fastest of {comparison['rounds']} alternating rounds each, N messages, "
          f"messages/s while busy; CPU the mean of the rounds):")
    for label, figures in (("login, built in", built_in), ("login, its file", file)):
        rounds = ", ".join(f"{rate:,.0f}" for rate in figures["rounds_messages_per_second"])
        print(f"  {label:16}{fmt(figures['messages_per_second'], '{:,.0f}'):>8} messages/s   "
              f"CPU {fmt(figures['cpu_us_per_message_mean'], '{:,.0f}')} µs/message   (rounds: {rounds})")
    print(f"  ratio: throughput {fmt(comparison['throughput_ratio'], '{:.3f}')}, "
          f"CPU per message {fmt(comparison['cpu_ratio'], '{:.3f}')}")
    orders = comparison["orders"]
    print(f"  orders (20 columns, two masked, JSON Schema): "
          f"{fmt(orders['messages_per_second'], '{:,.0f}')} messages/s, CPU "
          f"{fmt(orders['cpu_us_per_message'], '{:,.0f}')} µs/message, peak RSS "
          f"{fmt(orders['peak_rss_mib'], '{:.1f}')} MiB")


def only_streams(run, out):
    comparison, drains = streams_comparison(run)
    checks = [{"check": f"{label}: one row per valid message", "ok": bool(d["row_check"]),
               "detail": f"{d['rows']} rows for {d['valid']} valid"} for label, d in drains]
    targets = stream_targets(comparison)
    with open(out, "w") as file:
        json.dump({"machine": load(run, "machine"), "streams": comparison, "checks": checks},
                  file, indent=2)
        file.write("\n")
    print_streams(comparison)
    for name, value, threshold, kind in targets:
        ok = value is not None and (value >= threshold if kind == "min" else value <= threshold)
        print(f"  {'PASS' if ok else 'MISS'}  {name:44} {fmt(value, '{:.3f}')}")
    for c in checks:
        print(f"  {'OK  ' if c['ok'] else 'FAIL'}  {c['check']}: {c['detail']}")
    print(f"\nJSON: {out}")
    return 0 if all(c["ok"] for c in checks) else 1


def only_baseline(run, out):
    comparison, drains = baseline_comparison(run)
    checks = [{"check": f"{label}: one row per valid message", "ok": bool(d["row_check"]),
               "detail": f"{d['rows']} rows for {d['valid']} valid"} for label, d in drains]
    with open(out, "w") as file:
        json.dump({"machine": load(run, "machine"), "baseline": comparison, "checks": checks},
                  file, indent=2)
        file.write("\n")
    print_baseline(comparison)
    ok = comparison["throughput_ratio"] is not None and comparison["throughput_ratio"] >= 0.95
    print(f"  {'PASS' if ok else 'MISS'}  throughput >= 0.95 x the baseline's")
    for c in checks:
        print(f"  {'OK  ' if c['ok'] else 'FAIL'}  {c['check']}: {c['detail']}")
    print(f"\nJSON: {out}")
    return 0 if all(c["ok"] for c in checks) else 1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("out")
    parser.add_argument("--only-baseline", action="store_true")
    parser.add_argument("--only-streams", action="store_true")
    parser.add_argument("--delays")
    parser.add_argument("--latency-rate", type=float)
    parser.add_argument("--latency-seconds", type=float)
    parser.add_argument("--malformed-share", type=float)
    args = parser.parse_args()
    run = args.run_dir
    if args.only_baseline:
        return only_baseline(run, args.out)
    if args.only_streams:
        return only_streams(run, args.out)
    if not args.delays:
        parser.error("--delays is required")
    delays = [int(d) for d in args.delays.split()]

    machine = load(run, "machine")
    transform = load(run, "transform")
    queue = load(run, "queue")
    drain = load(run, "drain")
    small = load(run, "drain_small")
    big = load(run, "drain_big")
    reference = load(run, "reference")
    sink = load(run, "sink")
    unbatched = load(run, "sink_unbatched")["result"]
    latency = load(run, "latency")
    points = {d: load(run, f"sweep_{d}.point") for d in delays}
    n = drain["messages"]

    # (a), (b), (c): messages/s, consumer CPU, peak RSS, and the services' CPU over the run.
    a_rate = queue["result"]["messages_per_second"]
    b_rate = drain["summary"]["busy_messages_per_second"]
    b_whole = drain["summary"]["messages_per_second"]
    b_elapsed = drain["summary"]["elapsed_s"]
    c_rate = reference["result"]["messages_per_second"]
    phases = {
        "a_queue_ceiling": phase(
            "(a) queue ceiling", a_rate, queue["rusage"], queue["services"], n,
            f"receive + DeleteMessageBatch, no database, {queue['result']['concurrency']} loops;"
            " first receive to last delete",
        ),
        "b_sqs2pg": drain_phase(
            "(b) sqs2pg run --drain", drain,
            "while busy: first message received to last batch done, as sqs2pg reports it",
        ),
        "b_sqs2pg_n_over_10": drain_phase("(b) on N/10", small, "the same, on a 10x shallower queue"),
        "b_sqs2pg_200kb": drain_phase(
            f"(b) {big['messages']:,} x 200 KB", big, "bodies of 200 KB: memory against body size"),
        "c_reference": phase(
            "(c) reference (Python)", c_rate, reference["rusage"], reference["services"],
            reference["result"]["messages"], "first receive to last delete",
        ),
    }

    sink_result = sink["result"]
    d_rate = sink_result["sink_rows_per_second"]
    copy_rate = sink_result["copy_rows_per_second"]

    sweep = [sweep_point(points[d]) for d in delays]
    by_delay = {entry["delay_ms"]: entry for entry in sweep}
    base = by_delay.get(0)
    at_share = by_delay.get(SHARE_DELAY_MS)
    for entry in sweep:
        entry["sqs2pg"]["share_of_no_delay"] = ratio(
            entry["sqs2pg"]["messages_per_second"], base and base["sqs2pg"]["messages_per_second"])
        entry["sqs2pg_over_peer"] = ratio(
            entry["sqs2pg"]["messages_per_second"],
            entry["peer"] and entry["peer"]["messages_per_second"])
    share = at_share and at_share["sqs2pg"]["share_of_no_delay"]
    over_peer = at_share and at_share["sqs2pg_over_peer"]

    # Database connections: the peak of every sqs2pg run, whatever its receive concurrency.
    connection_runs = {"drain": drain, "drain_small": small, "drain_big": big, "steady": latency}
    connection_runs |= {f"sweep_{d}_{i + 1}": r["run"]
                        for d in delays for i, r in enumerate(points[d]["sqs2pg"])}
    connections = {name: sqs2pg_connections(r) for name, r in connection_runs.items()}
    peak_connections = max(connections.values())

    # Steady load and idle.
    rows = latency["rows"]
    steady_cpu_us = per_message_us(latency["consumer_cpu_seconds"], rows)
    full_speed_cpu_us = phases["b_sqs2pg"]["cpu_us_per_message"]
    idle = latency["idle"]
    idle_requests = requests(idle["proxy_after"]) - requests(idle["proxy_before"])
    idle_by_action = {
        action: count - idle["proxy_before"]["requests_by_action"].get(action, 0)
        for action, count in idle["proxy_after"]["requests_by_action"].items()
    }
    idle_by_action = {action: count for action, count in idle_by_action.items() if count}
    idle_rate = ratio(idle_requests, idle["seconds"])
    idle_cpu_percent = share_of_core(idle["cpu_seconds"], idle["seconds"])

    rss = {
        "drain_n": drain["rusage"]["peak_rss_kib"] / MIB,
        "drain_n_over_10": small["rusage"]["peak_rss_kib"] / MIB,
        "drain_200kb_bodies": big["rusage"]["peak_rss_kib"] / MIB,
        "steady": latency["rusage"]["peak_rss_kib"] / MIB,
    } | {f"sweep_{d}_{i + 1}": r["run"]["rusage"]["peak_rss_kib"] / MIB
         for d in delays for i, r in enumerate(points[d]["sqs2pg"])}
    peak_rss = max(rss.values())

    # (name, value, threshold, "min" if the value must reach it, "max" if it must not pass it)
    targets = [
        (f"{SHARE_DELAY_MS} ms delay: (b) >= 0.9 x (b) without", share, 0.9, "min"),
        ("no delay: (b) >= 0.95 x (a)", ratio(b_rate, a_rate), 0.95, "min"),
        (f"{SHARE_DELAY_MS} ms delay: (b) >= 3 x sqs-consumer", over_peer, 3.0, "min"),
        ("database connections <= 4", peak_connections, 4, "max"),
        ("500/s: CPU <= 100 us/message", steady_cpu_us, 100.0, "max"),
        ("500/s: p99 to commit <= 50 ms", latency["p99_ms"], 50.0, "max"),
        ("idle: <= 1 SQS request/s", idle_rate, 1.0, "max"),
        ("idle: < 1 % of a core", idle_cpu_percent, 1.0, "below"),
        ("peak RSS <= 64 MiB, 200 KB too", peak_rss, 64.0, "max"),
        ("(b) >= 5 x (c)", ratio(b_rate, c_rate), 5.0, "min"),
        ("(d) >= 0.5 x COPY", ratio(d_rate, copy_rate), 0.5, "min"),
    ]
    comparison, baseline_drains = baseline_comparison(run)
    if comparison:
        targets.append(("(b) >= 0.95 x the baseline's", comparison["throughput_ratio"], 0.95, "min"))
    streams, stream_drains = streams_comparison(run)
    if streams:
        targets += stream_targets(streams)

    def passes(value, threshold, kind):
        if value is None:
            return None
        return {"min": value >= threshold, "max": value <= threshold, "below": value < threshold}[kind]

    target_results = [
        {"target": name, "value": value, "threshold": threshold, "kind": kind,
         "pass": passes(value, threshold, kind)}
        for name, value, threshold, kind in targets
    ]

    # Correctness: these make the run fail.
    checks = []

    def check(name, ok, detail):
        checks.append({"check": name, "ok": bool(ok), "detail": detail})

    drains = [("(b) N", drain), ("(b) N/10", small), ("(b) 200 KB bodies", big)]
    drains += [(f"sweep {d} ms, round {i + 1}: sqs2pg", r["run"])
               for d in delays for i, r in enumerate(points[d]["sqs2pg"])]
    drains += baseline_drains + stream_drains
    for label, d in drains:
        check(f"{label}: one row per valid message",
              d["row_check"],
              f"{d['rows']} rows, {d['distinct_message_ids']} distinct ids, {d['valid']} valid; "
              f"{d['dead_letters']} dead letters, {d['malformed']} malformed")
    valid = drain["valid"]
    for d in delays:
        point = points[d]
        rounds = [("sqs2pg", r) for r in point["sqs2pg"]] + [("the peer", r) for r in point["peer"]]
        for who, r in rounds:
            deletes = requests(r["proxy"], "DeleteMessageBatch")
            if who == "the peer":
                rows_ok = r["run"]["result"]["rows_stored"] >= valid
                check(f"sweep {d} ms: the peer stored every valid message",
                      rows_ok, f"{r['run']['result']['rows_stored']} rows stored of {valid} valid")
            check(f"sweep {d} ms: {who}'s calls went through the delay line",
                  deletes * 10 >= valid and r["proxy"]["unframed_connections"] == 0,
                  f"{deletes} DeleteMessageBatch calls counted for {valid} rows")
        if point["peer"]:
            entry = by_delay[d]
            check(f"sweep {d} ms: the peer's rows equal sqs2pg's (count, digest), every round",
                  entry["rows"]["same"],
                  f"peer {', '.join(entry['rows']['peer'])}; sqs2pg {', '.join(entry['rows']['sqs2pg'])}")
    qr = queue["result"]
    check("(a) every message deleted once", qr["deleted"] == n and qr["distinct_messages"] == n,
          f"{qr['deleted']} deleted, {qr['distinct_messages']} distinct, of {n}")
    check("(d) every valid row written by both paths",
          sink_result["sink_table_rows"] == sink_result["valid_rows"]
          and sink_result["copy_table_rows"] == sink_result["valid_rows"],
          f"sink {sink_result['sink_table_rows']}, COPY {sink_result['copy_table_rows']}, "
          f"valid {sink_result['valid_rows']}")
    check("steady: every message sent became a row", rows == latency["producer"]["sent"],
          f"{rows} rows of {latency['producer']['sent']} sent")
    # The reference is naive by design; its row count is informative, not a check.
    reference_valid = reference["messages"] - reference["malformed"]

    results = {
        "machine": machine,
        "parameters": {
            "messages": n,
            "delays_ms": delays,
            "malformed_share": args.malformed_share,
            "latency_rate": args.latency_rate,
            "latency_seconds": args.latency_seconds,
            "big_messages": big["messages"],
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
            "b_with_20ms_over_b_without": share,
            "b_over_peer_at_20ms": over_peer,
        },
        "sweep": sweep,
        "sink_ceiling": sink_result | {"rusage": sink["rusage"], "services": sink["services"]},
        "sink_without_group_commit": unbatched,
        "database_connections": {"peak": peak_connections, "by_run": connections},
        "cpu_us_per_message": {"full_speed": full_speed_cpu_us, "steady": steady_cpu_us},
        "memory": {"peak_rss_mib": peak_rss, "by_run": rss},
        "latency": {
            "p50_ms": latency["p50_ms"],
            "p99_ms": latency["p99_ms"],
            "max_ms": latency["max_ms"],
            "mean_ms": latency["mean_ms"],
            "rows": rows,
            "producer": latency["producer"],
            "cpu_us_per_message": steady_cpu_us,
            "localstack_cpu_us_per_message": per_message_us(
                latency["services"]["localstack_cpu_seconds"], rows),
            "postgres_cpu_us_per_message": per_message_us(
                latency["services"]["postgres_cpu_seconds"], rows),
            "peak_rss_mib": rss["steady"],
            "database_connections": connections["steady"],
            "services": latency["services"],
            "summary": latency["summary"],
        },
        "idle": {
            "seconds": idle["seconds"],
            "sqs_requests": idle_requests,
            "sqs_requests_by_action": idle_by_action,
            "sqs_requests_per_second": idle_rate,
            "cpu_seconds": idle["cpu_seconds"],
            "cpu_percent_of_core": idle_cpu_percent,
        },
        "reference_rows": {"rows": reference["rows"], "valid_messages": reference_valid},
        "baseline": comparison,
        "streams": streams,
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
    print(f"PostgreSQL {machine['postgres']} (fsync {machine['fsync']}, synchronous_commit "
          f"{machine['synchronous_commit']}), LocalStack {machine['localstack']}, peer: sqs-consumer "
          f"{machine['sqs_consumer']} on Node {machine['node']}")
    print(f"N = {n:,} messages ({args.malformed_share:.0%} malformed); sqs2pg at its defaults")
    print()
    print(f"{'':26}{'messages/s':>11}{'peak RSS':>11}{'DB conns':>9}   CPU µs/message: consumer / "
          f"LocalStack / PostgreSQL   (% of a core)")
    for p in phases.values():
        print(f"{p['name']:26}{fmt(p['messages_per_second']):>11}"
              f"{fmt(p['peak_rss_mib'], '{:.1f} MiB'):>11}{fmt(p['database_connections'], '{}'):>9}   "
              f"{fmt(p['cpu_us_per_message'], '{:,.0f}'):>8} / "
              f"{fmt(p['localstack_cpu_us_per_message'], '{:,.0f}')} / "
              f"{fmt(p['postgres_cpu_us_per_message'], '{:,.0f}')}"
              f"   ({fmt(p['consumer_cpu_percent_of_core'], '{:.0f}')} / "
              f"{fmt(p['localstack_cpu_percent_of_core'], '{:.0f}')} / "
              f"{fmt(p['postgres_cpu_percent_of_core'], '{:.0f}')})")
    print(f"{'    (b) as sqs2pg prints it':26}{fmt(b_whole):>11}   "
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
    print(f"latency sweep: every SQS reply delayed, N messages drained; messages/s while busy, "
          f"the fastest of {sweep[0]['rounds']} round(s) each")
    print(f"{'delay':>7}{'sqs2pg':>9}{'of 0 ms':>9}{'peer':>8}{'sqs2pg/peer':>13}"
          f"{'CPU µs/msg':>13}{'SQS calls':>14}{'DB conns':>10}  rows equal")
    print(f"{'':7}{'':9}{'':9}{'':8}{'':13}{'ours/peer':>13}{'ours/peer':>14}{'ours/peer':>10}")
    for e in sweep:
        ours, peer = e["sqs2pg"], e["peer"] or {}
        print(f"{e['delay_ms']:>4} ms{fmt(ours['messages_per_second'], '{:,.0f}'):>9}"
              f"{fmt(ours['share_of_no_delay'], '{:.2f}'):>9}"
              f"{fmt(peer.get('messages_per_second'), '{:,.0f}'):>8}"
              f"{fmt(e['sqs2pg_over_peer'], '{:.1f} x'):>13}"
              f"{fmt(ours['cpu_us_per_message'], '{:.0f}') + '/' + fmt(peer.get('cpu_us_per_message'), '{:.0f}'):>13}"
              f"{str(ours['sqs_requests']) + '/' + fmt(peer.get('sqs_requests'), '{}'):>14}"
              f"{str(ours['database_connections']) + '/' + fmt(peer.get('database_connections'), '{}'):>10}"
              f"  {'-' if e['peer'] is None else ('yes' if e['rows']['same'] else 'NO')}")
    print()
    producer = latency["producer"]
    print(f"steady load at {producer['messages_per_second']:.1f} messages/s achieved "
          f"({fmt(args.latency_rate, '{:.0f}')}/s asked, {producer['seconds']:.1f} s, {rows:,} rows), "
          f"SentTimestamp to commit: p50 {latency['p50_ms']} ms, p99 {latency['p99_ms']} ms, "
          f"max {latency['max_ms']} ms")
    lat = results["latency"]
    print(f"  CPU µs/message: sqs2pg {fmt(steady_cpu_us, '{:,.0f}')} (at full speed, (b): "
          f"{fmt(full_speed_cpu_us, '{:,.0f}')}) / LocalStack {fmt(lat['localstack_cpu_us_per_message'], '{:,.0f}')}"
          f" / PostgreSQL {fmt(lat['postgres_cpu_us_per_message'], '{:,.0f}')}"
          f" (LocalStack's includes the producer's sends)")
    print(f"idle for {idle['seconds']:.0f} s: {idle_requests} SQS requests ({fmt(idle_rate, '{:.2f}')}/s: "
          f"{', '.join(f'{k} {v}' for k, v in sorted(idle_by_action.items())) or 'none'}), "
          f"CPU {fmt(idle_cpu_percent, '{:.2f}')} % of a core")
    print(f"database connections, peak per run: "
          + ", ".join(f"{name} {count}" for name, count in connections.items()))
    print(f"peak RSS: " + ", ".join(f"{name} {mib:.1f} MiB" for name, mib in rss.items()))
    print(f"reference rows: {reference['rows']:,} for {reference_valid:,} valid messages")
    if streams:
        print()
        print_streams(streams)
    if comparison:
        print()
        print_baseline(comparison)
    print()
    print("targets:")
    for t in target_results:
        verdict = {True: "PASS", False: "MISS", None: "n/a "}[t["pass"]]
        # Three decimals below 10, so that a value just short of its threshold never prints as it.
        shown = fmt(t["value"], "{:.3f}" if t["value"] is not None and abs(t["value"]) < 10 else "{:.1f}")
        print(f"  {verdict}  {t['target']:42} {shown}")
    print("checks:")
    for c in checks:
        print(f"  {'OK  ' if c['ok'] else 'FAIL'}  {c['check']}: {c['detail']}")
    print(f"\nJSON: {args.out}")
    return 0 if all(c["ok"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
