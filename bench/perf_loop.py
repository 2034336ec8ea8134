"""How far ``modelport perf``'s load loop goes: ``python -m bench.perf_loop``.

Starts the bare ASGI ceiling (C2, ``bench.bare_asgi`` under uvicorn, as ``python -m bench``
runs it) on the server CPUs and, on the client CPUs, alternates wrk and ``modelport perf
--url`` against it, round after round, each posting W1's JSON request for the same seconds at
the same concurrency. Per round it records each client's requests a second and the CPU time it
used per request (wrk's from its process accounting; the loop's own figure, ``client_cpu``,
over its measured phase), and checks the loop's count against the server's ``GET /count``.
Prints a markdown table of medians; the ratio is the median of the rounds' perf/wrk ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from . import servers
from .load import pinned, wrk_sample
from .workloads import W1, build


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _served(port: int) -> int:
    with urllib.request.urlopen(f"http://{servers.HOST}:{port}/count", timeout=10) as answer:
        return int(answer.read())


def perf_sample(
    port: int, body: Path, concurrency: int, seconds: float, cpus: str | None
) -> dict[str, Any]:
    """One ``modelport perf --json`` step against the bare server: its step as a dict."""
    cmd = [sys.executable, "-m", "modelport.cli", "perf", "--url", f"http://{servers.HOST}:{port}"]
    cmd += ["--model", W1.key, "--input", str(body), "--concurrency", str(concurrency)]
    cmd += ["--seconds", str(seconds), "--warmup", "1", "--json"]
    done = subprocess.run(pinned(cmd, cpus), capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise SystemExit(f"modelport perf failed: {done.stderr[-2000:]}")
    step: dict[str, Any] = json.loads(done.stdout)["steps"][0]
    return step


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.perf_loop", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--concurrency", default="16,64")
    parser.add_argument("--server-cpus", default="0")
    parser.add_argument("--client-cpus", default="1")
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args()
    server_cpus = None if args.no_pin else args.server_cpus
    client_cpus = None if args.no_pin else args.client_cpus
    work = Path(tempfile.mkdtemp(prefix="perf-loop-"))
    bodies = build(W1, work)
    port = servers.free_port()
    rows = []
    with servers.bare_asgi(bodies, port, cpus=server_cpus, log=work / "bare.log") as server:
        server.wait_until(lambda: _served(port) >= 0)
        url = f"http://{servers.HOST}:{port}{servers.infer_path(W1.key)}"
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            wrk_rps, wrk_cpu, perf_rps, perf_cpu, perf_cores, ratios = [], [], [], [], [], []
            for _ in range(args.rounds):
                cpu = _children_cpu()
                sample = wrk_sample(
                    url, bodies.json_request, connections=concurrency, seconds=args.seconds,
                    cpus=client_cpus,
                )  # fmt: skip
                wrk_rps.append(sample.rps)
                wrk_cpu.append((_children_cpu() - cpu) / max(1, sample.requests) * 1e6)
                before = _served(port)
                step = perf_sample(
                    port, bodies.json_request, concurrency, args.seconds, client_cpus
                )
                sent = step["requests"] + step["errors"] + step["warmup_requests"]
                if _served(port) - before != sent:
                    raise SystemExit(f"perf counted {sent}, the server {_served(port) - before}")
                perf_rps.append(step["throughput"])
                perf_cores.append(step["client_cpu"])
                perf_cpu.append(step["client_cpu"] / max(step["throughput"], 1e-9) * 1e6)
                ratios.append(step["throughput"] / max(sample.rps, 1e-9))
                print(
                    f"c={concurrency}: wrk {sample.rps:,.0f} req/s, "
                    f"perf {step['throughput']:,.0f} req/s ({step['client_cpu']:.2f} CPU)",
                    file=sys.stderr,
                    flush=True,
                )
            rows.append(
                (concurrency, statistics.median(wrk_rps), statistics.median(perf_rps),
                 statistics.median(ratios), min(ratios), max(ratios), statistics.median(wrk_cpu),
                 statistics.median(perf_cpu), statistics.median(perf_cores))
            )  # fmt: skip
    print(f"load {os.getloadavg()[0]:.1f}; {args.rounds} alternating rounds of {args.seconds} s\n")
    print("| conc. | wrk req/s | perf req/s | perf / wrk (min-max) | wrk CPU µs/req "
          "| perf CPU µs/req | perf loop CPUs |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for c, w, p, r, lo, hi, wc, pc, cores in rows:
        print(
            f"| {c} | {w:,.0f} | {p:,.0f} | {r:.2f} ({lo:.2f}-{hi:.2f}) | {wc:.1f} | {pc:.1f} "
            f"| {cores:.2f} |"
        )


if __name__ == "__main__":
    main()
