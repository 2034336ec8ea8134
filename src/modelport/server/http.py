"""What a route handler sees: the request, the response, the route table's entries, and the
app as a handler may use it (a protocol, so handlers need not import the app that calls them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..protocol.codec import dumps

if TYPE_CHECKING:
    from ..runtime.dataplane import DataPlane
    from ..settings import Settings
    from .journal import AdminJournal
    from .metrics import PrometheusMetrics
    from .worker_metrics import WorkerMetrics

__all__ = [
    "AppContext",
    "Handler",
    "Message",
    "Receive",
    "Request",
    "Response",
    "Route",
    "Scope",
    "Send",
    "host_port",
    "json_response",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class AppContext(Protocol):
    """The app as handlers use it (:class:`modelport.server.app.App` is one)."""

    dataplane: DataPlane
    settings: Settings
    metrics: PrometheusMetrics
    admin_journal: AdminJournal | None
    worker_metrics: WorkerMetrics | None
    routes: tuple[Route, ...]

    async def read_body(self, request: Request) -> bytes:
        """The request's body, up to the size limit."""
        ...


@dataclass
class Request:
    """What a handler sees of an HTTP request."""

    app: AppContext
    scope: Scope
    headers: dict[bytes, bytes]
    params: dict[str, str]
    receive: Receive
    request_id: str | None = None
    model_version: str | None = None
    """The version that answered, for metrics and logs."""

    async def body(self) -> bytes:
        return await self.app.read_body(self)


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Route:
    """``method`` + a path pattern with ``{name}`` segments → handler."""

    method: str
    path: str
    handler: Handler
    summary: str
    model_route: bool = False
    """Counted in the request metrics (inference routes)."""
    segments: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple(self.path.strip("/").split("/")))

    def match(self, parts: list[str]) -> dict[str, str] | None:
        if len(parts) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for want, got in zip(self.segments, parts):
            if want[:1] == "{":  # ("" is the one segment of "/")
                if not got:
                    return None
                params[want[1:-1]] = got
            elif want != got:
                return None
        return params


def json_response(
    status: int, value: Any, extra: list[tuple[bytes, bytes]] | None = None
) -> Response:
    """``value`` as a JSON response."""
    body = dumps(value)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    return Response(status, headers, body)


def host_port(host: str, port: int) -> str:
    """``host:port`` as clients write it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
