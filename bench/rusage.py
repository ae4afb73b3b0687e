"""Runs a command and records what it cost: ``rusage.py OUT.json -- COMMAND [ARGS...]``.

Writes the child's exact CPU time (user + system, from wait4) and peak RSS (ru_maxrss,
the same high-water mark as VmHWM) to OUT.json, then exits with the child's status.
SIGTERM and SIGINT are passed on to the child, so the benchmark can stop a consumer
through this wrapper.
"""

import json
import os
import signal
import sys
import time


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    out, command = sys.argv[1], sys.argv[3:]
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(command[0], command)
        finally:
            os._exit(127)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, _frame: os.kill(pid, number))
    while True:
        try:
            _, status, usage = os.wait4(pid, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    with open(out, "w") as file:
        json.dump(
            {
                "exit_code": code,
                "wall_seconds": time.monotonic() - started,
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "user_seconds": usage.ru_utime,
                "system_seconds": usage.ru_stime,
                "peak_rss_kib": usage.ru_maxrss,
            },
            file,
        )
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
