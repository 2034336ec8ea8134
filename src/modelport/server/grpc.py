"""The gRPC front door: ``inference.GRPCInferenceService`` (KServe V2) and ``grpc.health.v1``.

It only translates: protobuf → :mod:`modelport.protocol.types` → the :class:`DataPlane` →
protobuf, and modelport errors → gRPC status codes by the table in ``server/errors.py``
(client mistakes are INVALID_ARGUMENT or NOT_FOUND, never INTERNAL). ``tritonclient.grpc``
works unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import os
import socket
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .._deps import require
from ..errors import (
    ConfigError,
    InvalidInputError,
    ModelNotReadyError,
    ModelportError,
    OverloadedError,
    PredictionError,
)
from ..protocol import grpc_codec as codec
from ..protocol.grpc_codec import pb
from ..runtime.dataplane import DataPlane, new_id
from ..settings import Settings
from .admission import Admission
from .errors import internal_error, status_for
from .http import host_port
from .metrics import PrometheusMetrics

require("grpc", extra="serve")
import grpc  # noqa: E402

# The standard health service is a separate package whose generated code a mismatched
# protobuf refuses (VersionError); a broken one must not take ModelInfer down with it.
try:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_health.v1.health import aio as health_aio
except Exception as exc:
    _HEALTH_ERROR: str | None = f"{type(exc).__name__}: {next(iter(str(exc).splitlines()), '')}"
    _HealthBase: Any = object
else:
    _HEALTH_ERROR = None
    _HealthBase = health_aio.HealthServicer

from ..protocol._grpc import grpc_predict_v2_pb2_grpc as pb_grpc  # noqa: E402

__all__ = [
    "InferenceServicer",
    "bound_port",
    "start_grpc_server",
    "stop_grpc_server",
]

log = logging.getLogger("modelport.server")
access_log = logging.getLogger("modelport.access")

SERVICE = "inference.GRPCInferenceService"

_Handler = Callable[["InferenceServicer", Any, Any], Awaitable[Any]]


def _translated(method: _Handler) -> _Handler:
    """Answer modelport errors with their status code; anything else is INTERNAL, logged."""

    @functools.wraps(method)
    async def handler(self: InferenceServicer, request: Any, context: Any) -> Any:
        try:
            return await method(self, request, context)
        except ModelportError as exc:
            if isinstance(exc, OverloadedError):
                context.set_trailing_metadata((("retry-after", f"{exc.retry_after:g}"),))
            await context.abort(grpc.StatusCode[status_for(exc).grpc], str(exc))
        except Exception:
            log.exception("gRPC %s failed", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error")
        raise AssertionError("context.abort() returned")  # pragma: no cover

    return handler


def _model_name(name: str, field: str = "name") -> str:
    if not name:
        raise InvalidInputError(f"the request's {field} is empty; name the model")
    return name


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """``inference.GRPCInferenceService`` over a :class:`DataPlane`."""

    def __init__(
        self,
        dataplane: DataPlane,
        settings: Settings | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.dataplane = dataplane
        self.settings = settings or Settings()
        self.admission = admission or Admission(self.settings.max_concurrency)
        """Requests in flight, shared with HTTP; past its cap a call is refused at once."""
        self.in_flight = 0
        self.draining = False
        """Set when the server stops: new inference calls get UNAVAILABLE (retry elsewhere)."""
        self.unfinished = 0
        """Inference calls taken and not yet finished (their answer sent), refusals aside."""

    @_translated
    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=self.dataplane.live())

    @_translated
    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.dataplane.ready())

    @_translated
    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return codec.encode_server_metadata(self.dataplane.server_metadata())

    @_translated
    async def ModelReady(self, request: Any, context: Any) -> Any:
        ready = self.dataplane.model_ready(_model_name(request.name), request.version or None)
        return pb.ModelReadyResponse(ready=ready)

    @_translated
    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        metadata = self.dataplane.model_metadata(_model_name(request.name), request.version or None)
        return codec.encode_model_metadata(metadata)

    @_translated
    async def ModelInfer(self, request: Any, context: Any) -> Any:
        started = time.perf_counter()
        name, version, request_id = request.model_name, request.model_version, request.id
        status = "OK"
        if self.draining:
            raise ModelNotReadyError("the server is shutting down; retry on another replica")
        if not self.admission.enter():
            raise OverloadedError(
                f"server overloaded: {self.admission.limit} requests in flight "
                "(max_concurrency); retry later",
                retry_after=1.0,
            )
        self.unfinished += 1
        context.add_done_callback(self._finished)
        self.in_flight += 1
        try:
            _model_name(name, "model_name")
            inference = codec.decode_infer_request(request)
            inference.id = request_id = inference.id or new_id()  # known if the model fails
            remaining = context.time_remaining()
            if remaining is not None and "timeout" not in inference.parameters:
                # The caller's gRPC deadline bounds the queue wait, in the protocol's unit (µs).
                inference.parameters["timeout"] = max(1, int(remaining * 1e6))
            response = await self.dataplane.infer(name, version or None, inference)
            version, request_id = response.model_version or version, response.id
            return codec.encode_infer_response(response, raw=codec.wants_raw_output(request))
        except Exception as exc:
            status = status_for(exc).grpc
            if status != "INTERNAL":
                raise
            told = internal_error(
                exc, model=name, request_id=request_id or None, expose=self.settings.expose_errors
            )
            raise PredictionError(told) from None
        finally:
            self.in_flight -= 1
            self.admission.leave()
            seconds = time.perf_counter() - started
            self.dataplane.metrics.observe_request(name, version, "grpc", status, seconds)
            if self.settings.access_log or status == "INTERNAL":
                access_log.info(
                    "request",
                    extra={
                        "request_id": request_id or None,
                        "method": "ModelInfer",
                        "status": status,
                        "model": name,
                        "version": version,
                        "ms": round(seconds * 1000, 3),
                    },
                )

    def _finished(self, context: Any) -> None:
        self.unfinished -= 1


class _Health(_HealthBase):  # type: ignore[misc]
    """``grpc.health.v1.Health`` whose answer follows the data plane's readiness."""

    def __init__(self, dataplane: DataPlane) -> None:
        super().__init__()
        self._dataplane = dataplane

    async def _refresh(self) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self._dataplane.ready()
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", SERVICE):
            await self.set(service, status)

    async def Check(self, request: Any, context: Any) -> Any:
        await self._refresh()
        return await super().Check(request, context)

    async def Watch(self, request: Any, context: Any) -> Any:
        await self._refresh()
        return await super().Watch(request, context)


