"""The load loop: keep ``c`` requests in flight (closed loop) or send at a fixed rate (open
loop), on one asyncio event loop (uvloop when installed), with requests encoded beforehand.

- HTTP is an :class:`asyncio.Protocol` per keep-alive connection, driven by callbacks: an
  answer is framed (status line, ``Content-Length``, the body counted, never kept) and the
  next request written from the same callback, with no coroutine, stream or parser between.
- gRPC sends pre-serialized ``ModelInferRequest`` bytes over ``grpc.aio`` channels (16
  streams each) and never decodes an answer.
- In-process calls go straight to a :class:`~modelport.runtime.dataplane.DataPlane`.

A phase runs for its seconds, then stops sending and waits for every request in flight
(the drain), so that what it counts is exactly what the server answered in it. In the open
loop a request that has to wait for a free connection (or under ``max_inflight``) counts its
latency from when it was due, not from when it could be sent (no coordinated omission); one
sent at once counts from its sending, so the timer's millisecond steps add nothing.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from ..errors import ModelportError

__all__ = ["CoroutineDriver", "Driver", "HttpDriver", "Tally", "new_loop"]

_NS = 1_000_000_000


class Tally:
    """What one phase saw: latencies of answered requests (ns) and errors by code."""

    __slots__ = ("codes", "errors", "latencies", "seconds")

    def __init__(self) -> None:
        self.latencies: list[int] = []
        self.errors = 0
        self.codes: dict[str, int] = {}
        self.seconds = 0.0

    def error(self, code: str) -> None:
        self.errors += 1
        self.codes[code] = self.codes.get(code, 0) + 1


class Driver(ABC):
    """Sends one door's requests; ``closed`` and ``paced`` each run one phase."""

    protocol: str
    timeout: float = 30.0
    """Seconds a request may take before the drain gives up on it (counted as an error)."""

    @abstractmethod
    async def closed(self, concurrency: int, seconds: float, tally: Tally) -> None:
        """Keep ``concurrency`` requests in flight for ``seconds``, then drain."""

    @abstractmethod
    async def paced(self, rate: float, seconds: float, max_inflight: int, tally: Tally) -> None:
        """Start ``rate`` requests a second for ``seconds`` (at most ``max_inflight`` at
        once; the rest wait their turn), then drain."""

    async def close(self) -> None:  # noqa: B027  (nothing to release by default)
        """Release connections."""


def _schedule(rate: float, seconds: float) -> tuple[int, int, int]:
    start = time.perf_counter_ns()
    return start, start + int(seconds * _NS), max(1, int(_NS / rate))


