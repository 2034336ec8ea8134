"""An HTTP/1.1 load generator that keeps latencies apart by status: ``python -m
bench.http_load HOST:PORT PATH BODY_FILE --connections N --seconds S``.

wrk reports one latency distribution for every answer; under overload the 200s and the 503s
must be told apart. Each of ``--connections`` keep-alive connections sends the same POST (the
body file, ``Content-Type: application/json``) as soon as the previous answer is in, like wrk;
an answer with ``Connection: close`` (or a connection the server closes) is followed by a new
connection. All connections are open before the first request is sent, and the run's clock
starts then. One process, one event loop (uvloop when installed), no HTTP library: the head is
parsed for the status, ``Content-Length`` and ``Connection`` only. Prints ``BENCH_RESULT
{json}``: answers and latency percentiles per status, answers per second of the run (by
status), errors (a connection closed under a request, a refused connection), requests still
unanswered at the end, and this process's CPU seconds (to tell whether it kept up).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run"]


class _Stats:
    def __init__(self, began: float) -> None:
        self.began = began
        self.latencies: dict[int, array[float]] = {}
        self.timeline: dict[int, Counter[int]] = {}
        self.errors: Counter[str] = Counter()

    def answer(self, status: int, sent: float, now: float) -> None:
        self.latencies.setdefault(status, array("d")).append(now - sent)
        self.timeline.setdefault(status, Counter())[int(now - self.began)] += 1


class _Connection(asyncio.Protocol):
    def __init__(self, client: _Client) -> None:
        self.client = client
        self.transport: Any = None
        self.buffer = bytearray()
        self.sent = 0.0
        self.waiting = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if self.client.started:
            self.send()

    def send(self) -> None:
        if self.client.stopping:
            self.transport.close()
            return
        self.waiting = True
        self.sent = time.perf_counter()
        self.transport.write(self.client.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.waiting:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            length = 0
            start = head.find(b"\r\ncontent-length:")
            if start >= 0:
                stop = head.find(b"\r\n", start + 2)
                length = int(head[start + 17 : stop if stop > 0 else None])
            if len(self.buffer) < end + 4 + length:
                return
            del self.buffer[: end + 4 + length]
            self.waiting = False
            self.client.stats.answer(int(head[9:12]), self.sent, time.perf_counter())
            if b"\r\nconnection: close" in head:
                self.transport.close()  # connection_lost opens the next one
                return
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiting:
            self.waiting = False
            self.client.stats.errors["closed under a request"] += 1
        self.client.reconnect()


class _Client:
    def __init__(self, host: str, port: int, request: bytes, stats: _Stats) -> None:
        self.host, self.port, self.request, self.stats = host, port, request, stats
        self.stopping = False
        self.started = False
        """False while the first connections open: none sends before all are open."""
        self.connections: list[_Connection] = []

    def reconnect(self) -> None:
        if not self.stopping:
            asyncio.get_running_loop().create_task(self.connect())

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stopping:
            try:
                _, protocol = await loop.create_connection(
                    lambda: _Connection(self), self.host, self.port
                )
            except OSError:
                self.stats.errors["connect failed"] += 1
                await asyncio.sleep(0.01)
                continue
            self.connections.append(protocol)
            return


def _percentiles(values: array[float]) -> dict[str, float]:
    if not values:
        return {}
    ms = np.frombuffer(values, dtype=np.float64) * 1000
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": float(ms.max())}


async def run(
    host: str, port: int, path: str, body: bytes, connections: int, seconds: float
) -> dict[str, Any]:
    """Load ``http://host:port/path`` for ``seconds``; the figures :func:`main` prints."""
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    stats = _Stats(0.0)
    client = _Client(host, port, request, stats)
    await asyncio.gather(*(client.connect() for _ in range(connections)))
    cpu = os.times()
    began = stats.began = time.perf_counter()
    client.started = True
    for connection in list(client.connections):
        connection.send()
    await asyncio.sleep(max(0.0, seconds - (time.perf_counter() - began)))
    client.stopping = True
    elapsed = time.perf_counter() - began
    unanswered = sum(c.waiting for c in client.connections)
    for connection in client.connections:
        if connection.transport is not None:
            connection.transport.abort()
    used = os.times()
    seconds_total = int(elapsed) + 1
    return {
        "seconds": elapsed,
        "connections": connections,
        "answers": {str(s): len(v) for s, v in sorted(stats.latencies.items())},
        "latency": {str(s): _percentiles(v) for s, v in sorted(stats.latencies.items())},
        "per_second": {
            str(s): [t.get(k, 0) for k in range(seconds_total)]
            for s, t in sorted(stats.timeline.items())
        },
        "errors": dict(stats.errors),
        "unanswered": unanswered,
        "client_cpu_s": (used.user - cpu.user) + (used.system - cpu.system),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.http_load")
    parser.add_argument("target", help="HOST:PORT")
    parser.add_argument("path")
    parser.add_argument("body", type=Path)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    try:
        import uvloop
    except ImportError:
        loop_run = asyncio.run
    else:
        loop_run = uvloop.run
    result = loop_run(
        run(host, int(port), args.path, args.body.read_bytes(), args.connections, args.seconds)
    )
    print("BENCH_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
