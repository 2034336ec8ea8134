"""One loaded model version behind its batcher: load, warm up, validate, infer, observe."""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidInputError, ModelNotReadyError, ModelportError, PredictionError
from ..model import Model, batch_rows, maybe_single
from .batcher import Batcher, Outputs

if TYPE_CHECKING:
    from ..store.log import PredictionLog

__all__ = ["ModelRunner", "ModelState", "Prediction", "PredictionObserver"]

log = logging.getLogger("modelport.runtime")


class ModelState(str, enum.Enum):
    """Where a model version is in its life."""

    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    UNLOADING = "unloading"


@dataclass(slots=True)  # not frozen: a frozen dataclass costs ~0.7 µs more per request
class Prediction:
    """A completed prediction, as observers (the version manager, a prediction log for failed
    requests) see it; read-only to them."""

    id: str
    model: str
    version: str
    inputs: Mapping[str, np.ndarray]
    outputs: Mapping[str, np.ndarray]
    started: float
    """Wall-clock time (``time.time()``) the request reached the runner."""
    duration: float
    """Seconds from reaching the runner to the answer, queue wait included."""
    status: str = "ok"
    """``"ok"``, or the class name of the error the request failed with."""
    error: str | None = None
    metadata: Mapping[str, Any] | None = None
    """What the caller attached to the request (user, client, tags), already validated."""


PredictionObserver = Callable[[Prediction], None]
"""Called on the event loop after each prediction (failed ones too); must not block."""


