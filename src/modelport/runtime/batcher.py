"""Dynamic batching: requests that arrive together run as one framework call.

One :class:`Batcher` per model version. Callers ``await submit(inputs, rows)``; a dispatcher
task (created lazily in the running loop, woken by events, never polling) takes what is
queued, joins it with one ``np.concatenate`` per input, runs the model in the runner's own
worker thread and splits the outputs back by rows.

When to run:

- a request that finds the model idle runs at once: batching never delays a lone request;
- requests that arrive while a batch runs form the next batch, up to ``max_batch_size`` rows;
- after a batch, the next one waits up to ``max_queue_delay_ms`` (counted from the end of that
  batch) for as many requests as were in circulation then (the batch plus those queued behind
  it, capped at ``max_batch_size``): the batch's callers are on their way back. Without this,
  *c* concurrent callers settle into alternating half batches, which a compute-bound model
  runs far less efficiently than full ones. An idle model has nothing to wait for, and a
  lone caller finds its own previous request was the whole circulation.

Under load the worker thread does not hand back to the event loop between batches: while a
full batch waits, it takes and runs it at once, and the loop gets each batch's answers in one
callback. A model's throughput then does not depend on how long the loop's turns take (with
thousands of connections a turn can take tens of milliseconds, and a batch that needs a turn to
start runs once a turn).

With ``instances`` above 1 (Triton's instance groups), that many batches run at once, each in
its own worker thread on the same model: while one batch computes (the framework releases the
GIL, and a GPU runs on its own), the next one's preprocessing (tokenising, decoding images,
the copy to the device) goes on in another thread instead of waiting for it.

The queue holds at most ``max_queue_size`` requests; past that ``submit`` raises
:class:`OverloadedError` at once. When a batched call raises, the batch is split in halves
and retried, so only the failing request(s) get the error. A model whose batched call does
not return one output row per input row cannot batch: its requests then run one at a time.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DeadlineExceededError, ModelportError, OverloadedError, PredictionError

__all__ = ["BatchFn", "Batcher", "Outputs"]

log = logging.getLogger("modelport.runtime")

Outputs = dict[str, np.ndarray]
BatchFn = Callable[[dict[str, np.ndarray]], Outputs]
OnBatch = Callable[[int, Sequence[float]], None]
"""Called on the event loop with (rows in the batch, each request's queue wait in seconds)."""
OnDone = Callable[[list[Any], list[int], dict[str, np.ndarray], Outputs], None]
"""Called on the event loop after a model call that answered all of its requests: (each
request's ``context`` from :meth:`Batcher.submit`, None for one whose caller had gone; each
request's rows; the call's inputs; its outputs). Several requests' rows are stacked in order."""


@dataclass(eq=False)
class _Item:
    inputs: dict[str, np.ndarray]
    rows: int
    key: tuple[Any, ...] | None
    """Requests with equal keys can be concatenated; None runs alone."""
    future: asyncio.Future[Outputs]
    context: Any = None
    enqueued: float = field(default_factory=time.perf_counter)


def _key(inputs: dict[str, np.ndarray]) -> tuple[Any, ...] | None:
    """What requests must share to be stacked row-wise; None for a request that runs alone: a
    scalar input, or inputs whose first dimensions differ (their rows do not line up)."""
    parts = []
    rows = None
    for name, array in inputs.items():
        if array.ndim == 0 or (rows is not None and array.shape[0] != rows):
            return None
        rows = array.shape[0]
        parts.append((name, array.dtype.str, array.shape[1:]))
    return tuple(parts)


class Batcher:
    """Queue, batch and run calls of ``fn`` (named arrays in, named arrays out) in worker
    threads, ``instances`` batches at a time (``fn`` must be safe to call from several threads
    when that is above 1: every runtime's inference call is)."""

    def __init__(
        self,
        fn: BatchFn,
        *,
        name: str,
        max_batch_size: int = 32,
        max_queue_delay_ms: float = 1.0,
        max_queue_size: int = 1024,
        on_batch: OnBatch | None = None,
        on_done: OnDone | None = None,
        instances: int = 1,
    ) -> None:
        self._fn = fn
        self.name = name
        self.configure(max_batch_size, max_queue_delay_ms)
        self.max_queue_size = max_queue_size
        self._on_batch = on_batch
        self._on_done = on_done
        self._queue: deque[_Item] = deque()
        self._taking = threading.Lock()
        """The dispatcher and the workers (taking the next full batch) both take batches."""
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._in_flight: set[asyncio.Future[None]] = set()
        """The batches running (one per busy worker thread)."""
        self.instances = 1
        """Batches that may run at once, each in its own worker thread."""
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"modelport-{name}")
        self.set_instances(instances)  # checks it; threads start only with the first batch
        self._circulation = 0
        self._last_size = 0
        self._last_end = 0.0
        self._rows_in = 0
        self._rows_out = 0

    def configure(self, max_batch_size: int, max_queue_delay_ms: float) -> None:
        """Set the batch limit and the queue delay (also while serving: the next batch uses
        them)."""
        self.max_batch_size = max(1, max_batch_size)
        self._delay = max(0.0, max_queue_delay_ms) / 1000.0

    def set_instances(self, instances: int) -> None:
        """How many batches may run at once; before serving (the worker threads are replaced)."""
        if instances < 1:
            raise ValueError(f"instances must be at least 1, got {instances}")
        if instances != self.instances:
            if self.busy:
                raise RuntimeError("instances can only change while the batcher is idle")
            self._executor.shutdown(wait=True)
            prefix = f"modelport-{self.name}"
            self._executor = ThreadPoolExecutor(instances, thread_name_prefix=prefix)
            self.instances = instances

    @property
    def depth(self) -> int:
        """Requests waiting, not counting the batch that runs."""
        return len(self._queue)

    @property
    def busy(self) -> bool:
        return bool(self._in_flight or self._queue)

    async def submit(
        self,
        inputs: dict[str, np.ndarray],
        rows: int,
        timeout: float | None = None,
        context: Any = None,
    ) -> Outputs:
        """Run ``inputs`` (``rows`` rows) in a batch; its own output rows come back.

        ``context`` is handed to ``on_done`` with the batch (a prediction log's request id).
        """
        if self._closing:
            raise OverloadedError(f"model {self.name!r} is shutting down", retry_after=1.0)
        if len(self._queue) >= self.max_queue_size:
            raise OverloadedError(
                f"model {self.name!r} is overloaded: {len(self._queue)} requests queued "
                f"(max_queue_size {self.max_queue_size}); retry later",
                retry_after=1.0,
            )
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # First use, or a new loop (e.g. ``asyncio.run`` per call): dispatch in this one.
            self._loop = loop
            self._in_flight = set()  # an earlier loop's, whose callbacks will never run
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._dispatch())
        assert self._wakeup is not None
        item = _Item(inputs, rows, _key(inputs), loop.create_future(), context)
        self._rows_in += rows
        self._queue.append(item)
        self._wakeup.set()
        if timeout is None:
            return await item.future
        handle = loop.call_later(timeout, _expire, item.future, timeout, self.name)
        try:
            return await item.future
        finally:
            handle.cancel()

    async def close(self) -> None:
        """Finish what is queued, then stop the dispatcher and the worker thread."""
        self._closing = True
        if self._task is not None and self._wakeup is not None:
            self._wakeup.set()
            if self._loop is asyncio.get_running_loop():
                await self._task
        self._executor.shutdown(wait=True)

    # -- the dispatcher ---------------------------------------------------------------------

    async def _dispatch(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue or len(self._in_flight) >= self.instances:
                if self._closing and not self._queue:
                    if not self._in_flight:
                        return
                    await asyncio.wait(set(self._in_flight))
                    continue
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._gather(loop)
            with self._taking:
                batch = self._take()
            if not batch:
                continue
            running = loop.run_in_executor(self._executor, self._work, batch, loop)
            self._in_flight.add(running)
            running.add_done_callback(self._ran)

    def _ran(self, running: asyncio.Future[None]) -> None:
        """On the loop: a worker thread is free again."""
        self._in_flight.discard(running)
        self._circulation = self._last_size + len(self._queue)
        self._last_end = time.perf_counter()
        if not running.cancelled() and running.exception() is not None:
            log.error("worker of model %r failed", self.name, exc_info=running.exception())
        assert self._wakeup is not None
        self._wakeup.set()

    def _work(self, batch: list[_Item], loop: asyncio.AbstractEventLoop) -> None:
        """In the worker thread: run ``batch``, then the next ones while a full batch waits;
        each batch's answers go to the loop in one callback."""
        while True:
            start = time.perf_counter()
            waits = [start - item.enqueued for item in batch]
            try:
                results, calls = self._run(batch)
            except Exception as exc:  # joining the batch failed: each caller gets the error
                log.exception("batch of model %r failed", self.name)
                results, calls = [_as_error(exc, self.name)] * len(batch), []
            loop.call_soon_threadsafe(self._settle, batch, waits, results, calls)
            self._last_size = len(batch)
            if self._closing or not self._full_batch_waits():
                return
            with self._taking:
                batch = self._take()
            if not batch:
                return

    def _full_batch_waits(self) -> bool:
        # Two counters, each written by one side: the loop adds, whoever takes removes.
        return self._rows_in - self._rows_out >= self.max_batch_size

    def _settle(
        self,
        batch: list[_Item],
        waits: list[float],
        results: list[Outputs | BaseException],
        calls: list[_Call],
    ) -> None:
        """On the loop: tell ``on_batch``, answer the batch's callers, then tell ``on_done``."""
        if self._on_batch is not None:
            self._on_batch(sum(item.rows for item in batch), waits)
        contexts: list[Any] = []
        for item, result in zip(batch, results):
            if item.future.done():  # timed out or cancelled meanwhile
                contexts.append(None)
                continue
            contexts.append(item.context)
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)
        if self._on_done is not None:
            for first, stop, inputs, outputs in calls:
                try:
                    rows = [item.rows for item in batch[first:stop]]
                    self._on_done(contexts[first:stop], rows, inputs, outputs)
                except Exception:
                    log.exception("batch observer of model %r failed", self.name)

    async def _gather(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait (bounded) for the callers of the previous batch to come back."""
        assert self._wakeup is not None
        target = min(self._circulation, self.max_batch_size)
        deadline = self._last_end + self._delay
        while len(self._queue) < target and not self._closing:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._wakeup.clear()
            handle = loop.call_later(remaining, self._wakeup.set)
            await self._wakeup.wait()
            handle.cancel()

    def _take(self) -> list[_Item]:
        """The next batch: the oldest live request and those after it that fit with it."""
        queue = self._queue
        while queue and queue[0].future.done():
            self._rows_out += queue.popleft().rows
        if not queue:
            return []
        head = queue.popleft()
        batch = [head]
        rows = head.rows
        if head.key is not None:
            while queue and rows < self.max_batch_size:
                item = queue[0]
                if item.future.done():
                    self._rows_out += queue.popleft().rows
                    continue
                if item.key != head.key or rows + item.rows > self.max_batch_size:
                    break
                batch.append(queue.popleft())
                rows += item.rows
        self._rows_out += rows
        return batch

    # -- in the worker thread ---------------------------------------------------------------

    def _run(
        self, batch: list[_Item], first: int = 0
    ) -> tuple[list[Outputs | BaseException], list[_Call]]:
        """Each request's outputs or error, and the model calls that answered (requests
        ``first`` onwards of the dispatched batch)."""
        if len(batch) == 1:
            inputs = batch[0].inputs
            try:
                outputs = self._fn(inputs)
            except BaseException as exc:  # handed to the caller's future
                return [_as_error(exc, self.name)], []
            return [outputs], [(first, first + 1, inputs, outputs)]
        total = sum(item.rows for item in batch)
        joined = {
            name: np.concatenate([item.inputs[name] for item in batch]) for name in batch[0].inputs
        }
        try:
            outputs = self._fn(joined)
            _check_rows(outputs, total, self.name)
        except _RowMismatch as exc:
            # The model answers one request at a time: stop batching for it, and say so.
            log.warning("%s; dynamic batching is now off for this model", exc)
            self.max_batch_size = 1
            return self._merge([self._run([item], first + k) for k, item in enumerate(batch)])
        except Exception:
            # Isolate the failing request(s): retry each half on its own.
            mid = len(batch) // 2
            return self._merge([self._run(batch[:mid], first), self._run(batch[mid:], first + mid)])
        results: list[Outputs | BaseException] = []
        start = 0
        for item in batch:
            stop = start + item.rows
            results.append({name: array[start:stop] for name, array in outputs.items()})
            start = stop
        return results, [(first, first + len(batch), joined, outputs)]

    @staticmethod
    def _merge(
        parts: list[tuple[list[Outputs | BaseException], list[_Call]]],
    ) -> tuple[list[Outputs | BaseException], list[_Call]]:
        results: list[Outputs | BaseException] = []
        calls: list[_Call] = []
        for part_results, part_calls in parts:
            results += part_results
            calls += part_calls
        return results, calls


_Call = tuple[int, int, dict[str, np.ndarray], Outputs]
"""A model call that answered requests ``[start, stop)`` of a batch: ``(start, stop, inputs,
outputs)``."""


class _RowMismatch(PredictionError):
    """A batched call did not return one output row per input row."""


def _check_rows(outputs: Outputs, rows: int, name: str) -> None:
    for key, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != rows:
            raise _RowMismatch(
                f"model {name!r} returned output {key!r} with shape {list(array.shape)} for a "
                f"batch of {rows} rows; a model that cannot batch needs max_batch_size: 1"
            )


def _as_error(exc: BaseException, name: str) -> BaseException:
    if isinstance(exc, ModelportError):
        return exc
    error = PredictionError(f"model {name!r} failed: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def _expire(future: asyncio.Future[Outputs], timeout: float, name: str) -> None:
    if not future.done():
        future.set_exception(
            DeadlineExceededError(
                f"model {name!r} did not answer within the request's timeout of {timeout:g} s"
            )
        )