# -- HTTP/1.1 over asyncio protocols --------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One keep-alive connection: at most one request in flight."""

    def __init__(self, driver: HttpDriver) -> None:
        self.driver = driver
        self.transport: asyncio.Transport | None = None
        self.head = b""  # a response head that came in pieces
        self.need = -1  # body bytes still to come; -1 while reading the head
        self.status = 0
        self.reusable = True
        self.began = 0
        self.busy = False
        self.dead = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, request: bytes, began: int) -> None:
        assert self.transport is not None
        self.began = began
        self.busy = True
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        if self.need >= 0:  # more of a body
            if len(data) < self.need:
                self.need -= len(data)
                return
            self.need = -1
            self._done()
            return
        if self.head:
            data = self.head + data
            self.head = b""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            self.head = data
            return
        head = data[:end]
        at = head.find(b"\ncontent-length:")
        if at < 0:
            head = head.lower()
            at = head.find(b"\ncontent-length:")
        try:
            self.status = int(head[9:12])
            if at < 0:
                raise ValueError("no Content-Length")
            stop = head.find(b"\r", at + 16)
            length = int(head[at + 16 : stop if stop >= 0 else len(head)])
        except ValueError:
            self.driver.broken(self, "bad response")
            return
        self.reusable = head.find(b"\nconnection: close") < 0 and (
            head.find(b"\nConnection: close") < 0
        )
        missing = length - (len(data) - end - 4)
        if missing > 0:
            self.need = missing
            return
        self._done()

    def _done(self) -> None:
        self.busy = False
        self.driver.answered(self, self.status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.dead = True
        self.driver.lost(self)


class HttpDriver(Driver):
    """V2 infer over keep-alive HTTP/1.1 connections to ``host:port``."""

    def __init__(
        self, host: str, port: int, requests: Sequence[bytes], *, protocol: str = "json"
    ) -> None:
        self.protocol = protocol
        self.host, self.port = host, port
        self.requests = list(requests)
        self.idle: list[_Connection] = []
        self.live: list[_Connection] = []
        self.opening = 0
        self.tally = Tally()
        self.running = False
        self.paced_mode = False
        self.backlog: deque[int] = deque()
        self.inflight = 0
        self.sent = 0
        self.drained: asyncio.Future[None] | None = None
        self.failure: BaseException | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        self.opening += 1
        try:
            _, conn = await loop.create_connection(lambda: _Connection(self), self.host, self.port)
        except OSError as exc:
            raise ModelportError(f"cannot reach {self.host}:{self.port}: {exc}") from None
        finally:
            self.opening -= 1
        self.live.append(conn)
        return conn

    async def _ensure(self, count: int) -> None:
        self.live = [c for c in self.live if not c.dead]
        missing = count - len(self.live)
        if missing > 0:
            await asyncio.gather(*(self._open() for _ in range(missing)))

    def _send(self, conn: _Connection, began: int) -> None:
        request = self.requests[self.sent % len(self.requests)]
        self.sent += 1
        self.inflight += 1
        conn.send(request, began)

    def answered(self, conn: _Connection, status: int) -> None:
        now = time.perf_counter_ns()
        self.inflight -= 1
        if status == 200:
            self.tally.latencies.append(now - conn.began)
        else:
            self.tally.error(str(status))
        if not conn.reusable:  # the server closes it: carry on on a new one
            conn.dead = True
            assert conn.transport is not None
            conn.transport.close()
            self._replace()
        elif self.paced_mode:
            if self.backlog:
                self._send(conn, self.backlog.popleft())
            else:
                self.idle.append(conn)
        elif self.running:
            self._send(conn, now)
        self._check_drained()

    def broken(self, conn: _Connection, why: str) -> None:
        """An answer that cannot be framed: count it and drop the connection."""
        if conn.busy:
            conn.busy = False
            self.inflight -= 1
            self.tally.error(why)
            self._replace()
        conn.dead = True
        if conn.transport is not None:
            conn.transport.abort()
        self._check_drained()

    def lost(self, conn: _Connection) -> None:
        if conn in self.idle:
            self.idle.remove(conn)
        if conn.busy:
            conn.busy = False
            self.inflight -= 1
            self.tally.error("connection closed")
            self._replace()
        self._check_drained()

    def _replace(self) -> None:
        if self.running or self.backlog:
            self._spawn()

    def _spawn(self) -> None:
        task = asyncio.get_running_loop().create_task(self._resume())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _resume(self) -> None:
        try:
            conn = await self._open()
        except ModelportError as exc:
            self.failure = exc
            self._check_drained(force=True)
            return
        if self.paced_mode:
            if self.backlog:
                self._send(conn, self.backlog.popleft())
            else:
                self.idle.append(conn)
        elif self.running:
            self._send(conn, time.perf_counter_ns())

    def _check_drained(self, force: bool = False) -> None:
        done = self.drained
        if done is None or done.done() or self.running:
            return
        if force or (self.inflight == 0 and not self.backlog):
            done.set_result(None)

    async def _drain(self, tally: Tally) -> None:
        self.running = False
        self.drained = asyncio.get_running_loop().create_future()
        self._check_drained()
        try:
            await asyncio.wait_for(asyncio.shield(self.drained), self.timeout)
        except asyncio.TimeoutError:
            for conn in self.live:
                if conn.busy:
                    conn.busy = False
                    tally.error("timeout")
                    conn.dead = True
                    assert conn.transport is not None
                    conn.transport.abort()
            self.inflight = 0
            self.backlog.clear()
        self.drained = None
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure

    async def closed(self, concurrency: int, seconds: float, tally: Tally) -> None:
        await self._ensure(concurrency)
        self.tally, self.running, self.paced_mode = tally, True, False
        began = time.perf_counter_ns()
        for conn in self.live[:concurrency]:
            self._send(conn, began)
        await asyncio.sleep(seconds)
        await self._drain(tally)
        tally.seconds = (time.perf_counter_ns() - began) / _NS

    async def paced(self, rate: float, seconds: float, max_inflight: int, tally: Tally) -> None:
        await self._ensure(1)
        self.tally, self.running, self.paced_mode = tally, True, True
        self.idle = [c for c in self.live if not c.dead and not c.busy]
        start, end, step = _schedule(rate, seconds)
        due = start
        while due < end:
            now = time.perf_counter_ns()
            while due <= now and due < end:
                if self.idle:
                    self._send(self.idle.pop(), now)
                else:
                    self.backlog.append(due)
                    if len(self.live) + self.opening < max_inflight:
                        self._spawn()
                due += step
            if self.failure is not None:
                break
            await asyncio.sleep(max(0.0, (due - time.perf_counter_ns()) / _NS))
        await self._drain(tally)
        self.paced_mode = False
        tally.seconds = (time.perf_counter_ns() - start) / _NS

    async def close(self) -> None:
        for conn in self.live:
            if conn.transport is not None:
                conn.transport.close()
        self.live, self.idle = [], []
        await asyncio.sleep(0)


# -- coroutine doors: gRPC and in-process ---------------------------------------------------

Call = Callable[[int], Awaitable["str | None"]]
"""Send request ``i``; None when answered, else the error's code."""


class CoroutineDriver(Driver):
    """A door whose requests are awaited: ``call(i)`` sends request ``i``."""

    def __init__(self, protocol: str, call: Call, closer: Callable[[], Awaitable[Any]]) -> None:
        self.protocol = protocol
        self.call = call
        self._closer = closer

    async def _one(self, i: int, began: int, tally: Tally) -> None:
        try:
            error = await asyncio.wait_for(self.call(i), self.timeout)
        except asyncio.TimeoutError:
            error = "timeout"
        if error is None:
            tally.latencies.append(time.perf_counter_ns() - began)
        else:
            tally.error(error)

    async def closed(self, concurrency: int, seconds: float, tally: Tally) -> None:
        began = time.perf_counter_ns()
        stop = began + int(seconds * _NS)

        async def worker(k: int) -> None:
            i = k
            while True:
                start = time.perf_counter_ns()
                if start >= stop:
                    return
                await self._one(i, start, tally)
                i += concurrency

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        tally.seconds = (time.perf_counter_ns() - began) / _NS

    async def paced(self, rate: float, seconds: float, max_inflight: int, tally: Tally) -> None:
        start, end, step = _schedule(rate, seconds)
        backlog: deque[int] = deque()
        tasks: set[asyncio.Task[None]] = set()
        sent = 0

        async def run(i: int, due: int) -> None:
            await self._one(i, due, tally)
            while backlog:
                nonlocal sent
                sent += 1
                await self._one(sent, backlog.popleft(), tally)

        due = start
        loop = asyncio.get_running_loop()
        while due < end:
            now = time.perf_counter_ns()
            while due <= now and due < end:
                if len(tasks) < max_inflight:
                    sent += 1
                    task = loop.create_task(run(sent, now))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                else:
                    backlog.append(due)
                due += step
            await asyncio.sleep(max(0.0, (due - time.perf_counter_ns()) / _NS))
        if tasks:
            await asyncio.gather(*list(tasks))
        tally.seconds = (time.perf_counter_ns() - start) / _NS

    async def close(self) -> None:
        await self._closer()


def new_loop() -> tuple[asyncio.AbstractEventLoop, str]:
    """A new event loop, uvloop's when installed, and its name."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop(), "asyncio"
    return uvloop.new_event_loop(), "uvloop"
