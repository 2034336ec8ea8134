"""The composition root: settings → models → data plane → HTTP (and gRPC) servers → drain.

``serve(settings)`` runs until SIGTERM/SIGINT, then drains (docs/server.md):

- at once: readiness turns false (liveness stays true), the HTTP listener closes, and new gRPC
  inference calls get ``UNAVAILABLE``;
- for ``drain_period`` seconds, requests arriving on open HTTP connections are still answered,
  each with ``Connection: close`` (a client that pooled the connection before the endpoint was
  removed loses nothing); the period ends sooner once no connection is left open;
- requests in flight on either transport are answered, queued batches finish, the prediction
  log is flushed, and it returns (exit status 0), all by ``shutdown_timeout`` after the signal.

With ``workers > 1`` a supervisor process binds the port and starts that many server processes
sharing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Generator
from functools import partial
from types import FrameType
from typing import Any

from .._deps import require
from ..cpus import cpu_budget
from ..runtime.dataplane import DataPlane
from ..runtime.repository import discover
from ..settings import Settings
from .admission import Admission
from .app import create_app
from .gctune import tune_gc
from .http import host_port
from .metrics import PrometheusMetrics
from .protocol import http_protocol

__all__ = ["build_dataplane", "serve", "serve_async"]

log = logging.getLogger("modelport.server")

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def build_dataplane(settings: Settings) -> DataPlane:
    """The data plane for ``settings.model_path`` (models resolved, not yet loaded)."""
    if settings.model_path is None:
        from ..errors import ConfigError

        raise ConfigError("no model path given: modelport serve PATH")
    options = settings.runtime_options()
    models = discover(settings.model_path, trust=settings.trust or None, options=options)
    return DataPlane(models, metrics=PrometheusMetrics(), default_timeout=settings.request_timeout)


def _server_class() -> type[Any]:
    uvicorn = require("uvicorn", extra="serve")

    class _Server(uvicorn.Server):  # type: ignore[misc, name-defined]
        """uvicorn's server, with a hook at the signal, a drain period for open connections
        and no re-raised signal at exit."""

        on_exit: Callable[[], None] | None = None
        drain_period = 0.0
        signalled: float | None = None
        """When the signal came (``time.monotonic()``): the drain's deadlines count from it."""

        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            if threading.current_thread() is not threading.main_thread():
                yield  # only the main thread may install signal handlers
                return
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in _SIGNALS}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if not self.should_exit:
                self.signalled = time.monotonic()
                if self.on_exit is not None:
                    self.on_exit()
            super().handle_exit(sig, frame)

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            """uvicorn's start-up, with :class:`_Acceptor` on ``sockets`` in place of the
            loop's own server."""
            if not sockets:
                await super().startup(sockets)
                return
            await self.lifespan.startup()
            if self.lifespan.should_exit:
                sys.exit(uvicorn.config.STARTUP_FAILURE)
            config = self.config

            def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> Any:
                return config.http_protocol_class(
                    config=config,
                    server_state=self.server_state,
                    app_state=self.lifespan.state,
                    _loop=_loop,
                )

            loop = asyncio.get_running_loop()
            self.servers = [_Acceptor(loop, s, create_protocol, config.backlog) for s in sockets]
            self.started = True

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            """Close the listener; answer what open connections still send for the drain
            period (each with ``Connection: close``); close the idle ones; wait for the
            requests in flight until the deadline; then the app's shutdown."""
            began = self.signalled or time.monotonic()
            deadline = began + self.config.timeout_graceful_shutdown
            drain_end = min(began + self.drain_period, deadline)
            protocol = self.config.http_protocol_class
            if hasattr(protocol, "drain"):
                protocol.draining = True  # for connections still being set up, too
            for server in self.servers:
                server.close()
            for sock in sockets or []:
                sock.close()
            state = self.server_state
            for connection in list(state.connections):
                getattr(connection, "drain", connection.shutdown)()
            await self._until(lambda: not state.connections, drain_end)
            if state.connections:
                log.info(
                    "drain period over: closing idle connections, finishing requests in flight",
                    extra={"connections": len(state.connections)},
                )
            for connection in list(state.connections):
                connection.shutdown()  # idle: closed now; busy: closed after its answer
            await self._until(lambda: not state.connections and not state.tasks, deadline)
            if state.tasks:
                log.error(
                    "shutdown_timeout reached: cancelling %d request(s) in flight",
                    len(state.tasks),
                )
                for task in list(state.tasks):
                    task.cancel()
            for connection in list(state.connections):
                connection.transport.abort()
            for server in self.servers:
                await server.wait_closed()
            if not self.force_exit:
                await self.lifespan.shutdown()

        async def _until(self, done: Callable[[], bool], deadline: float) -> None:
            while not done() and not self.force_exit and time.monotonic() < deadline:
                await asyncio.sleep(0.005)

    return _Server


