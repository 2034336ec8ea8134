"""uvicorn's httptools protocol, fixed for requests that offer a cleartext HTTP/2 upgrade.

Java's standard ``HttpClient`` (and Spring's, Ktor's) sends every ``http://`` request with
``Connection: Upgrade, HTTP2-Settings`` and ``Upgrade: h2c``. A server may ignore the offer
and answer in HTTP/1.1 (RFC 9110 §7.8), but with httptools the parser stops at the end of
the headers, so uvicorn hands the app an empty body (uvicorn#2722, still open). This
protocol takes the body that follows (``Content-Length`` framing, which is what those
clients send) into the request and resets the parser for the next request.

It also answers what uvicorn answers in plain text as JSON, like every other client mistake
(``{"error": ...}`` naming what was wrong: a bad ``Content-Length``, both ``Content-Length``
and ``Transfer-Encoding``, a bad chunk size, a URL over 16 KiB), and times out slow clients:
a request's headers must arrive within ``header_timeout`` seconds of its first byte (of the
connection, for a new one) and its body within ``body_timeout`` of its headers, or the
connection gets a 408 and is closed (a slow-loris client cannot hold it).

When the server stops, :meth:`drain` keeps a connection open for what its client still sends:
each request is answered, with ``Connection: close`` (uvicorn's own shutdown closes an idle
kept-alive connection at once, so a request already on its way there is lost).

Under overload it refuses cheaply (see :mod:`.admission`): past ``max_concurrency`` requests in
flight, a request (any method but GET and HEAD, which health probes and scrapes use) gets a
pre-encoded JSON 503 as soon as its headers are in, and its body is skipped unread; on a
kept-alive connection the 503s go out at most :data:`REFUSALS_PER_S` a second, oldest first;
past ``max_connections`` open connections, a new one gets a 503 and is closed. A request whose
client has gone is dropped (its task cancelled, so it leaves the batch queue unrun), and one
with a ``Request-Timeout: SECONDS`` header is answered 504 and dropped once that has passed.

Each answer's head and body leave in one write (:class:`_Corked`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from typing import Any

from .._deps import require
from ..protocol.codec import dumps
from .admission import Admission

__all__ = ["BODY_TIMEOUT", "HEADER_TIMEOUT", "MAX_URL_BYTES", "http_protocol"]

HEADER_TIMEOUT = 10.0
"""Seconds a request's headers may take to arrive (nginx and Go servers use 10-60 s)."""
BODY_TIMEOUT = 60.0
"""Seconds a request's body may take after its headers."""
MAX_URL_BYTES = 16 * 1024
"""Longest request target accepted; longer is a 414."""

_STATUS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    414: b"URI Too Long",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}
_UNCOUNTED = (b"GET", b"HEAD")
"""Methods that never count against ``max_concurrency``: probes, scrapes, metadata."""
REFUSALS_PER_S = 5000.0
"""Overload refusals (503s on kept-alive connections) sent per second at most; the rest wait
their turn, oldest first. A client refused on a kept-alive connection sends its next request
as soon as it has the answer, so the refusals' rate is whatever the server answers them at:
answered at once, a few hundred such clients turn every spare cycle into refusals and the
admitted requests starve (goodput fell to a third of capacity with each refusal held 30 ms).
Paced, refusals cost at most about a tenth of a CPU (one costs some 20 us: a read, a write
and the loop's work), whatever the number of clients; the price is their latency, refused
connections / this rate (few refused clients are answered at once)."""
REFUSAL_BURST = 256.0
"""Refusals that may go out at once after a quiet spell."""
_LINGER = 1.0
"""Seconds a refused connection is read (and discarded) before it is closed: closing a socket
with unread data resets it, and the reset can destroy the 503 before the client reads it."""


