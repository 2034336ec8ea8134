"""A perf run: a target (a running server, or a model loaded in this process), the doors to
load, and a sweep of load levels, each warmed up, measured and matched with the server's own
counters of the same interval."""

from __future__ import annotations

import asyncio
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ..errors import ConfigError, ModelportError
from ..model import batch_rows
from .inputs import Payload, bf16_inputs, conform, from_file, from_signature
from .loop import CoroutineDriver, Driver, HttpDriver, Tally, new_loop
from .scrape import BatchStats, Recorder, Snapshot, difference, snapshot

__all__ = [
    "PROTOCOLS",
    "LocalTarget",
    "PerfReport",
    "RemoteTarget",
    "Step",
    "Target",
    "measure",
    "run_steps",
]

PROTOCOLS = ("json", "binary", "grpc")
"""The doors of a running server: V2 HTTP JSON, V2 HTTP binary tensors, gRPC."""


@dataclass
class Step:
    """One load level on one door, measured."""

    protocol: str
    concurrency: int | None
    """Requests kept in flight (closed loop); None in the open loop."""
    rate: float | None
    """Requests started a second (open loop); None in the closed loop."""
    requests: int
    """Requests answered successfully in the measured interval."""
    errors: int
    error_codes: dict[str, int]
    seconds: float
    throughput: float
    """Successful requests a second."""
    rows_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    server: BatchStats | None = None
    """What the server counted in the same interval (None where it could not be read)."""
    warmup_requests: int = 0
    """Requests sent in the unmeasured warm-up before it (answered or failed)."""
    client_cpu: float = 0.0
    """CPUs this process kept busy meanwhile (CPU seconds over wall seconds): near 1.0 the
    load loop itself may be the limit. In-process it includes the model's own work."""

    @property
    def load(self) -> str:
        return f"c={self.concurrency}" if self.concurrency is not None else f"{self.rate:g}/s"

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in vars(self).items() if k != "server"}
        for key in ("seconds", "throughput", "rows_per_s", "client_cpu"):
            data[key] = round(data[key], 3)
        for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms"):
            data[key] = round(data[key], 4)
        data["server"] = self.server.to_dict() if self.server is not None else None
        return data


@dataclass
class PerfReport:
    """A whole perf run."""

    target: str
    model: str
    version: str | None
    rows_per_request: int
    loop: str
    cpus: str
    """The CPUs this (client) process may use, as :mod:`modelport.cpus` counts them."""
    seconds: float
    warmup: float
    steps: list[Step] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in vars(self).items() if k != "steps"}
        data["steps"] = [s.to_dict() for s in self.steps]
        return data


def summarize(
    tally: Tally, protocol: str, rows: int, *, concurrency: int | None, rate: float | None
) -> Step:
    """A :class:`Step` from what a measured phase saw."""
    ms = np.asarray(tally.latencies or [0], dtype=np.float64) / 1e6
    p50, p90, p99 = (float(v) for v in np.percentile(ms, [50, 90, 99]))
    seconds = max(tally.seconds, 1e-9)
    answered = len(tally.latencies)
    return Step(
        protocol=protocol,
        concurrency=concurrency,
        rate=rate,
        requests=answered,
        errors=tally.errors,
        error_codes=dict(sorted(tally.codes.items())),
        seconds=tally.seconds,
        throughput=answered / seconds,
        rows_per_s=answered * rows / seconds,
        p50_ms=p50 if answered else math.nan,
        p90_ms=p90 if answered else math.nan,
        p99_ms=p99 if answered else math.nan,
        mean_ms=float(ms.mean()) if answered else math.nan,
        max_ms=float(ms.max()) if answered else math.nan,
    )


class Target(ABC):
    """Something to load: what it is called, its doors and its counters."""

    name: str
    """The model's name."""
    version: str | None = None
    description: str = ""
    rows = 1
    """Rows in each request."""

    @abstractmethod
    async def start(self) -> None:
        """Connect (or load) and prepare the requests."""

    @abstractmethod
    def driver(self, protocol: str) -> Driver:
        """The load driver of ``protocol``."""

    @abstractmethod
    async def counters(self) -> Snapshot | None:
        """The model's counters now, None where they cannot be read."""

    async def stop(self) -> None:  # noqa: B027  (nothing to release by default)
        """Release what :meth:`start` took."""


# -- a running server ---------------------------------------------------------------------


