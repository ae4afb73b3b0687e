"""Draws the latency sweep: ``chart.py RESULTS.json OUT.png``.

Messages per second while busy, of sqs2pg and of the sqs-consumer peer, against the delay
of every SQS reply, from the JSON that bench/report.py writes; the queue ceiling (a),
measured without delay, as a dashed line for scale. Small on purpose: the README shows it.
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1]) as file:
        results = json.load(file)
    sweep = results["sweep"]
    machine = results["machine"]
    delays = [point["delay_ms"] for point in sweep]
    ours = [point["sqs2pg"]["messages_per_second"] for point in sweep]
    peer_points = [(point["delay_ms"], point["peer"]["messages_per_second"])
                   for point in sweep if point["peer"] is not None]

    figure, axes = plt.subplots(figsize=(7.2, 4.2), dpi=100)
    axes.plot(delays, ours, marker="o", linewidth=2.2, color="#1f6fb4", label="sqs2pg (defaults)")
    for x, y in zip(delays, ours):
        axes.annotate(f"{y:,.0f}", (x, y), textcoords="offset points", xytext=(0, 8),
                      ha="center", fontsize=8, color="#1f6fb4")
    if peer_points:
        xs, ys = zip(*peer_points)
        sqs_consumer = machine.get("sqs_consumer", "")
        axes.plot(xs, ys, marker="s", linewidth=2.2, color="#d9622b",
                  label=f"sqs-consumer {sqs_consumer}, 4 consumers, batches of 10")
        for x, y in zip(xs, ys):
            axes.annotate(f"{y:,.0f}", (x, y), textcoords="offset points", xytext=(0, -14),
                          ha="center", fontsize=8, color="#d9622b")
    ceiling = results["phases"]["a_queue_ceiling"]["messages_per_second"]
    axes.axhline(ceiling, linestyle="--", linewidth=1, color="#777777")
    axes.annotate(f"queue ceiling (a), no delay: {ceiling:,.0f}/s", (max(delays), ceiling),
                  textcoords="offset points", xytext=(0, 4), ha="right", fontsize=8, color="#555555")
    axes.set_xlabel("delay of every SQS reply (ms), as a network round trip would add")
    axes.set_ylabel("messages/s while draining")
    axes.set_xticks(delays)
    axes.set_ylim(0, max(ours + [ceiling] + [y for _, y in peer_points]) * 1.18)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower left", fontsize=8, framealpha=0.9)
    n = results["parameters"]["messages"]
    axes.set_title(
        f"Draining {n:,} messages through a delay line to LocalStack, PostgreSQL durable\n"
        f"{machine['nproc']} CPUs, {machine['date'][:10]}, commit {machine['commit']}",
        fontsize=9)
    figure.tight_layout()
    figure.savefig(sys.argv[2])
    print(f"chart: {sys.argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
