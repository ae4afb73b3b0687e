"""Samples the database connections a consumer holds: ``pg_connections.py DSN DATABASE OUT.json``.

Every 100 ms, until SIGTERM or SIGINT, counts the client backends of DATABASE in
``pg_stat_activity`` by ``application_name`` (sqs2pg names itself ``sqs2pg``, the peer
``sqs-consumer-peer``), then writes the peak of each, and of all together, to OUT.json. It
connects to DSN's own database, not DATABASE, so it never counts itself. Each measurement
of the benchmark has a database of its own, so what it sees there is the consumer's.
"""

import json
import signal
import sys
import time

import psycopg2

QUERY = """
    SELECT coalesce(application_name, ''), count(*)
    FROM pg_stat_activity
    WHERE datname = %s AND backend_type = 'client backend'
    GROUP BY 1
"""


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    dsn, database, out = sys.argv[1:]
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    connection = psycopg2.connect(dsn)
    connection.autocommit = True
    cursor = connection.cursor()
    peak_by_name = {}
    peak_total = 0
    samples = 0
    while not stop:
        cursor.execute(QUERY, (database,))
        rows = cursor.fetchall()
        for name, count in rows:
            peak_by_name[name] = max(peak_by_name.get(name, 0), count)
        peak_total = max(peak_total, sum(count for _, count in rows))
        samples += 1
        time.sleep(0.1)
    with open(out, "w") as file:
        json.dump({"peak_total": peak_total, "peak_by_application": peak_by_name,
                   "samples": samples}, file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
