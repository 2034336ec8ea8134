"""How ``--workers N`` scales: ``python -m bench.workers``.

W1 (tiny MLP) over HTTP JSON at ``--connections``, served by ``modelport serve`` with one
worker pinned to one CPU, then with ``--workers N`` pinned to N CPUs, alternating for
``--rounds``. On a machine with no spare CPUs for the load generator (2 CPUs here: wrk shares
them with the N workers) the wall-clock rates cannot show the scaling, so each run also reads
the CPU seconds of the server's process tree, and the figure compared is answers per server
CPU-second: if N workers answer as many per CPU-second as one, N dedicated CPUs answer N times
as many. Issue 21's goal: N workers >= 0.9 N of one worker.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

from .load import HarnessError, wrk_sample
from .servers import HOST, Server, answers, free_port, verify_json
from .workloads import W1, Bodies, build

HERE = Path(__file__).resolve().parent


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants (children's, as they run)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
        stack += [int(c) for c in children]
    return total


def _per_worker(port: int) -> list[int]:
    """Requests each worker process has answered (its share of ``/metrics``)."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.findall(r'^modelport_worker_requests\{worker="\d+"\} (\S+)$', text, re.MULTILINE)
    return sorted((int(float(v)) for v in found), reverse=True)


def _answers(port: int, bodies: Bodies, expected: Any) -> bool:
    return answers(lambda: verify_json(port, "w1", bodies, expected))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--work-dir", type=Path, default=HERE / "_work")
    args = parser.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < args.workers:
        raise HarnessError(f"--workers {args.workers} needs as many CPUs; this process has {cpus}")
    bodies = build(W1, args.work_dir)
    exe = Path(sys.executable).with_name("modelport")
    per_cpu_s: dict[int, list[float]] = {}
    expected = W1.expected()
    for _ in range(args.rounds):
        for workers in (1, args.workers):
            port = free_port()
            cmd = [str(exe), "serve", str(bodies.directory), "--host", HOST]
            cmd += ["--http-port", str(port), "--grpc-port", "0", "--workers", str(workers)]
            pinned = ",".join(str(c) for c in cpus[:workers])
            log = args.work_dir / "logs" / f"workers-{workers}.log"
            with Server(f"{workers} worker(s)", cmd, cpus=pinned, env={}, log=log) as server:
                server.wait_until(partial(_answers, port, bodies, expected), timeout=120)
                assert server.proc is not None
                url = f"http://{HOST}:{port}/v2/models/w1/infer"
                # wrk on the last CPU (shared with the workers when there is none spare)
                load = {"connections": args.connections, "cpus": str(cpus[-1])}
                wrk_sample(url, bodies.json_request, seconds=1, **load)  # warm every worker
                before = tree_cpu_seconds(server.proc.pid)
                sample = wrk_sample(url, bodies.json_request, seconds=args.seconds, **load)
                used = tree_cpu_seconds(server.proc.pid) - before
                split = _per_worker(port) if workers > 1 else []
            rate = sample.requests / used if used > 0 else 0.0
            per_cpu_s.setdefault(workers, []).append(rate)
            print(
                f"{workers} worker(s) on CPUs {pinned}: {sample.rps:9,.0f} req/s, server "
                f"{used:5.2f} CPU-s, {rate:9,.0f} answers per server CPU-second"
                + (f"; answers by worker since start {split}" if split else ""),
                flush=True,
            )
    one = statistics.median(per_cpu_s[1])
    many = statistics.median(per_cpu_s[args.workers])
    print(
        f"median answers per server CPU-second: 1 worker {one:,.0f}, {args.workers} workers "
        f"{many:,.0f} = {many / one:.2f} of one; on {args.workers} dedicated CPUs that is "
        f"{args.workers * many / one:.2f}x one worker (goal >= {0.9 * args.workers:.1f}x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
