"""One benchmark run: every target, one after another, on the same machine.

Order: ``import modelport`` time, the contract overhead, C1 (in-process onnxruntime), then per
workload C2 (bare ASGI and bare gRPC, W1 only), B (Flask under gunicorn) and modelport (HTTP
JSON, HTTP binary and gRPC from one server), then the cold start. Servers run on
``server_cpus``, load generators on ``client_cpus``. A target that cannot run is recorded with
its reason; the rest still run.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from . import servers
from .load import HarnessError, Point, Sample, grpc_sample, measure, parse_cpus, wrk_sample
from .machine import describe
from .standalone import cold_start_s, compute_ceiling, contract_overhead, import_time_ms
from .workloads import W1, W2, Bodies, Workload, build

__all__ = ["TARGETS", "Settings", "run"]

C2, C2G, B, JSON, BINARY, GRPC = (
    "C2 bare ASGI",
    "C2 bare gRPC",
    "B Flask+gunicorn",
    "modelport HTTP JSON",
    "modelport HTTP binary",
    "modelport gRPC",
)
TARGETS = {"c2": C2, "c2grpc": C2G, "b": B, "json": JSON, "binary": BINARY, "grpc": GRPC}
"""Short names (for ``--targets``) of the load-tested targets."""


@dataclass
class Settings:
    """What one run measures and how long; the defaults are the full run (about 10 minutes)."""

    work_dir: Path
    workloads: tuple[Workload, ...] = (W1, W2)
    targets: tuple[str, ...] = tuple(TARGETS)
    concurrency: tuple[int, ...] = (1, 16, 64)
    seconds: int = 4
    warmup: int = 2
    repeats: int = 3
    batches: tuple[int, ...] = (1, 8, 32, 64, 128)
    c1_seconds: float = 2.0
    server_cpus: str | None = "0"
    client_cpus: str | None = "1"
    threads: int | None = None
    """None: modelport's defaults everywhere (no batching or runtime settings); a number: the
    hand-tuned configuration, with that many onnxruntime intra-op threads for every target."""
    cold_starts: int = 3
    contract_rounds: int = 15
    """Rounds of the contract-overhead micro-benchmark; 0 skips it."""
    import_runs: int = 5
    profile_seconds: int = 0
    """When > 0, py-spy samples the modelport server during W1 HTTP JSON at top concurrency."""

    @property
    def gunicorn_workers(self) -> int:
        # gunicorn's documented recommendation: (2 x cores) + 1 sync workers.
        cores = len(parse_cpus(self.server_cpus)) if self.server_cpus else os.cpu_count() or 1
        return 2 * cores + 1

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["work_dir"] = str(self.work_dir)
        data["workloads"] = [w.description for w in self.workloads]
        data["gunicorn_workers"] = self.gunicorn_workers
        return data


@dataclass
class Results:
    """Every figure of a run, JSON-serialisable through :meth:`to_dict`."""

    settings: dict[str, Any]
    machine: dict[str, Any]
    import_ms: float | None = None
    cold_start_s: float | None = None
    c1: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    contract: list[dict[str, Any]] = field(default_factory=list)
    points: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    profile: dict[str, Any] | None = None
    started: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run(settings: Settings, log: Callable[[str], None] = print) -> Results:
    """Run the benchmark described by ``settings``."""
    began = time.perf_counter()
    results = Results(settings.to_dict(), describe())
    results.started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    built = {w.key: build(w, settings.work_dir, settings.threads) for w in settings.workloads}
    with _step(results, "import modelport", log):
        results.import_ms = import_time_ms(settings.import_runs)
    if settings.contract_rounds > 0:
        with _step(results, "contract overhead", log):
            results.contract = contract_overhead(settings.contract_rounds, settings.server_cpus)
    for workload in settings.workloads:
        with _step(results, f"C1 {workload.key}", log):
            results.c1[workload.key] = compute_ceiling(
                built[workload.key], settings.batches, settings.c1_seconds, settings.server_cpus
            )
    for workload in settings.workloads:
        points = results.points.setdefault(workload.key, {})
        for name, curve in _load_targets(workload, built[workload.key], settings, results, log):
            points[name] = [p.to_dict() for p in curve]
    if JSON in _wanted(settings) and W1 in settings.workloads:
        with _step(results, "cold start", log):
            results.cold_start_s = cold_start_s(
                built[W1.key],
                settings.cold_starts,
                settings.server_cpus,
                settings.work_dir / "logs",
            )
    results.seconds = time.perf_counter() - began
    return results


def _wanted(settings: Settings) -> list[str]:
    return [TARGETS[t] for t in settings.targets]


@contextmanager
def _step(results: Results, name: str, log: Callable[[str], None]) -> Iterator[None]:
    log(f"[bench] {name}")
    try:
        yield
    except HarnessError as exc:
        log(f"[bench] {name} FAILED: {exc}")
        results.failures[name] = str(exc).splitlines()[0][:300]


@dataclass
class _Workbench:
    """One workload's samplers, readiness checks and sweeps, sharing the run's settings."""

    workload: Workload
    bodies: Bodies
    settings: Settings
    log: Callable[[str], None]

    def answers_json(self, port: int) -> Callable[[], bool]:
        expected = self.workload.expected()
        return partial(
            servers.answers,
            partial(servers.verify_json, port, self.workload.key, self.bodies, expected),
        )

    def answers_grpc(self, port: int) -> Callable[[], bool]:
        expected = self.workload.expected()
        return partial(servers.answers, partial(servers.verify_grpc, port, self.bodies, expected))

    def http(self, port: int, *, binary: bool = False) -> Callable[[int, float], Sample]:
        url = f"http://{servers.HOST}:{port}{servers.infer_path(self.workload.key)}"
        bodies, cpus = self.bodies, self.settings.client_cpus

        def sample(concurrency: int, seconds: float) -> Sample:
            return wrk_sample(
                url,
                bodies.binary_request if binary else bodies.json_request,
                connections=concurrency,
                seconds=max(1, math.ceil(seconds)),
                cpus=cpus,
                content_type="application/octet-stream" if binary else "application/json",
                header_length=bodies.binary_header_length if binary else None,
            )

        return sample

    def grpc(self, port: int) -> Callable[[int, float], Sample]:
        target, request = f"{servers.HOST}:{port}", self.bodies.grpc_request
        cpus = self.settings.client_cpus

        def sample(concurrency: int, seconds: float) -> Sample:
            return grpc_sample(target, request, connections=concurrency, seconds=seconds, cpus=cpus)

        return sample

    def sweep(self, name: str, sample: Callable[[int, float], Sample]) -> list[Point]:
        """One point per concurrency: warm-up, repeats, median."""
        curve = []
        for concurrency in self.settings.concurrency:
            point = measure(
                sample,
                concurrency=concurrency,
                seconds=self.settings.seconds,
                warmup=self.settings.warmup,
                repeats=self.settings.repeats,
            )
            self.log(
                f"[bench]   {self.workload.key} {name} c={concurrency}: {point.rps:,.0f} req/s "
                f"p50 {point.p50_ms:.2f} ms p99 {point.p99_ms:.2f} ms errors {point.errors}"
            )
            curve.append(point)
        return curve


def _load_targets(
    workload: Workload,
    bodies: Bodies,
    settings: Settings,
    results: Results,
    log: Callable[[str], None],
) -> Iterator[tuple[str, list[Point]]]:
    wanted = _wanted(settings)
    bench = _Workbench(workload, bodies, settings, log)
    logs, model, cpus = settings.work_dir / "logs", workload.key, settings.server_cpus
    if C2 in wanted and workload is W1:
        with _step(results, f"{C2} {model}", log):
            port = servers.free_port()
            with servers.bare_asgi(bodies, port, cpus=cpus, log=logs / "c2.log") as server:
                server.wait_until(bench.answers_json(port))
                yield C2, bench.sweep(C2, bench.http(port))
    if C2G in wanted and workload is W1:
        with _step(results, f"{C2G} {model}", log):
            port = servers.free_port()
            with servers.bare_grpc(bodies, port, cpus=cpus, log=logs / "c2g.log") as server:
                server.wait_until(bench.answers_grpc(port))
                yield C2G, bench.sweep(C2G, bench.grpc(port))
    if B in wanted:
        with _step(results, f"{B} {model}", log):
            port, workers = servers.free_port(), settings.gunicorn_workers
            log_file = logs / f"b-{model}.log"
            with servers.flask_baseline(
                bodies, port, workers=workers, cpus=cpus, log=log_file
            ) as server:
                server.wait_until(bench.answers_json(port))
                yield B, bench.sweep(B, bench.http(port))
    mine = [t for t in (JSON, BINARY, GRPC) if t in wanted]
    if not mine:
        return
    with _step(results, f"modelport {model}", log):
        http_port, grpc_port = servers.free_port(), servers.free_port()
        log_file = logs / f"modelport-{model}.log"
        with servers.modelport_serve(
            bodies, http_port, grpc_port, cpus=cpus, log=log_file
        ) as server:
            server.wait_until(bench.answers_json(http_port))
            if BINARY in mine:
                servers.verify_binary(http_port, model, bodies, workload.expected())
            if GRPC in mine:
                servers.verify_grpc(grpc_port, bodies, workload.expected())
            if JSON in mine:
                yield JSON, bench.sweep(JSON, bench.http(http_port))
                if workload is W1 and settings.profile_seconds > 0:
                    with _step(results, f"profile {JSON} {model}", log):
                        results.profile = _profile(server, bench.http(http_port), settings)
            if BINARY in mine:
                yield BINARY, bench.sweep(BINARY, bench.http(http_port, binary=True))
            if GRPC in mine:
                yield GRPC, bench.sweep(GRPC, bench.grpc(grpc_port))


def _profile(
    server: servers.Server, sample: Callable[[int, float], Sample], settings: Settings
) -> dict[str, Any]:
    from .profile import profile_during

    assert server.proc is not None
    return profile_during(
        server.proc.pid,
        sample,
        concurrency=max(settings.concurrency),
        seconds=settings.profile_seconds,
        cpus=settings.client_cpus,
        output=settings.work_dir / "profile-w1-json.txt",
    )
