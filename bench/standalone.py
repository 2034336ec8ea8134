"""The figures that are not load tests, each from its own process: C1 (in-process
onnxruntime), the contract overhead, ``import modelport`` time and the cold start."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

from . import servers
from .load import HarnessError, pinned
from .workloads import W1, Bodies

__all__ = ["cold_start_s", "compute_ceiling", "contract_overhead", "import_time_ms"]


def _result_line(cmd: list[str], cpus: str | None, what: str, limit: float) -> Any:
    proc = subprocess.run(
        pinned(cmd, cpus), cwd=servers.ROOT, capture_output=True, text=True, timeout=limit
    )
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return json.loads(line.split(" ", 1)[1])
    raise HarnessError(f"{what} failed (exit {proc.returncode}): {proc.stderr[-1500:]}")


def contract_overhead(rounds: int, cpus: str | None) -> list[dict[str, Any]]:
    """``bench.contract`` in a subprocess pinned to ``cpus``."""
    cmd = [sys.executable, "-m", "bench.contract", "--json", "--rounds", str(rounds)]
    rows: list[dict[str, Any]] = _result_line(cmd, cpus, "contract overhead", 300)
    return rows


def compute_ceiling(
    bodies: Bodies, batches: tuple[int, ...], seconds: float, cpus: str | None
) -> list[dict[str, float]]:
    """C1 (``bench.ceiling``) in a subprocess pinned to ``cpus``."""
    cmd = [sys.executable, "-m", "bench.ceiling", str(bodies.directory)]
    cmd += ["--data", str(bodies.arrays), "--batches", ",".join(map(str, batches))]
    cmd += ["--seconds", str(seconds)]
    rows: list[dict[str, float]] = _result_line(cmd, cpus, "C1", 120 + seconds * len(batches))
    return rows


def import_time_ms(runs: int) -> float:
    """Median cumulative time of ``import modelport`` as ``python -X importtime`` reports it."""
    times = []
    for _ in range(runs):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", "import modelport"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        for line in proc.stderr.splitlines():
            parts = line.split("|")
            if len(parts) == 3 and parts[2].strip() == "modelport":
                times.append(int(parts[1]) / 1000)
    if not times:
        raise HarnessError("python -X importtime reported no modelport import")
    return statistics.median(times)


def cold_start_s(bodies: Bodies, runs: int, cpus: str | None, logs: Path) -> float:
    """Median seconds from spawning ``modelport serve`` on W1 to its first correct answer."""
    expected = W1.expected()
    times = []
    for i in range(runs):
        http_port, grpc_port = servers.free_port(), servers.free_port()
        server = servers.modelport_serve(
            bodies, http_port, grpc_port, cpus=cpus, log=logs / f"cold-{i}.log"
        )
        verify = partial(servers.verify_json, http_port, W1.key, bodies, expected)
        with server as s:
            times.append(s.wait_until(partial(servers.answers, verify)))
    return statistics.median(times)
