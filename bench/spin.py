"""``python -m bench.spin DUTY``: CPU work and nothing else, ``DUTY`` of each 10 ms.

Arithmetic in a loop, no memory traffic, no system calls but the sleeps: with
``--pairs --control spin``, :mod:`bench.prediction_log` pauses and resumes it beside an
unlogged server to tell what CPU time alone on the writer's vCPUs costs the server, against
which the writer's and :mod:`bench.log_neighbour`'s costs read.
"""

from __future__ import annotations

import sys
import time

PERIOD_S = 0.01


def main(argv: list[str]) -> None:
    duty = float(argv[0])
    if not 0 < duty <= 1:
        raise SystemExit(f"DUTY must be in (0, 1], got {duty}")
    print("spinning", flush=True)
    while True:
        started = time.perf_counter()
        while time.perf_counter() - started < duty * PERIOD_S:
            pass
        time.sleep(max(0.0, PERIOD_S - (time.perf_counter() - started)))


if __name__ == "__main__":
    main(sys.argv[1:])