async def http_get(
    host: str, port: int, path: str, token: str | None = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    """One ``GET`` on a fresh connection: ``(status, body)``."""

    async def get() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            auth = f"Authorization: Bearer {token}\r\n" if token else ""
            ask = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}Connection: close\r\n"
            writer.write(ask.encode("latin-1") + b"\r\n")
            head = (await reader.readuntil(b"\r\n\r\n")).lower()
            at = head.find(b"\ncontent-length:")
            if at >= 0:  # read the body only: a server may keep the connection open
                body = await reader.readexactly(int(head[at + 16 : head.find(b"\r", at)]))
            else:
                body = await reader.read()
                if b"\ntransfer-encoding: chunked" in head:
                    body = _unchunk(body)
        except asyncio.IncompleteReadError as exc:
            raise ConnectionError(f"the answer to GET {path} was cut short") from exc
        finally:
            writer.close()
        return int(head[9:12]), body

    return await asyncio.wait_for(get(), timeout)


def _unchunk(body: bytes) -> bytes:
    out: list[bytes] = []
    pos = 0
    while True:
        end = body.find(b"\r\n", pos)
        size = int(body[pos:end].split(b";")[0], 16) if end >= 0 else 0
        if size == 0:
            return b"".join(out)
        out.append(body[end + 2 : end + 2 + size])
        pos = end + 2 + size + 2


class RemoteTarget(Target):
    """A running ``modelport serve`` (or any V2 server) at ``url``; gRPC at ``grpc_url``
    (default: the same host, port 8081)."""

    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        version: str | None = None,
        grpc_url: str | None = None,
        token: str | None = None,
        batch_size: int = 1,
        input_file: Path | None = None,
    ) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http" or not parts.hostname:
            raise ConfigError(f"--url {url!r}: expected http://HOST:PORT")
        self.url = f"http://{parts.netloc}"
        self.host, self.port = parts.hostname, parts.port or 80
        self.grpc_url = grpc_url or f"{self.host}:8081"
        self.name = model or ""
        self.version = version
        self.token = token
        self.batch_size = batch_size
        self.input_file = input_file
        self.description = self.url
        self.payloads: list[Payload] = []
        self.datatypes: dict[str, str] = {}
        self._metrics = True

    async def _get_json(self, path: str) -> Any:
        import json

        try:
            status, body = await http_get(self.host, self.port, path, self.token)
        except (OSError, asyncio.TimeoutError) as exc:
            raise ModelportError(f"cannot reach {self.url}: {exc}") from None
        if status != 200:
            answer = body[:300].decode(errors="replace")
            raise ModelportError(f"{self.url}{path} answered {status}: {answer}")
        try:
            return json.loads(body)
        except ValueError:
            raise ModelportError(f"{self.url}{path} answered something other than JSON") from None

    async def start(self) -> None:
        if not self.name:
            listing = await self._get_json("/v2/models")
            names = sorted({m["name"] for m in listing.get("models", [])})
            if len(names) != 1:
                raise ConfigError(
                    f"{self.url} serves {len(names)} models {names}: name one with --model"
                )
            self.name = names[0]
        path = f"/v2/models/{self.name}" + (f"/versions/{self.version}" if self.version else "")
        try:
            metadata = await self._get_json(path)
        except ModelportError:
            if self.input_file is None:
                raise
            metadata = {}  # a server without metadata: send the file as it is
        inputs = (metadata.get("inputs") if isinstance(metadata, dict) else None) or []
        if self.input_file is not None:
            self.payloads = conform(from_file(self.input_file), inputs)
        else:
            self.payloads = from_signature(inputs, self.batch_size)
        self.rows = batch_rows(self.payloads[0])
        self.datatypes = bf16_inputs(inputs)
        self._metrics = await self.counters() is not None

    def _path(self) -> str:
        base = f"/v2/models/{self.name}"
        return base + (f"/versions/{self.version}" if self.version else "") + "/infer"

    def driver(self, protocol: str) -> Driver:
        if protocol in ("json", "binary"):
            from .inputs import http_request

            requests = [
                http_request(
                    p,
                    host=f"{self.host}:{self.port}",
                    path=self._path(),
                    binary=protocol == "binary",
                    token=self.token,
                    datatypes=self.datatypes,
                )
                for p in self.payloads
            ]
            return HttpDriver(self.host, self.port, requests, protocol=protocol)
        if protocol == "grpc":
            return _grpc_driver(
                self.grpc_url, self.name, self.version, self.payloads, self.datatypes, self.token
            )
        raise ConfigError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")

    async def counters(self) -> Snapshot | None:
        if not self._metrics:
            return None
        try:
            status, body = await http_get(self.host, self.port, "/metrics", self.token)
        except (OSError, asyncio.TimeoutError):
            return None
        text = body.decode("utf-8", errors="replace")
        if status != 200 or "modelport_requests" not in text:
            return None  # not modelport's metrics
        return snapshot(text, self.name)


