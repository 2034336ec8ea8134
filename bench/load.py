"""Load generators, each a separate process pinned to the client CPUs.

HTTP load comes from ``wrk`` driven by ``wrk_v2.lua``; gRPC load from ``bench.grpc_load``
(grpc.aio, since no efficient gRPC load generator installs from a package registry). Both
print one ``BENCH_RESULT {json}`` line, parsed into a :class:`Sample`. A :class:`Point` is the
median of several samples taken after a warm-up.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "HarnessError",
    "Point",
    "Sample",
    "grpc_sample",
    "measure",
    "parse_cpus",
    "pinned",
    "wrk_sample",
]

LUA_SCRIPT = Path(__file__).with_name("wrk_v2.lua")
_MARK = "BENCH_RESULT "


class HarnessError(RuntimeError):
    """The harness itself could not run a step (missing tool, dead server, bad output)."""


@dataclass(frozen=True)
class Sample:
    """One load-generator run."""

    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Point:
    """The median of repeated samples at one concurrency."""

    concurrency: int
    rps: float
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    repeats: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_cpus(cpus: str) -> set[int]:
    """The CPUs of a taskset list such as ``0``, ``0,2`` or ``0-3``."""
    found: set[int] = set()
    for part in cpus.split(","):
        first, _, last = part.partition("-")
        found.update(range(int(first), int(last or first) + 1))
    return found


def pinned(cmd: Sequence[str], cpus: str | None) -> list[str]:
    """``cmd`` under ``taskset -c cpus`` (or unchanged when ``cpus`` is None)."""
    return ["taskset", "-c", cpus, *cmd] if cpus else list(cmd)


def wrk_sample(
    url: str,
    body: Path,
    *,
    connections: int,
    seconds: int,
    cpus: str | None,
    content_type: str = "application/json",
    header_length: int | None = None,
    threads: int = 1,
    authorization: str | None = None,
) -> Sample:
    """Run wrk against ``url`` POSTing ``body`` for ``seconds`` on ``connections`` connections
    (with an ``Authorization`` header, if given)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise HarnessError("wrk is not installed: apt-get install wrk")
    env = {
        **os.environ,
        "BENCH_BODY": str(body),
        "BENCH_CONTENT_TYPE": content_type,
        "BENCH_HEADER_LENGTH": "" if header_length is None else str(header_length),
        "BENCH_AUTHORIZATION": authorization or "",
    }
    threads = max(1, min(threads, connections))
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s"]
    cmd += ["-s", str(LUA_SCRIPT), url]
    result = _run(pinned(cmd, cpus), env=env, limit=seconds + 30)
    return Sample(
        requests=int(result["requests"]),
        seconds=result["duration_us"] / 1e6,
        errors=int(result["errors"]),
        p50_ms=result["p50_us"] / 1e3,
        p99_ms=result["p99_us"] / 1e3,
    )


def grpc_sample(
    target: str,
    request: Path,
    *,
    connections: int,
    seconds: float,
    cpus: str | None,
    warmup: float = 0.0,
    connect_timeout: float = 10.0,
) -> Sample:
    """Run ``bench.grpc_load`` against ``target`` (host:port) sending the serialized request."""
    cmd = [sys.executable, "-m", "bench.grpc_load", target, str(request)]
    cmd += ["--concurrency", str(connections), "--seconds", str(seconds)]
    cmd += ["--warmup", str(warmup), "--connect-timeout", str(connect_timeout)]
    root = str(Path(__file__).resolve().parent.parent)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [root, os.getenv("PYTHONPATH")])),
    }
    result = _run(pinned(cmd, cpus), env=env, limit=seconds + warmup + connect_timeout + 60)
    return Sample(
        requests=int(result["requests"]),
        seconds=result["duration_us"] / 1e6,
        errors=int(result["errors"]),
        p50_ms=result["p50_us"] / 1e3,
        p99_ms=result["p99_us"] / 1e3,
    )


def measure(
    sample: Callable[[int, float], Sample],
    *,
    concurrency: int,
    seconds: float,
    warmup: float,
    repeats: int,
    rows_per_request: int = 1,
) -> Point:
    """Warm up once (discarded), then take ``repeats`` samples and keep the median of each."""
    if warmup > 0:
        sample(concurrency, warmup)
    samples = [sample(concurrency, seconds) for _ in range(repeats)]
    rps = statistics.median(s.rps for s in samples)
    return Point(
        concurrency=concurrency,
        rps=rps,
        rows_per_s=rps * rows_per_request,
        p50_ms=statistics.median(s.p50_ms for s in samples),
        p99_ms=statistics.median(s.p99_ms for s in samples),
        errors=sum(s.errors for s in samples),
        requests=sum(s.requests for s in samples),
        repeats=len(samples),
    )


def _run(cmd: list[str], *, env: dict[str, str], limit: float) -> dict[str, Any]:
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        raise HarnessError(f"load generator did not finish in {limit:.0f} s: {cmd}") from None
    for line in proc.stdout.splitlines():
        if line.startswith(_MARK):
            parsed: dict[str, Any] = json.loads(line[len(_MARK) :])
            return parsed
    raise HarnessError(
        f"load generator printed no result (exit {proc.returncode}): {' '.join(cmd)}\n"
        f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    )
