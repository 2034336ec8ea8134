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
"""

from __future__ import annotations

import asyncio
from typing import Any

from .._deps import require
from ..protocol.codec import dumps

__all__ = ["BODY_TIMEOUT", "HEADER_TIMEOUT", "MAX_URL_BYTES", "http_protocol"]

HEADER_TIMEOUT = 10.0
"""Seconds a request's headers may take to arrive (nginx and Go servers use 10-60 s)."""
BODY_TIMEOUT = 60.0
"""Seconds a request's body may take after its headers."""
MAX_URL_BYTES = 16 * 1024
"""Longest request target accepted; longer is a 414."""

_STATUS = {400: b"Bad Request", 408: b"Request Timeout", 414: b"URI Too Long"}


def http_protocol(
    header_timeout: float = HEADER_TIMEOUT, body_timeout: float = BODY_TIMEOUT
) -> type[Any]:
    """The protocol class to give ``uvicorn.Config(http=...)``."""
    httptools = require("httptools", extra="serve")
    impl = require("uvicorn.protocols.http.httptools_impl", extra="serve")

    class HttpToolsProtocol(impl.HttpToolsProtocol):  # type: ignore[misc, name-defined]
        _pending = 0
        """Body bytes of an upgrade-offering request still to arrive."""
        _deadline: asyncio.TimerHandle | None = None
        """When the headers (or the body) being read are due."""
        _url_bytes = 0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm(header_timeout, "headers")

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

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
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._disarm()
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
            self.transport.close()

        def data_received(self, data: bytes) -> None:
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

        def _ignore_upgrade(self, rest: bytes) -> None:
            cycle = self.cycle
            framing = dict(self.headers)
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


class _UrlTooLong(Exception):
    """Raised from the parser's URL callback; answered with a 414."""
