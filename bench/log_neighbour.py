"""``python -m bench.log_neighbour RATE SECONDS DB``: the prediction log's writing work, alone.

Records synthetic W1 predictions at ``RATE`` per second for ``SECONDS`` into the SQLite file
``DB`` through a :class:`~modelport.store.PredictionLog` with its writer process, handed over
``PER_CALL`` at a time as a server's batches are: the CPU, memory traffic and disk writes of a
server's writer process at that rate (and a little more: this process's hand-overs), with no
server attached. :mod:`bench.prediction_log` runs it beside an unlogged server, on the CPUs
the writer process would use, to measure what that work costs the server through the machine
alone (shared caches, memory bandwidth, a hypervisor's vCPUs) rather than through modelport.
After a pause (``SIGSTOP``, as ``--pairs --control neighbour`` does) it goes on at ``RATE``
rather than catching up.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from modelport.store import PredictionLog

from .workloads import W1

TICK_S = 0.005
PER_CALL = 16


def main(argv: list[str]) -> None:
    rate, seconds, db = float(argv[0]), float(argv[1]), argv[2]
    x = np.repeat(W1.row(), PER_CALL, axis=0)
    y = np.repeat(W1.expected().astype(np.float32), PER_CALL, axis=0)
    rows = [1] * PER_CALL
    with PredictionLog.open(db, writer="process") as log:
        log.flush()  # the writer process is up
        print(f"logging {log.writer_pid}", flush=True)
        started = time.monotonic()
        done = 0
        while (now := time.monotonic()) - started < seconds:
            due = int((now - started) * rate)
            if due - done > rate * 0.1:  # it was paused (SIGSTOP): go on at the rate, no burst
                done = due - PER_CALL
            while done < due:
                contexts = [(f"n{done + k}", now, None) for k in range(PER_CALL)]
                log.record_call("neighbour", "1", now, contexts, rows, {"x": x}, {"y": y})
                done += PER_CALL
            time.sleep(TICK_S)
    print(f"neighbour: {done} records in {seconds} s", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
