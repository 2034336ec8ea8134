"""The HTTP front door: a thin ASGI app with one route table.

No web framework: a framework's request/response objects and middleware stack cost more than
everything else on the path of a small inference (see ``docs/server.md``). Routing is one
table (:data:`modelport.server.rest.ROUTES`), matched by segment count, then literals.
Bodies are read up to ``max_body_size``; a larger ``Content-Length`` is refused before any of
the body is read.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from ..errors import InvalidInputError
from ..protocol.codec import encode_error
from ..runtime.dataplane import DataPlane
from ..settings import Settings
from .errors import PayloadTooLargeError, internal_error, status_for
from .http import Receive, Request, Response, Route, Scope, Send
from .metrics import PrometheusMetrics
from .rest import ROUTES

if TYPE_CHECKING:
    from .journal import AdminJournal
    from .worker_metrics import WorkerMetrics

__all__ = ["App", "create_app"]

log = logging.getLogger("modelport.server")
access_log = logging.getLogger("modelport.access")

_OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
_JSON = b"application/json"


class _Disconnected(Exception):
    """The client went away before sending its whole body."""


class App:
    """ASGI application serving a :class:`DataPlane` over HTTP (V2 REST and more)."""

    def __init__(
        self,
        dataplane: DataPlane,
        settings: Settings | None = None,
        metrics: PrometheusMetrics | None = None,
        *,
        load_on_startup: bool = True,
    ) -> None:
        self.dataplane = dataplane
        self.settings = settings or Settings()
        if metrics is None:
            shared = dataplane.metrics
            metrics = shared if isinstance(shared, PrometheusMetrics) else PrometheusMetrics()
        self.metrics = metrics
        dataplane.metrics = metrics
        self.metrics.track_models(dataplane.registry)
        self.in_flight = 0
        self.metrics.track_in_flight("rest", lambda: self.in_flight)
        self.load_on_startup = load_on_startup
        self.admin_journal: AdminJournal | None = None
        """With several worker processes: where admin changes go so that each applies them."""
        self.worker_metrics: WorkerMetrics | None = None
        """With several worker processes: how ``/metrics`` gathers the others' figures."""
        self.shutdown_hooks: list[Callable[[], Awaitable[None]]] = []
        """Awaited at lifespan shutdown, before the data plane drains (e.g. stop gRPC)."""
        self._max_body = self.settings.max_body_size
        self._token = (
            f"Bearer {self.settings.auth_token}".encode() if self.settings.auth_token else None
        )
        from . import admin, console

        self.routes: tuple[Route, ...] = ROUTES + admin.install(self) + console.install(self)
        """The routes served: :data:`ROUTES`, the admin API when it is on, the console's."""
        self._public = console.PUBLIC_HANDLERS
        """Handlers open without the token: the console page and static files (no data)."""
        self._routes: dict[tuple[str, int], list[Route]] = {}
        for route in self.routes:
            self._routes.setdefault((route.method, len(route.segments)), []).append(route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    # -- lifespan -------------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        import asyncio

        loading: asyncio.Task[None] | None = None
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.load_on_startup:
                    # Listen at once; readiness turns true when the models are loaded.
                    loading = asyncio.get_running_loop().create_task(self.dataplane.load())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if loading is not None and not loading.done():
                    await loading
                for hook in self.shutdown_hooks:
                    await hook()
                await self.dataplane.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- HTTP -----------------------------------------------------------------------------------

    def _match(self, method: str, path: str) -> tuple[Route | None, dict[str, str]]:
        parts = path.strip("/").split("/")
        for route in self._routes.get((method, len(parts)), ()):
            params = route.match(parts)
            if params is not None:
                return route, params
        return None, {}

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        method: str = scope["method"]
        path: str = scope["path"]
        route, params = self._match(method, path)
        headers = _headers(scope)
        request = Request(self, scope, headers, params, receive)
        self.in_flight += 1
        try:
            if route is None:
                response = self._no_route(method, path)
            elif (
                self._token is not None
                and path not in _OPEN_PATHS
                and route.handler not in self._public
                and not _authorized(headers.get(b"authorization"), self._token)
            ):
                response = _error(401, "missing or wrong bearer token", www_auth=True)
            else:
                response = await route.handler(request)
        except _Disconnected:
            return
        except Exception as exc:
            response = self._error_response(exc, request)
        finally:
            self.in_flight -= 1
        if route is not None and route.model_route:
            self._observe(request, response.status, time.perf_counter() - started)
        await send(
            {"type": "http.response.start", "status": response.status, "headers": response.headers}
        )
        await send({"type": "http.response.body", "body": response.body})

    def _no_route(self, method: str, path: str) -> Response:
        parts = path.strip("/").split("/")
        allowed = sorted({r.method for r in self.routes if r.match(parts) is not None})
        if allowed:
            response = _error(405, f"method {method} not allowed on {path}; use {allowed}")
            response.headers.append((b"allow", ", ".join(allowed).encode()))
            return response
        return _error(404, f"no route for {method} {path}; see /openapi.json")

    def _error_response(self, exc: Exception, request: Request) -> Response:
        status = status_for(exc).http
        path = request.scope["path"]
        if status == 500:  # 503/504 are load, not faults: counted in metrics, not logged
            message = internal_error(
                exc,
                model=request.params.get("name"),
                request_id=request.request_id,
                # The admin API answers its (authenticated) operator in full.
                expose=self.settings.expose_errors or path.startswith("/admin"),
                path=path,
            )
        else:
            message = str(exc)
        response = _error(status, message)
        if status == 503:
            retry = getattr(exc, "retry_after", 1.0)
            response.headers.append((b"retry-after", str(max(1, round(retry))).encode()))
        if isinstance(exc, PayloadTooLargeError):
            response.headers.append((b"connection", b"close"))
        return response

    def _observe(self, request: Request, status: int, seconds: float) -> None:
        model = request.params.get("name", "")
        version = request.model_version or request.params.get("version", "")
        self.metrics.observe_request(model, version, "rest", str(status), seconds)
        if self.settings.access_log:  # failures are logged where they are handled
            access_log.info(
                "request",
                extra={
                    "request_id": request.request_id,
                    "method": request.scope["method"],
                    "path": request.scope["path"],
                    "status": status,
                    "model": model,
                    "version": version,
                    "ms": round(seconds * 1000, 3),
                },
            )

    async def read_body(self, request: Request) -> bytes:
        """The whole body, refused with 413 past ``max_body_size`` (read no further)."""
        length = request.headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise InvalidInputError(f"invalid Content-Length {length!r}") from None
            if declared > self._max_body:
                raise PayloadTooLargeError(
                    f"request body of {declared} bytes exceeds the limit of "
                    f"{self._max_body} bytes (max_body_size)"
                )
        chunks: list[bytes] = []
        size = 0
        receive = request.receive
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self._max_body:
                    raise PayloadTooLargeError(
                        f"request body exceeds the limit of {self._max_body} bytes (max_body_size)"
                    )
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        encoding = request.headers.get(b"content-encoding")
        if encoding is not None and encoding.lower() != b"identity":
            body = _decompress(body, encoding.lower(), self._max_body)
        return body


def _decompress(body: bytes, encoding: bytes, limit: int) -> bytes:
    """A gzip or deflate body (tritonclient's request compression), at most ``limit`` bytes."""
    import zlib

    wbits = {b"gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}.get(encoding)
    if wbits is None:
        raise InvalidInputError(
            f"unsupported Content-Encoding {encoding.decode('latin-1')!r}; "
            "use gzip, deflate or none"
        )
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInputError(f"body is not valid {encoding.decode()} data: {exc}") from None
    if len(out) > limit:
        raise PayloadTooLargeError(
            f"decompressed request body exceeds the limit of {limit} bytes (max_body_size)"
        )
    return out


def _headers(scope: Scope) -> dict[bytes, bytes]:
    # ASGI servers send lower-case names.
    return dict(scope["headers"])


def _authorized(given: bytes | None, expected: bytes) -> bool:
    return given is not None and hmac.compare_digest(given, expected)


def _error(status: int, message: str, *, www_auth: bool = False) -> Response:
    body = encode_error(message)
    headers = [(b"content-type", _JSON), (b"content-length", str(len(body)).encode())]
    if www_auth:
        headers.append((b"www-authenticate", b"Bearer"))
    return Response(status, headers, body)


def create_app(
    dataplane: DataPlane,
    settings: Settings | None = None,
    *,
    load_on_startup: bool = True,
) -> App:
    """The ASGI app for ``dataplane``; models load in the background on lifespan startup."""
    return App(dataplane, settings, load_on_startup=load_on_startup)