STREAMS_PER_CHANNEL = 16
"""gRPC calls multiplexed on one channel (one HTTP/2 connection) before another opens."""


def _grpc_driver(
    target: str,
    model: str,
    version: str | None,
    payloads: Sequence[Payload],
    datatypes: Mapping[str, str],
    token: str | None,
) -> Driver:
    from .._deps import require

    grpc = require("grpc", extra="serve")
    from .inputs import grpc_request

    requests = [grpc_request(p, model, version, datatypes) for p in payloads]
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    channels: list[Any] = []
    calls: list[Any] = []
    method = "/inference.GRPCInferenceService/ModelInfer"

    async def call(i: int) -> str | None:
        try:
            await calls[i % len(calls)](requests[i % len(requests)], metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            return str(exc.code().name)
        return None

    class GrpcDriver(CoroutineDriver):
        async def _channels(self, count: int) -> None:
            wanted = max(1, -(-count // STREAMS_PER_CHANNEL))
            while len(channels) < wanted:
                channel = grpc.aio.insecure_channel(
                    target, options=[("grpc.use_local_subchannel_pool", 1)]
                )
                try:
                    await asyncio.wait_for(channel.channel_ready(), 10)
                except asyncio.TimeoutError:
                    await channel.close()
                    raise ModelportError(f"cannot reach gRPC at {target}") from None
                channels.append(channel)
                calls.append(channel.unary_unary(method))

        async def closed(self, concurrency: int, seconds: float, tally: Tally) -> None:
            await self._channels(concurrency)
            await super().closed(concurrency, seconds, tally)

        async def paced(self, rate: float, seconds: float, max_inflight: int, tally: Tally) -> None:
            await self._channels(max(1, min(max_inflight, int(rate * 0.05) + 1)))
            await super().paced(rate, seconds, max_inflight, tally)

    async def close() -> None:
        for channel in channels:
            await channel.close()

    return GrpcDriver("grpc", call, close)


# -- a model in this process --------------------------------------------------------------


class LocalTarget(Target):
    """A model loaded here behind its own batcher (no transport): what the model and the
    batcher can do on this machine."""

    def __init__(
        self,
        path: Path,
        *,
        model: str | None = None,
        version: str | None = None,
        trust: bool = False,
        threads: int | None = None,
        batching: Mapping[str, Any] | None = None,
        batch_size: int = 1,
        input_file: Path | None = None,
    ) -> None:
        self.path = path
        self.name = model or ""
        self.version = version
        self.trust = trust
        self.threads = threads
        self.batching = dict(batching or {})
        self.batch_size = batch_size
        self.input_file = input_file
        self.description = str(path)
        self.recorder = Recorder()
        self.dataplane: Any = None
        self.payloads: list[Payload] = []

    def resolve(self) -> Any:
        """The model under :attr:`path` (resolved, not loaded), with the overrides applied."""
        from ..cpus import default_threads
        from ..runtime.repository import discover

        options = {"intra_op_threads": self.threads or default_threads()}
        models = discover(self.path, trust=self.trust or None, options=options)
        if self.name:
            chosen = [m for m in models if m.name == self.name]
            if not chosen:
                raise ConfigError(f"{self.path}: no model named {self.name!r}")
        else:
            names = sorted({m.name for m in models})
            if len(names) != 1:
                raise ConfigError(
                    f"{self.path} holds {len(names)} models {names}: name one with --model"
                )
            chosen = models
        if self.version is not None:
            chosen = [m for m in chosen if m.version == self.version]
            if not chosen:
                raise ConfigError(f"{self.path}: no version {self.version!r} of {self.name!r}")
        model = max(chosen, key=lambda m: int(m.version) if m.version.isdigit() else -1)
        if self.threads is not None:
            model.options["intra_op_threads"] = self.threads
        if self.batching:
            model.batching = replace(model.batching, **self.batching)
        return model

    async def start(self) -> None:
        from ..runtime.dataplane import DataPlane

        model = self.resolve()
        self.name, self.version = model.name, model.version
        self.dataplane = DataPlane([model], metrics=self.recorder)
        await self.dataplane.load()
        runner = self.dataplane.runner(self.name, self.version)
        if not runner.ready:
            raise ModelportError(f"model {self.name!r} failed to load: {runner.error}")
        signature = model.served_signature
        inputs = [s.to_dict() for s in (signature.inputs if signature is not None else ())]
        if self.input_file is not None:
            self.payloads = conform(from_file(self.input_file), inputs)
        else:
            self.payloads = from_signature(inputs, self.batch_size)
        self.rows = batch_rows(self.payloads[0])

    def driver(self, protocol: str) -> Driver:
        from ..protocol.types import InferenceRequest

        dataplane, recorder, payloads = self.dataplane, self.recorder, self.payloads
        name, version = self.name, self.version

        async def call(i: int) -> str | None:
            try:
                request = InferenceRequest(inputs=payloads[i % len(payloads)])
                await dataplane.infer(name, version, request)
            except ModelportError as exc:
                code = type(exc).__name__
                recorder.observe_request(name, version or "", "local", code, 0.0)
                return code
            recorder.observe_request(name, version or "", "local", "ok", 0.0)
            return None

        async def close() -> None:
            return None

        return CoroutineDriver("local", call, close)

    async def counters(self) -> Snapshot | None:
        return self.recorder.snapshot()

    async def stop(self) -> None:
        if self.dataplane is not None:
            await self.dataplane.close()


# -- the sweep ------------------------------------------------------------------------------

OnStep = Callable[[Step], None]


async def run_steps(
    target: Target,
    protocols: Sequence[str],
    *,
    concurrency: Sequence[int] = (),
    rates: Sequence[float] = (),
    seconds: float = 5.0,
    warmup: float = 1.0,
    max_inflight: int = 256,
    timeout: float = 30.0,
    on_step: OnStep | None = None,
) -> list[Step]:
    """Measure each load level on each door of a started ``target``."""
    if not concurrency and not rates:
        raise ConfigError("give load levels: concurrency or rates")
    steps: list[Step] = []
    for protocol in protocols:
        driver = target.driver(protocol)
        driver.timeout = timeout
        try:
            levels: list[tuple[int | None, float | None]] = [(c, None) for c in concurrency]
            levels += [(None, r) for r in rates]
            for level, rate in levels:
                warm = Tally()
                if warmup > 0:
                    await _phase(driver, level, rate, warmup, max_inflight, warm)
                before = await target.counters()
                tally = Tally()
                cpu = time.process_time()
                await _phase(driver, level, rate, seconds, max_inflight, tally)
                cpu = time.process_time() - cpu
                after = await target.counters()
                step = summarize(tally, driver.protocol, target.rows, concurrency=level, rate=rate)
                step.warmup_requests = len(warm.latencies) + warm.errors
                step.client_cpu = cpu / tally.seconds if tally.seconds > 0 else 0.0
                if before is not None and after is not None:
                    step.server = difference(before, after)
                steps.append(step)
                if on_step is not None:
                    on_step(step)
        finally:
            await driver.close()
    return steps


async def _phase(
    driver: Driver,
    concurrency: int | None,
    rate: float | None,
    seconds: float,
    max_inflight: int,
    tally: Tally,
) -> None:
    if concurrency is not None:
        await driver.closed(concurrency, seconds, tally)
    else:
        assert rate is not None
        await driver.paced(rate, seconds, max_inflight, tally)


def measure(
    target: Target,
    protocols: Sequence[str],
    *,
    concurrency: Sequence[int] = (),
    rates: Sequence[float] = (),
    seconds: float = 5.0,
    warmup: float = 1.0,
    max_inflight: int = 256,
    timeout: float = 30.0,
    on_step: OnStep | None = None,
) -> PerfReport:
    """Start ``target``, sweep its doors and load levels, stop it: the whole run, on a new
    event loop (uvloop's when installed)."""
    from ..cpus import cpu_budget

    loop, loop_name = new_loop()

    async def run() -> PerfReport:
        await target.start()
        try:
            steps = await run_steps(
                target, protocols, concurrency=concurrency, rates=rates, seconds=seconds,
                warmup=warmup, max_inflight=max_inflight, timeout=timeout, on_step=on_step,
            )  # fmt: skip
        finally:
            await target.stop()
        return PerfReport(
            target=target.description,
            model=target.name,
            version=target.version,
            rows_per_request=target.rows,
            loop=loop_name,
            cpus=cpu_budget().describe(),
            seconds=seconds,
            warmup=warmup,
            steps=steps,
        )

    try:
        return loop.run_until_complete(run())
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
