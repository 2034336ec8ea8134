"""The data plane: the one transport-free API behind every front door (REST, gRPC, Lambda).

Front doors translate their wire format to :mod:`modelport.protocol.types` messages and call
these methods; errors are :mod:`modelport.errors` exceptions only, mapped to status codes at
the edge (``server/errors.py``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

from .._version import __version__
from ..errors import InvalidInputError, UnknownRequestError
from ..model import Model
from ..protocol.types import InferenceRequest, InferenceResponse
from .registry import ModelRegistry
from .runner import ModelRunner
from .versions import VersionManager

if TYPE_CHECKING:
    from ..store import PredictionLog

__all__ = ["DataPlane", "Metrics", "NullMetrics", "new_id"]

log = logging.getLogger("modelport.runtime")


def _new_id_source() -> None:
    global _ID_NODE, _ID_COUNTER
    _ID_NODE = f"{int.from_bytes(os.urandom(4), 'big'):08x}"
    _ID_COUNTER = itertools.count(int.from_bytes(os.urandom(6), "big") >> 1)


_ID_NODE: str
_ID_COUNTER: itertools.count[int]
_new_id_source()
if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_new_id_source)


def new_id() -> str:
    """A new prediction id: 32 hex digits, the time in milliseconds, 32 random bits drawn once
    per process, then a 48-bit counter that starts at a random value.

    The ids one process makes increase (as UUIDv7's "dedicated counter" method, RFC 9562
    §6.2), so the prediction log's request-id index only ever appends: ids with random bits
    after the time land anywhere among the current millisecond's, and SQLite's b-tree then
    splits pages instead of appending (about 1 µs more per insert where many ids share a
    millisecond). A forked child draws its own random bits. Ids must be unique, not secret,
    and cost no system call.
    """
    count = next(_ID_COUNTER) & 0xFFFF_FFFF_FFFF
    return f"{time.time_ns() // 1_000_000:012x}{_ID_NODE}{count:012x}"


class Metrics(Protocol):
    """What the runtime reports; the server's Prometheus metrics implement it."""

    def observe_batch(
        self, model: str, version: str, rows: int, queue_waits: Sequence[float]
    ) -> None: ...

    def observe_request(
        self, model: str, version: str, protocol: str, status: str, seconds: float
    ) -> None: ...


class NullMetrics:
    """Metrics that record nothing."""

    def observe_batch(
        self, model: str, version: str, rows: int, queue_waits: Sequence[float]
    ) -> None:
        return None

    def observe_request(
        self, model: str, version: str, protocol: str, status: str, seconds: float
    ) -> None:
        return None