class ModelRunner:
    """Serve one :class:`Model` version: its state, its batcher and its observers."""

    def __init__(
        self,
        model: Model,
        *,
        on_batch: Callable[[ModelRunner, int, Sequence[float]], None] | None = None,
        aux_executor: Executor | None = None,
    ) -> None:
        self.model = model
        self.name = model.name
        self.version = model.version
        self.state = ModelState.LOADING
        self.error: str | None = None
        self.observers: list[PredictionObserver] = []
        self.prediction_log: PredictionLog | None = None
        """Where every request is recorded: answered ones a model call at a time (one
        hand-over per batch, not per request), failed ones one by one."""
        self.pending = 0
        """Requests in ``preprocess``, not yet in the batcher (a drain waits for them)."""
        self._aux = aux_executor
        batching = model.batching
        self.batcher = Batcher(
            model.predict_batch,
            name=self.name,
            max_batch_size=batching.max_batch_size,
            max_queue_delay_ms=batching.max_queue_delay_ms,
            max_queue_size=batching.max_queue_size,
            on_batch=(lambda rows, waits: on_batch(self, rows, waits)) if on_batch else None,
            on_done=self._batch_done,
        )
        cls = type(model)
        self._custom_pre = cls.preprocess is not Model.preprocess
        self._custom_post = cls.postprocess is not Model.postprocess

    @property
    def ready(self) -> bool:
        return self.state is ModelState.READY

    # -- lifecycle (blocking: call from a thread) -------------------------------------------

    def load(self) -> None:
        """Load the weights and warm up; the state becomes READY or FAILED (and raises)."""
        started = time.perf_counter()
        try:
            self.model.ensure_loaded()
        except Exception as exc:
            self.state = ModelState.FAILED
            self.error = f"{type(exc).__name__}: {exc}"
            raise
        self.choose_instances()
        self.choose_batching()
        self._warm_up()
        self.state = ModelState.READY
        log.info(
            "model ready",
            extra={
                "model": self.name,
                "version": self.version,
                "seconds": round(time.perf_counter() - started, 3),
            },
        )

    def choose_instances(self) -> None:
        """Batches in flight at once: ``instances`` in ``modelport.yaml``, else 1 on the CPU
        and :data:`~modelport.devices.GPU_INSTANCES` on a GPU."""
        from ..devices import GPU_INSTANCES

        configured = self.model.config.instances
        gpu = self.model.on_gpu
        instances = configured or (GPU_INSTANCES if gpu else 1)
        self.batcher.set_instances(instances)
        if instances > 1:
            log.info(
                "model instances",
                extra={
                    "model": self.name,
                    "version": self.version,
                    "instances": instances,
                    "gpu": gpu,
                },
            )

    def choose_batching(self) -> None:
        """Batching from the model's own timings when nobody set it (``batching:`` in
        ``modelport.yaml``): a few timed calls pick ``max_batch_size`` and
        ``max_queue_delay_ms`` (:mod:`modelport.perf.profile`), on a GPU from larger sizes.
        The ``auto_batching: false`` option (``--no-auto-batching``) keeps the defaults (on a
        GPU, :data:`~modelport.devices.GPU_MAX_BATCH_SIZE` rows)."""
        from dataclasses import replace

        from ..devices import GPU_MAX_BATCH_SIZE
        from ..perf.profile import GPU_SIZES, SIZES, explicit_batching, startup_batching

        gpu = self.model.on_gpu
        chosen, source = None, "the model's timings"
        if self.model.options.get("auto_batching", True):
            chosen = startup_batching(self.model, sizes=GPU_SIZES if gpu else SIZES)
        if chosen is None and gpu and not explicit_batching(self.model):
            chosen = replace(self.model.batching, max_batch_size=GPU_MAX_BATCH_SIZE)
            source = "the GPU default"
        if chosen is None:
            return
        self.model.batching = chosen
        self.batcher.configure(chosen.max_batch_size, chosen.max_queue_delay_ms)
        log.info(
            f"batching chosen from {source}",
            extra={
                "model": self.name,
                "version": self.version,
                "max_batch_size": chosen.max_batch_size,
                "max_queue_delay_ms": chosen.max_queue_delay_ms,
            },
        )

    def _warm_up(self) -> None:
        warmup = dict(self.model.config.warmup)
        if warmup.get("enabled", True) is False:
            return
        try:
            if "inputs" in warmup:
                batches = [self.model.to_inputs(warmup["inputs"])]
            else:
                sizes = warmup.get("batch_sizes") or sorted(
                    {1, max(1, self.model.batching.max_batch_size)}
                )
                batches = [self.model.example_inputs(int(n)) for n in sizes]
            for inputs in batches:
                self.model.predict_batch(inputs)
        except Exception as exc:
            # Warm-up only primes caches; a model that cannot take generated inputs still serves.
            log.warning(
                "warm-up skipped",
                extra={"model": self.name, "version": self.version, "reason": str(exc)},
            )

    async def close(self) -> None:
        """Finish queued requests, then stop the worker thread."""
        self.state = ModelState.UNLOADING
        await self.batcher.close()

    # -- serving ------------------------------------------------------------------------------

    def _check_ready(self) -> None:
        if self.state is not ModelState.READY:
            detail = f": {self.error}" if self.error else ""
            raise ModelNotReadyError(
                f"model {self.name!r} version {self.version} is {self.state.value}{detail}"
            )

    async def infer(
        self,
        inputs: dict[str, np.ndarray],
        *,
        request_id: str,
        timeout: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Outputs:
        """Validate ``inputs`` against the request signature, then run them through the
        batcher (which runs the model's per-batch contract)."""
        self._check_ready()
        signature = self.model.served_signature
        if signature is not None:
            signature.check_inputs(inputs)
        started = time.time()
        context = None if self.prediction_log is None else (request_id, started, metadata)
        try:
            outputs = await self.batcher.submit(inputs, batch_rows(inputs), timeout, context)
        except ModelportError as exc:
            if self.observers or self.prediction_log is not None:
                self._notify(request_id, inputs, {}, started, exc, metadata)
            raise
        if self.observers:
            self._notify(request_id, inputs, outputs, started, None, metadata)
        return outputs

    async def predict(
        self,
        payload: Any,
        *,
        request_id: str,
        timeout: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any:
        """The plain-JSON path: ``preprocess`` → the batched per-batch contract →
        ``postprocess``."""
        self._check_ready()
        if self._custom_pre:
            self.pending += 1
            try:
                raw = await self._off_loop(self._preprocess, payload)
            finally:
                self.pending -= 1
        else:
            raw = self._preprocess(payload)
        inputs, single = self.model.request_inputs(raw)
        outputs = await self.infer(
            inputs, request_id=request_id, timeout=timeout, metadata=metadata
        )
        result = maybe_single(outputs, single)
        if self._custom_post:
            return await self._off_loop(self._postprocess, result)
        return result

    def _preprocess(self, payload: Any) -> Any:
        try:
            return self.model.preprocess(payload)
        except ModelportError:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidInputError(
                f"model {self.name!r} could not preprocess the payload: {type(exc).__name__}: {exc}"
            ) from exc
        except Exception as exc:
            raise PredictionError(
                f"model {self.name!r} failed in preprocess: {type(exc).__name__}: {exc}"
            ) from exc

    def _postprocess(self, outputs: Any) -> Any:
        try:
            return self.model.postprocess(outputs)
        except ModelportError:
            raise
        except Exception as exc:
            raise PredictionError(
                f"model {self.name!r} failed in postprocess: {type(exc).__name__}: {exc}"
            ) from exc

    async def _off_loop(self, fn: Callable[[Any], Any], arg: Any) -> Any:
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(self._aux, fn, arg)

    def _notify(
        self,
        request_id: str,
        inputs: Mapping[str, np.ndarray],
        outputs: Outputs,
        started: float,
        error: ModelportError | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        status, message = ("ok", None) if error is None else (type(error).__name__, str(error))
        record = Prediction(
            request_id, self.name, self.version, inputs, outputs, started, time.time() - started,
            status, message, metadata,
        )  # fmt: skip
        for observer in self.observers:
            try:
                observer(record)
            except Exception:
                log.exception("prediction observer failed", extra={"request_id": request_id})
        if error is not None and self.prediction_log is not None:
            self.prediction_log.record_prediction(record)  # answered ones come by batch

    def _batch_done(
        self,
        contexts: list[Any],
        rows: list[int],
        inputs: dict[str, np.ndarray],
        outputs: Outputs,
    ) -> None:
        if self.prediction_log is not None:
            self.prediction_log.record_call(
                self.name, self.version, time.time(), contexts, rows, inputs, outputs
            )