class _Acceptor:
    """Accepts every connection waiting on a listening socket at each turn of the loop.

    uvloop (libuv) accepts one connection a turn; under load a turn takes tens of milliseconds,
    and thousands of connections wait in the kernel's queue for seconds, their requests
    unread (answered, or refused, only long after they were sent).
    """

    BATCH = 1024
    """Most connections taken in one turn."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
        backlog: int,
    ) -> None:
        self._loop, self._sock, self._factory = loop, sock, factory
        sock.setblocking(False)
        sock.listen(backlog)
        loop.add_reader(sock.fileno(), self._accept)
        self._open = True

    def _accept(self) -> None:
        for _ in range(self.BATCH):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors, say: pause, as asyncio's own server
                log.warning("cannot accept connections for a second: %s", exc)
                self._loop.remove_reader(self._sock.fileno())
                self._loop.call_later(1.0, self._resume)
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = self._loop.create_task(self._loop.connect_accepted_socket(self._factory, conn))
            task.add_done_callback(_connected)

    def _resume(self) -> None:
        if self._open:
            self._loop.add_reader(self._sock.fileno(), self._accept)

    def close(self) -> None:
        """Take the connections already waiting, then stop accepting (the socket is its
        owner's to close: the kernel resets a connection still in its queue then, whose client
        may have sent its request)."""
        if self._open:
            self._open = False
            self._accept()
            self._loop.remove_reader(self._sock.fileno())

    async def wait_closed(self) -> None:
        return None


def _connected(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("a connection failed as it was accepted: %s", task.exception())


async def serve_async(
    settings: Settings,
    *,
    dataplane: DataPlane | None = None,
    sockets: list[socket.socket] | None = None,
    preload: bool = False,
    stop_on_readable: int | None = None,
    workers_folder: str | None = None,
    announce: bool = True,
    own_process: bool = False,
) -> None:
    """Serve HTTP (and gRPC when ``grpc_port``) in this event loop until told to stop.

    By default the port opens at once and readiness turns true once the models are loaded;
    ``preload`` loads them first (for worker processes sharing a socket, so none of them
    takes a connection it cannot serve yet). ``stop_on_readable`` is a file descriptor that
    becomes readable when the server should drain and stop (a parent process's sentinel).
    ``workers_folder`` is the folder the worker processes of one server share: the journal
    through which each applies every admin change alike (:mod:`.journal`), and each worker's
    metrics socket, so that ``/metrics`` answers for all of them (:mod:`.worker_metrics`).
    ``announce`` logs the listeners and the models served (one of the workers does it).
    ``own_process``: serving is this process's whole job (``modelport serve``, a worker): the
    garbage collector is tuned for it (:mod:`.gctune`).
    """
    uvicorn = require("uvicorn", extra="serve")
    dataplane = dataplane or build_dataplane(settings)
    # The app first: it configures the version manager (the repository watcher), which the
    # load then starts.
    app = create_app(dataplane, settings, load_on_startup=not preload)
    if preload:
        await dataplane.load()
    if not settings.loopback_only and not settings.auth_token:
        log.warning(
            "serving beyond loopback without authentication; set --auth-token",
            extra={"host": settings.host},
        )
    admission = Admission(settings.max_concurrency)  # shared by HTTP and gRPC
    if isinstance(dataplane.metrics, PrometheusMetrics):
        dataplane.metrics.track_refusals(lambda: admission.refused)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.http_port,
        loop="none",
        http=http_protocol(
            settings.header_timeout, settings.body_timeout, admission, settings.max_connections
        ),
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        # X-Forwarded-* rewriting costs every request; the app logs its own request ids.
        proxy_headers=False,
        timeout_graceful_shutdown=settings.shutdown_timeout,
    )
    server = _server_class()(config)
    server.drain_period = settings.drain_period
    # The log first: a bad --log-db fails before any listener is up to be torn down.
    prediction_log = None
    if settings.log_db is not None:
        from ..store.hook import attach

        prediction_log = attach(
            dataplane, settings.log_db, sample_rate=settings.log_sample_rate,
            writer=settings.log_writer, metrics_registry=app.metrics.registry,
        )  # fmt: skip
    try:
        if sockets is None:
            sockets = [bind(settings.host, settings.http_port)]
        grpc_server = await _start_grpc(dataplane, settings, admission)
    except BaseException:
        if prediction_log is not None:
            await prediction_log.aclose()
        raise
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[Any]] = []

    def drain() -> None:
        log.info(
            "shutting down: readiness off, answering open connections for the drain period",
            extra={"drain_period": settings.drain_period, "deadline": settings.shutdown_timeout},
        )
        if grpc_server is not None:
            from .grpc import stop_grpc_server

            grace = settings.shutdown_timeout
            stopping.append(loop.create_task(stop_grpc_server(grpc_server, grace)))

    def on_exit() -> None:
        # Runs in the signal handler: only flip a flag and schedule the rest on the loop.
        dataplane.draining = True
        loop.call_soon_threadsafe(drain)

    server.on_exit = on_exit
    app.shutdown_hooks.append(lambda: _wait(stopping))
    if stop_on_readable is not None:

        def parent_gone() -> None:
            loop.remove_reader(stop_on_readable)
            server.handle_exit(signal.SIGTERM, None)

        loop.add_reader(stop_on_readable, parent_gone)
    if workers_folder is not None:
        from .worker_metrics import WorkerMetrics

        gather = WorkerMetrics(workers_folder, app.metrics.render)
        try:
            await gather.start()
        except OSError as exc:  # e.g. no /proc and a socket path longer than the OS takes
            log.warning(
                "metrics: this worker cannot share its figures with the others; /metrics "
                "answers for the worker that takes the scrape",
                extra={"error": str(exc), "path": str(gather.path)},
            )
        else:
            app.worker_metrics = gather
        if settings.admin:
            from .admin import apply_change
            from .journal import AdminJournal

            journal = os.path.join(workers_folder, "journal.jsonl")
            app.admin_journal = AdminJournal(journal, partial(apply_change, app))
            app.admin_journal.start()
    if announce:
        _announce(settings, sockets[0], grpc_server, dataplane)
    if own_process:
        tune_gc()
    try:
        await server.serve(sockets=sockets)
    finally:
        if app.admin_journal is not None:
            await app.admin_journal.stop()
        if app.worker_metrics is not None:
            await app.worker_metrics.stop()
        if prediction_log is not None:
            await prediction_log.aclose()  # after the drain: every answered request is logged


def _announce(
    settings: Settings, http: socket.socket, grpc_server: Any, dataplane: DataPlane
) -> None:
    """A line per listener and one naming the models and their versions."""
    workers = f" ({settings.workers} worker processes)" if settings.workers > 1 else ""
    url = f"http://{host_port(settings.host, http.getsockname()[1])}"
    log.info(f"HTTP listening on {url}{workers}", extra={"url": url})
    if grpc_server is not None:
        from .grpc import bound_port

        address = host_port(settings.host, bound_port(grpc_server))
        log.info(f"gRPC listening on {address}{workers}", extra={"address": address})
    models: dict[str, list[str]] = {}
    for runner in dataplane.registry.runners():
        models.setdefault(runner.name, []).append(runner.version)
    listed = ", ".join(f"{name} v{'/'.join(versions)}" for name, versions in models.items())
    log.info(f"serving {listed}", extra={"models": models})
    threads = settings.runtime_options()["intra_op_threads"]
    where = "--threads" if settings.threads is not None else f"{cpu_budget().describe()}{workers}"
    log.info(f"{threads} thread(s) per model call by default ({where})", extra={"threads": threads})


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket on ``host:port``, or a clear error."""
    from ..errors import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen for HTTP on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


async def _wait(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        await task


async def _start_grpc(dataplane: DataPlane, settings: Settings, admission: Admission) -> Any:
    if not settings.grpc_port:
        return None
    try:
        from . import grpc as grpc_front  # type: ignore[attr-defined]
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.grpc":
            raise
        log.warning("gRPC front door not installed; serving HTTP only")
        return None
    return await grpc_front.start_grpc_server(
        dataplane, settings.host, settings.grpc_port, settings, admission
    )


def serve(settings: Settings) -> None:
    """Run the server(s) until SIGTERM/SIGINT; returns after a graceful drain."""
    if settings.workers > 1:
        _supervise(settings)
        return
    _run(serve_async(settings, own_process=True))


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed (uvicorn[standard]), else on asyncio's."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    if hasattr(uvloop, "run"):
        uvloop.run(main)
    else:  # uvloop < 0.18
        uvloop.install()
        asyncio.run(main)


def _worker(
    settings: Settings, sock: socket.socket, folder: str | None = None, announce: bool = True
) -> None:
    import multiprocessing

    from ..logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    parent = multiprocessing.parent_process()
    # If the supervisor dies without relaying a signal, drain and stop instead of lingering.
    sentinel = parent.sentinel if parent is not None else None
    _run(
        serve_async(
            settings, sockets=[sock], preload=True, stop_on_readable=sentinel,
            workers_folder=folder, announce=announce, own_process=True,
        )
    )  # fmt: skip


def _supervise(settings: Settings) -> None:
    """Bind once, start ``workers`` processes on the shared socket, relay SIGTERM, wait."""
    import multiprocessing

    require("uvicorn", extra="serve")  # fail here, not in each worker
    sock = bind(settings.host, settings.http_port)
    # Admin calls and scrapes reach one worker: the workers share a folder (this user's only)
    # for the journal of admin changes and for each one's metrics socket.
    folder = tempfile.mkdtemp(prefix="modelport-workers-")
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=_worker, args=(settings, sock, folder, i == 0), name=f"modelport-worker-{i}"
        )
        for i in range(settings.workers)
    ]
    for process in processes:
        process.start()

    stopping = False

    def relay(sig: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, relay) for sig in _SIGNALS}
    try:
        for process in processes:
            process.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
        shutil.rmtree(folder, ignore_errors=True)
    # A worker still loading when the relayed SIGTERM came had served nothing: it dies of the
    # signal (its handlers are installed once it serves), and that is a clean stop too.
    clean = {0, -signal.SIGTERM} if stopping else {0}
    failed = [p.name for p in processes if p.exitcode not in clean]
    if failed:
        from ..errors import ModelportError

        raise ModelportError(f"server process(es) {failed} exited with an error; see the log")