# Open without a token, like the REST health routes: probes carry no credentials.
_OPEN_METHODS = frozenset(
    {
        f"/{SERVICE}/ServerLive",
        f"/{SERVICE}/ServerReady",
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
    }
)


class _BearerAuth(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuse calls without ``authorization: Bearer <token>`` (compared in constant time)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

        async def deny(request: Any, context: Any) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        if details.method in _OPEN_METHODS or self._authorized(details.invocation_metadata):
            return await continuation(details)
        return self._deny

    def _authorized(self, metadata: Any) -> bool:
        given = next((v for k, v in metadata or () if k == "authorization"), None)
        if isinstance(given, str):
            given = given.encode()
        return given is not None and hmac.compare_digest(given, self._expected)


@dataclass(frozen=True)
class _Served:
    health: _Health | None
    port: int
    servicer: InferenceServicer


_SERVED: weakref.WeakKeyDictionary[Any, _Served] = weakref.WeakKeyDictionary()


async def start_grpc_server(
    dataplane: DataPlane,
    host: str,
    port: int,
    settings: Settings | None = None,
    admission: Admission | None = None,
) -> Any:
    """Start serving ``dataplane`` over gRPC on ``host:port``; returns the ``grpc.aio.Server``.

    ``port`` 0 picks a free port: read it back with :func:`bound_port`. From ``settings``:
    ``max_body_size`` bounds each message received or sent, ``auth_token`` requires
    ``authorization: Bearer <token>`` on all but the health calls, and ``workers > 1`` lets
    that many processes share the port; ``admission`` (shared with HTTP) caps the inference
    calls in flight. Stop the server with :func:`stop_grpc_server`.
    """
    settings = settings or Settings()
    server = grpc.aio.server(
        interceptors=[_BearerAuth(settings.auth_token)] if settings.auth_token else [],
        options=[
            ("grpc.max_receive_message_length", settings.max_body_size),
            ("grpc.max_send_message_length", settings.max_body_size),
            # One process: a port already in use must fail here rather than be shared.
            ("grpc.so_reuseport", int(settings.workers > 1)),
        ],
    )
    servicer = InferenceServicer(dataplane, settings, admission)
    if isinstance(dataplane.metrics, PrometheusMetrics):
        dataplane.metrics.track_in_flight("grpc", lambda: servicer.in_flight)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    health = None
    if _HEALTH_ERROR is None:
        health = _Health(dataplane)
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
    else:
        log.warning(
            "gRPC health service (grpc.health.v1) off, serving without it: grpc_health does "
            'not import (%s); pip install "modelport[serve]" installs one that runs on this '
            "protobuf",
            _HEALTH_ERROR,
        )
    address = host_port(host, port)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen for gRPC on {address}: {exc}") from None
    await server.start()
    _SERVED[server] = _Served(health, bound, servicer)
    log.debug("gRPC listening", extra={"address": host_port(host, bound)})
    return server


def bound_port(server: Any) -> int:
    """The port a server from :func:`start_grpc_server` listens on."""
    return _SERVED[server].port


async def stop_grpc_server(server: Any, grace: float | None = 30.0) -> None:
    """Graceful stop: health turns NOT_SERVING and new inference calls get UNAVAILABLE at once;
    the calls in flight get ``grace`` seconds (None: all they need) to be answered; then the
    connections are cut and the server stops.

    grpc's own stop cancels the calls that are still arriving when it begins (their callers
    see CANCELLED, which clients do not retry); on a connection cut under them they fail with
    UNAVAILABLE, the code to retry on another replica.
    """
    served = _SERVED.pop(server, None)
    loop = asyncio.get_running_loop()
    deadline = None if grace is None else loop.time() + grace
    if served is not None:
        served.servicer.draining = True
        if served.health is not None:
            await served.health.enter_graceful_shutdown()
        servicer = served.servicer
        while servicer.unfinished and (deadline is None or loop.time() < deadline):
            await asyncio.sleep(0.005)
        if not servicer.unfinished:
            _cut_connections(served.port)
    await server.stop(None if deadline is None else max(0.0, deadline - loop.time()))


def _cut_connections(port: int) -> int:
    """Close grpc's listener on ``port`` and shut down the connections accepted on it, under
    grpc's feet (it has no call for that); how many connections.

    Linux only (it lists ``/proc/self/fd``); elsewhere nothing is cut.
    """
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return 0
    listeners: list[tuple[int, socket.socket]] = []
    connections: list[socket.socket] = []
    for name in fds:
        try:
            fd = int(name)
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(fd))
        except (OSError, ValueError):
            continue  # closed meanwhile
        try:
            if (
                sock.family in (socket.AF_INET, socket.AF_INET6)
                and sock.type == socket.SOCK_STREAM
                and sock.getsockname()[1] == port
            ):
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    listeners.append((fd, sock))
                else:
                    connections.append(sock)
                continue
        except OSError:
            pass
        sock.close()
    for fd, sock in listeners:  # first, so that no client reconnects meanwhile
        # grpc's descriptor now names an unbound socket, and the listening one is closed: new
        # connections are refused, and grpc's poller never hears of it (shutting the
        # listener down instead makes grpc log an accept error).
        with socket.socket(sock.family, socket.SOCK_STREAM) as unbound:
            os.dup2(unbound.fileno(), fd)
        sock.close()
    for sock in connections:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
    return len(connections)
