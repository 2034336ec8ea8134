"""uvicorn's httptools protocol, fixed for requests that offer a cleartext HTTP/2 upgrade.

Java's standard ``HttpClient`` (and Spring's, Ktor's) sends every ``http://`` request with
``Connection: Upgrade, HTTP2-Settings`` and ``Upgrade: h2c``. A server may ignore the offer
and answer in HTTP/1.1 (RFC 9110 §7.8), but with httptools the parser stops at the end of
the headers, so uvicorn hands the app an empty body (uvicorn#2722, still open). This
protocol takes the body that follows (``Content-Length`` framing, which is what those
clients send) into the request and resets the parser for the next request.
"""

from __future__ import annotations

from typing import Any

from .._deps import require

__all__ = ["http_protocol"]


def http_protocol() -> type[Any]:
    """The protocol class to give ``uvicorn.Config(http=...)``."""
    httptools = require("httptools", extra="serve")
    impl = require("uvicorn.protocols.http.httptools_impl", extra="serve")

    class HttpToolsProtocol(impl.HttpToolsProtocol):  # type: ignore[misc, name-defined]
        _pending = 0
        """Body bytes of an upgrade-offering request still to arrive."""

        def data_received(self, data: bytes) -> None:
            if self._pending:
                data = self._take_body(data)
                if not data:
                    return
            self._unset_keepalive_if_required()
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                message = "Invalid HTTP request received."
                self.logger.warning(message)
                self.send_400_response(message)
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
                    "Cannot serve a chunked body with an HTTP/2 upgrade offer; send plain HTTP/1.1."
                )
                return
            try:
                length = int(framing.get(b"content-length", b"0"))
            except ValueError:
                self.send_400_response("Invalid Content-Length.")
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
                cycle.message_event.set()
            return rest

    return HttpToolsProtocol