def http_protocol(
    header_timeout: float = HEADER_TIMEOUT,
    body_timeout: float = BODY_TIMEOUT,
    admission: Admission | None = None,
    max_connections: int | None = None,
) -> type[Any]:
    """The protocol class to give ``uvicorn.Config(http=...)``; ``admission`` caps the requests
    in flight (shared with gRPC), ``max_connections`` the open connections."""
    httptools = require("httptools", extra="serve")
    impl = require("uvicorn.protocols.http.httptools_impl", extra="serve")
    refusals: dict[tuple[bytes, bool], tuple[object, bytes]] = {}

    def refusal(message: bytes, defaults: list[tuple[bytes, bytes]], close: bool) -> bytes:
        """The bytes of a 503, built again only when the default headers (the date) change."""
        built, data = refusals.get((message, close), (None, b""))
        if built is not defaults:
            head = [b"HTTP/1.1 503 Service Unavailable\r\n"]
            head += [name + b": " + value + b"\r\n" for name, value in defaults]
            head += [
                b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(message),
                b"retry-after: 1\r\n",
                b"connection: close\r\n\r\n" if close else b"\r\n",
            ]
            data = b"".join(head) + message
            refusals[message, close] = (defaults, data)
        return data

    held: deque[tuple[Any, bytes]] = deque()
    flushing: list[asyncio.TimerHandle | None] = [None]
    bucket = [REFUSAL_BURST, 0.0]  # tokens, when last refilled

    def hold(loop: asyncio.AbstractEventLoop, transport: Any, data: bytes) -> None:
        """Send ``data`` on ``transport`` in its turn (see :data:`REFUSALS_PER_S`)."""
        held.append((transport, data))
        if flushing[0] is None:
            flush(loop)

    def flush(loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        tokens = min(REFUSAL_BURST, bucket[0] + (now - bucket[1]) * REFUSALS_PER_S)
        bucket[1] = now
        try:
            while held and tokens >= 1.0:
                transport, data = held.popleft()
                if not transport.is_closing():
                    tokens -= 1.0
                    with contextlib.suppress(RuntimeError, OSError):  # closed meanwhile
                        transport.write(data)
        finally:
            bucket[0] = tokens
            # Several refusals a turn (at least 2 ms apart): a timer per refusal costs more.
            wait = max(0.002, (1.0 - tokens) / REFUSALS_PER_S)
            flushing[0] = loop.call_at(now + wait, flush, loop) if held else None

    too_many = dumps(
        {"error": f"server overloaded: {max_connections} connections open (max_connections)"}
    )

    class HttpToolsProtocol(impl.HttpToolsProtocol):  # type: ignore[misc, name-defined]
        _pending = 0
        """Body bytes of an upgrade-offering request still to arrive."""
        _deadline: asyncio.TimerHandle | None = None
        """When the headers (or the body) being read are due."""
        _url_bytes = 0
        draining = False
        """The server stops (set on the class, it holds for connections accepted later too)."""
        _refused = False
        """Answered with a last answer (over ``max_connections``, a client error, a deadline):
        what comes is read and discarded until the connection closes."""
        _skipping = False
        """A refused request's body is being read and discarded."""
        _skip_close = False
        """And the connection closes once it is in."""
        timeout_keep_alive_task: asyncio.TimerHandle | None
        _active_at = 0.0
        """When this connection last had a request refused without the parser."""
        _message_open = False
        """The parser is inside a request (its head or body)."""
        _active: Any = None
        """The request whose ASGI task runs (or ran last) on this connection."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if max_connections is not None and len(self.connections) > max_connections:
                self._refused = True
                defaults = self.server_state.default_headers
                transport.write(refusal(too_many, defaults, close=True))
                self._linger()
                return
            self._arm(header_timeout, "headers")

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            active = self._active
            if active is not None:
                if not active.response_started and not active.task.done():
                    active.task.cancel()  # the client has gone: leave the batch queue unrun
                self._finish(active)
            for cycle, _ in self.pipeline:  # never started
                self._finish(cycle)
            super().connection_lost(exc)

        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            cycle.task = task = self.loop.create_task(cycle.run_asgi(app))
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)
            self._active = cycle

        def _finish(self, cycle: Any) -> None:
            """A request is answered or dropped: give its place back, stop its timeout."""
            if getattr(cycle, "admitted", False):
                cycle.admitted = False
                admission.leave()  # type: ignore[union-attr]
            expiry = getattr(cycle, "expiry", None)
            if expiry is not None:
                expiry.cancel()
                cycle.expiry = None

        def on_response_complete(self) -> None:
            self._finish(self._active)  # its place is free once the answer is out
            super().on_response_complete()

        def _arm(self, seconds: float, what: str) -> None:
            self._disarm()
            if seconds > 0:
                self._deadline = self.loop.call_later(seconds, self._too_slow, what, seconds)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self, what: str, seconds: float) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if self._skipping:  # the body of a refused request: it was answered already
                self.transport.close()
                return
            cycle = self.cycle
            busy = cycle is not None and not cycle.response_complete
            if what == "body":
                if not busy or not cycle.more_body:
                    return  # the body is in: the time since is the server's, not the client's
                cycle.disconnected = True  # the app's receive() gets http.disconnect
                cycle.message_event.set()
            elif busy:
                return  # a pipelined request's headers: the answer in flight goes first
            self.logger.info("closing a slow client: request %s not in after %g s", what, seconds)
            self._send_error(408, f"request {what} not received within {seconds:g} s")

        def on_message_begin(self) -> None:
            self._message_open = True
            super().on_message_begin()
            self._url_bytes = 0
            if self._deadline is None:  # a kept-alive connection's next request
                self._arm(header_timeout, "headers")

        def on_url(self, url: bytes) -> None:
            self._url_bytes += len(url)
            if self._url_bytes > MAX_URL_BYTES:
                raise _UrlTooLong(f"request target longer than {MAX_URL_BYTES} bytes")
            super().on_url(url)

        def on_headers_complete(self) -> None:
            self._arm(body_timeout, "body")
            previous = self.cycle
            idle = previous is None or previous.response_complete
            admitted = False
            if admission is not None and self.parser.get_method() not in _UNCOUNTED:
                # A pipelined request is never refused: its answer would have to wait its turn.
                admitted = admission.enter(force=not idle)
                if not admitted:
                    self._refuse()
                    return
            timeout = _request_timeout(self.headers)
            if isinstance(timeout, str):
                if admitted:
                    admission.leave()  # type: ignore[union-attr]
                self._send_error(400, timeout)
                return
            super().on_headers_complete()
            cycle = self.cycle
            cycle.logger = _QUIET  # a task cancelled on purpose is no error
            if cycle.scope["method"] != "HEAD":  # a HEAD answer has no body to join its head to
                cycle.transport = _Corked(self.transport)
            cycle.admitted = admitted
            cycle.expiry = (
                None if timeout is None else self.loop.call_later(timeout, self._expire, cycle)
            )
            if self.draining:
                cycle.keep_alive = False  # the last request of this connection, so far
                if previous is not None and not previous.response_started:
                    previous.keep_alive = True  # a pipelined request follows it

        def _refuse(self) -> None:
            """Answer 503 (held, on a connection that stays open); the body, if any, is read
            and discarded."""
            close = self.draining or not self.parser.should_keep_alive()
            message = refusal(admission.refusal, self.server_state.default_headers, close)  # type: ignore[union-attr]
            if close:
                self.transport.write(message)
            else:
                hold(self.loop, self.transport, message)
            self._skipping = True
            self._skip_close = close

        def _expire(self, cycle: Any) -> None:
            """A request's ``Request-Timeout`` has passed: drop it, and answer 504 unless an
            answer before it on this connection is still due."""
            task = getattr(cycle, "task", None)
            cycle.expiry = None
            if cycle.response_started or (task is not None and task.done()):
                return
            cycle.disconnected = True  # nothing more is written for it
            if task is not None:
                task.cancel()
            self._finish(cycle)
            if cycle is self._active:
                self._send_error(504, "no answer within the request's Request-Timeout")

        def drain(self) -> None:
            """The server stops: answer what still comes, each with ``Connection: close``."""
            self.draining = True
            if self.cycle is not None and not self.cycle.response_started:
                self.cycle.keep_alive = False  # the newest request (pipelined ones before it)

        def on_body(self, body: bytes) -> None:
            if not self._skipping:
                super().on_body(body)

        def on_message_complete(self) -> None:
            self._disarm()
            self._message_open = False
            if self._skipping:
                self._skipping = False
                if self._skip_close:
                    self.transport.close()
                return
            super().on_message_complete()

        def send_400_response(self, msg: str) -> None:
            self._send_error(400, msg)

        def _send_error(self, status: int, message: str) -> None:
            body = dumps({"error": message})
            head = [b"HTTP/1.1 %d %s\r\n" % (status, _STATUS[status])]
            defaults = self.server_state.default_headers
            head += [name + b": " + value + b"\r\n" for name, value in defaults]
            head += [
                b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body),
                b"connection: close\r\n\r\n",
            ]
            self._disarm()
            self.transport.write(b"".join(head) + body)
            self._linger()

        def _linger(self) -> None:
            """Close after an answer that ends the connection, the way nginx's lingering close
            does: say so (FIN), then read and discard what the client still sends until it
            closes or :data:`_LINGER` passes. Closed at once, a socket with unread data, or
            data that arrives after, is reset, and the reset can destroy the answer before the
            client has read it (a slow client still trickling its headers, one still sending
            the body of a refused request)."""
            self._refused = True  # data_received discards everything from now on
            transport = self.transport
            if transport.can_write_eof():
                transport.write_eof()
            self.loop.call_later(_LINGER, transport.close)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if admission is not None and admission.full and self._refused_quickly(data):
                return
            if self._pending:
                data = self._take_body(data)
                if not data:
                    return
            self._unset_keepalive_if_required()
            try:
                self.parser.feed_data(data)
            except _UrlTooLong as exc:
                self._send_error(414, str(exc))
            except httptools.HttpParserCallbackError as exc:
                cause = exc.__context__
                if isinstance(cause, _UrlTooLong):
                    self._send_error(414, str(cause))
                else:
                    self._malformed(exc)
            except httptools.HttpParserError as exc:
                self._malformed(exc)
            except httptools.HttpParserUpgrade as exc:
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._ignore_upgrade(data[exc.args[0] :] if exc.args else b"")

        def _refused_quickly(self, data: bytes) -> bool:
            """Refuse a plain POST that came whole in one read without parsing it (the parser's
            callbacks cost more than the rest of a refusal); False leaves it to the parser."""
            if (
                data[:5] != b"POST "
                or self._pending
                or self._skipping
                or self._message_open
                or self.draining  # its answer must say Connection: close
            ):
                return False
            cycle = self.cycle
            if cycle is not None and not cycle.response_complete:
                return False
            end = data.find(b"\r\n\r\n")
            line = data.find(b"\r\n")
            if end < 0 or data[line - 9 : line] != b" HTTP/1.1":
                return False
            head = data[line:end].lower()
            if (
                b"\r\ntransfer-encoding:" in head
                or b"\r\nconnection:" in head
                or b"\r\nexpect:" in head
                or b"\r\nupgrade:" in head
            ):
                return False  # framing, closing or 100-continue: the parser's to read
            start = head.find(b"\r\ncontent-length:")
            length = 0
            if start >= 0:
                stop = head.find(b"\r\n", start + 17)
                digits = (head[start + 17 : stop] if stop > 0 else head[start + 17 :]).strip()
                if not digits.isdigit():
                    return False
                length = int(digits)
            if len(data) != end + 4 + length:
                return False  # more to come, or a pipelined request behind it
            admission.refused += 1  # type: ignore[union-attr]
            if self._deadline is not None:
                self._disarm()
            loop = self.loop
            self._active_at = loop.time()
            if self.timeout_keep_alive_task is None:
                self.timeout_keep_alive_task = loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler
                )
            message = refusal(admission.refusal, self.server_state.default_headers, False)  # type: ignore[union-attr]
            hold(loop, self.transport, message)
            return True

        def timeout_keep_alive_handler(self) -> None:
            # Refusals answered without the parser leave uvicorn's keep-alive timer running.
            left = self._active_at + self.timeout_keep_alive - self.loop.time()
            if left > 0:
                self.timeout_keep_alive_task = self.loop.call_later(
                    left, self.timeout_keep_alive_handler
                )
                return
            super().timeout_keep_alive_handler()

        def _ignore_upgrade(self, rest: bytes) -> None:
            cycle = self.cycle
            framing = dict(self.headers)
            if self._skipping:
                self.transport.close()  # a refused request: its 503 is out
                return
            if cycle is None or b"transfer-encoding" in framing:
                self.send_400_response(
                    "cannot serve a chunked body with an HTTP/2 upgrade offer; send plain HTTP/1.1"
                )
                return
            try:
                length = int(framing.get(b"content-length", b"0"))
            except ValueError:
                self.send_400_response("invalid Content-Length")
                return
            self.parser = httptools.HttpRequestParser(self)
            self._pending = max(0, length - len(cycle.body))
            if self._pending:
                cycle.more_body = True
                rest = self._take_body(rest)
            if rest:
                self.data_received(rest)

        def _take_body(self, data: bytes) -> bytes:
            cycle = self.cycle
            chunk, rest = data[: self._pending], data[self._pending :]
            self._pending -= len(chunk)
            if not cycle.response_complete:
                cycle.body += chunk
                if len(cycle.body) > impl.HIGH_WATER_LIMIT:
                    self.flow.pause_reading()
                if not self._pending:
                    cycle.more_body = False
                    self._disarm()
                cycle.message_event.set()
            return rest

        def _malformed(self, exc: Exception) -> None:
            detail = str(exc) or type(exc).__name__
            self.logger.info("malformed HTTP request: %s", detail)
            self._send_error(400, f"malformed HTTP request: {detail}")

    return HttpToolsProtocol


class _Corked:
    """The transport one answer is written on: uvicorn writes an answer's head and its body
    in two writes, each a ``send()`` (and a packet) of its own; this holds the head until
    the body's first write and sends both in one. Under load that second system call was a
    sixth of the server's time. A ``100 Continue`` goes out at once (the client waits for it),
    and a held head goes out if the answer closes the connection without a body."""

    __slots__ = ("_head", "_transport")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._head: bytes | None = None
        """None: nothing written yet; bytes: the head, held; b"": written, writes pass."""

    def write(self, data: bytes) -> None:
        head = self._head
        if head:
            self._head = b""
            if len(data) < 65536:
                self._transport.write(head + data)
            else:  # no copy of a large body
                self._transport.writelines((head, data))
        elif head is None and data[9:10] != b"1":  # "HTTP/1.1 1xx": interim, sent at once
            self._head = data
        else:
            self._transport.write(data)

    def close(self) -> None:
        if self._head:
            self._transport.write(self._head)
            self._head = b""
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _UrlTooLong(Exception):
    """Raised from the parser's URL callback; answered with a 414."""


def _request_timeout(headers: list[tuple[bytes, bytes]]) -> float | str | None:
    """The ``Request-Timeout`` header's seconds, None without one, or what is wrong with it."""
    for name, value in headers:
        if name == b"request-timeout":
            try:
                seconds = float(value)
            except ValueError:
                seconds = math.nan
            if not 0 < seconds < math.inf:
                text = value.decode("latin-1")
                return f"invalid Request-Timeout header {text!r}: expected seconds above 0"
            return seconds
    return None


class _QuietCancels(logging.LoggerAdapter):  # type: ignore[type-arg]
    """uvicorn's logger for a request, less the error it logs when the request's task is
    cancelled: that is a request dropped on purpose (its client gone, its timeout passed)."""

    def error(self, msg: object, *args: Any, **kwargs: Any) -> None:
        if not isinstance(kwargs.get("exc_info"), asyncio.CancelledError):
            super().error(msg, *args, **kwargs)


_QUIET = _QuietCancels(logging.getLogger("uvicorn.error"))