class DataPlane:
    """Health, metadata and inference for the models of a :class:`ModelRegistry`.

    ``default_timeout`` (seconds) applies to requests that carry no ``timeout`` parameter.
    """

    def __init__(
        self,
        models: Iterable[Model] = (),
        *,
        name: str = "modelport",
        extensions: Sequence[str] = ("binary_tensor_data", "parameters"),
        metrics: Metrics | None = None,
        default_timeout: float | None = None,
        aux_threads: int = 4,
    ) -> None:
        self.name = name
        self.extensions = list(extensions)
        self.metrics: Metrics = metrics or NullMetrics()
        self.default_timeout = default_timeout
        self.registry = ModelRegistry()
        self.draining = False
        self._aux = ThreadPoolExecutor(aux_threads, thread_name_prefix="modelport-aux")
        self.prediction_log: PredictionLog | None = None
        self.versions = VersionManager(self.registry, self.make_runner, lambda: self.prediction_log)
        """Live versions, hot swaps, canary and shadow (:mod:`.versions`)."""
        for model in models:
            self.add(model)

    def add(self, model: Model) -> ModelRunner:
        """Register ``model`` (not yet loaded: see :meth:`load`)."""
        runner = self.make_runner(model)
        self.registry.add(runner)
        return runner

    def make_runner(self, model: Model) -> ModelRunner:
        """A runner for ``model`` wired to this data plane (metrics, log), not registered."""
        runner = ModelRunner(model, on_batch=self._on_batch, aux_executor=self._aux)
        runner.prediction_log = self.prediction_log
        return runner

    def log_to(self, log: PredictionLog) -> None:
        """Record every prediction of every model, present and added later, in ``log``."""
        self.prediction_log = log
        for runner in self.registry.runners():
            runner.prediction_log = log

    def _on_batch(self, runner: ModelRunner, rows: int, waits: Sequence[float]) -> None:
        self.metrics.observe_batch(runner.name, runner.version, rows, waits)

    # -- lifecycle ----------------------------------------------------------------------------

    def load_sync(self) -> None:
        """Load and warm up every model that is not loaded yet, in this thread."""
        for runner in self.registry.runners():
            if runner.ready:
                continue
            try:
                runner.load()
            except Exception as exc:
                log.error(
                    "model failed to load",
                    extra={"model": runner.name, "version": runner.version, "error": str(exc)},
                )

    async def load(self) -> None:
        """:meth:`load_sync` off the event loop; readiness turns true when all are ready."""
        await asyncio.get_running_loop().run_in_executor(self._aux, self.load_sync)
        await self.versions.start()

    async def close(self) -> None:
        """Stop accepting (readiness false), finish queued requests, stop the workers."""
        self.draining = True
        await self.versions.close()
        await asyncio.gather(*(r.close() for r in self.registry.runners()))
        self._aux.shutdown(wait=False)

    # -- health and metadata ------------------------------------------------------------------

    def live(self) -> bool:
        """The process is up and answering."""
        return True

    def ready(self) -> bool:
        """Every model is loaded and the server is not shutting down."""
        runners = self.registry.runners()
        return bool(runners) and not self.draining and all(r.ready for r in runners)

    def server_metadata(self) -> dict[str, Any]:
        """V2 server metadata: name, version and the protocol extensions supported."""
        return {"name": self.name, "version": __version__, "extensions": list(self.extensions)}

    def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        """V2 model metadata; ``platform`` is the detected format."""
        runner = self.registry.get(name, version)
        meta = runner.model.metadata()
        meta["name"] = runner.name
        meta["versions"] = self.registry.versions(name) if version is None else [runner.version]
        meta["version_status"] = self.versions.describe(name)
        return meta

    def model_ready(self, name: str, version: str | None = None) -> bool:
        """Whether that model (version) can answer now; unknown models raise."""
        return self.registry.get(name, version).ready and not self.draining

    # -- inference ----------------------------------------------------------------------------

    def runner(self, name: str, version: str | None = None) -> ModelRunner:
        """The runner serving ``name``/``version``.

        While draining, requests still run: the transport stops taking new connections and
        readiness is false, but what already arrived gets answered. Without a version, the
        live one answers (or a canary, for its share of requests).
        """
        if version is None:
            return self.versions.route(name)
        return self.registry.get(name, version)

    async def infer(
        self, name: str, version: str | None, request: InferenceRequest
    ) -> InferenceResponse:
        """V2 inference; the response ``id`` is the request's, or a new prediction id."""
        runner = self.runner(name, version)
        request_id = request.id or new_id()
        signature = runner.model.served_signature
        wanted = [o.name for o in request.outputs] if request.outputs else None
        if wanted and signature is not None and signature.outputs:
            unknown = [n for n in wanted if signature.output(n) is None]
            if unknown:
                raise InvalidInputError(
                    f"unknown output(s) {unknown}; model {runner.name!r} has "
                    f"{signature.output_names}"
                )
        outputs = await runner.infer(
            request.inputs,
            request_id=request_id,
            timeout=self._timeout(request.parameters),
            metadata=_metadata(request.parameters.get("metadata"), 'parameter "metadata"'),
        )
        if wanted:
            missing = [n for n in wanted if n not in outputs]
            if missing:
                raise InvalidInputError(
                    f"unknown output(s) {missing}; model {runner.name!r} returned {list(outputs)}"
                )
            outputs = {n: outputs[n] for n in wanted}
        datatypes = {}
        if signature is not None:
            datatypes = {s.name: s.datatype for s in signature.outputs if s.datatype == "BF16"}
        return InferenceResponse(
            model_name=runner.name,
            model_version=runner.version,
            outputs=outputs,
            id=request_id,
            datatypes=datatypes,
        )

    async def predict(
        self,
        name: str,
        version: str | None,
        payload: Any,
        *,
        request_id: str | None = None,
        timeout: float | None = None,
        metadata: Any = None,
    ) -> Any:
        """Plain JSON: ``preprocess(payload)`` → batched predict → ``postprocess``.

        ``metadata``: the caller's fields for the prediction log (a dict or JSON text).
        """
        runner = self.runner(name, version)
        return await runner.predict(
            payload,
            request_id=request_id or new_id(),
            timeout=timeout if timeout is not None else self.default_timeout,
            metadata=_metadata(metadata, "metadata"),
        )

    async def feedback(self, name: str, request_id: Any, value: Any) -> None:
        """Store the ground truth for a logged prediction of model ``name``."""
        model = self.registry.get(name).model
        await self._feedback_log().afeedback(request_id, model.truth(value), model=name)

    async def feedback_many(
        self, name: str, items: Sequence[tuple[int, Any, Any]]
    ) -> tuple[int, list[dict[str, Any]]]:
        """Store many ``(index, request_id, value)`` for model ``name``; return how many were
        stored and one ``{"index", "request_id", "error"}`` per refused item."""
        from ..store.records import refusal

        model = self.registry.get(name).model
        log = self._feedback_log()
        errors: list[dict[str, Any]] = []
        good: list[tuple[int, Any, Any]] = []
        for i, request_id, value in items:
            try:
                good.append((i, request_id, model.truth(value)))
            except InvalidInputError as exc:
                errors.append(refusal(i, request_id, exc))
        stored, refused = await log.afeedback_many(good, model=name)
        return stored, errors + refused

    def _feedback_log(self) -> PredictionLog:
        if self.prediction_log is None:
            raise UnknownRequestError(
                "prediction logging is off on this server (start it with --log-db or "
                "--log-predictions), so it knows no request ids"
            )
        return self.prediction_log

    def _timeout(self, parameters: dict[str, Any]) -> float | None:
        value = parameters.get("timeout")
        if value is None:
            return self.default_timeout
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise InvalidInputError(
                f'parameter "timeout" must be a positive number of microseconds, got {value!r}'
            )
        return float(value) / 1e6


def _metadata(value: Any, what: str) -> dict[str, Any] | None:
    """Caller metadata, validated (bounded, JSON, no reserved key); None when not given."""
    if value is None:
        return None
    from ..store.records import validate_metadata

    return validate_metadata(value, what)
