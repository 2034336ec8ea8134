"""Where the request path leaves records for the writer: one flat list behind a lock.

A record is not an object but a run of plain fields appended to the list: ``record_id,
request_id, model, version, ts, latency_ms, status, error, metadata (JSON text or None),
n_inputs, tensor * n_inputs, n_outputs (-1: none), tensor * n_outputs``, where a tensor is
``name, datatype, ndim, dim * ndim, data`` and ``data`` the array's raw bytes (numbers) or a
list of strings (text and objects). A model call that answered several requests at once is
one run for all of them (:meth:`Inbox.put_call`): ``n, model, version, ts, request_id * n,
started * n, rows * n, metadata * n, n_inputs, tensor * n_inputs, n_outputs, tensor *
n_outputs``, the tensors holding the requests' rows in order, split apart by :func:`records`.
Two reasons:

- Strings, numbers and bytes are not tracked by the garbage collector; records held as
  dataclasses, dicts or tuples were (shape tuples too), and thousands of them waiting for the
  writer made the collector run several times as often, promoting the objects of requests in
  flight to the old generation: about 5 µs per request, more than the rest of the request
  path's share of logging.
- A list of plain values is what :mod:`marshal` writes, at about 0.3 µs per record, so the
  writer can live in another process (:mod:`.process`) without pickling arrays (6 µs each).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ._json import dumps

__all__ = [
    "Call",
    "Fields",
    "Flush",
    "Inbox",
    "Stop",
    "Tensor",
    "metadata_text",
    "records",
    "runs",
    "spans",
]

_HEAD = 10
"""Fields before the first input: the nine scalars and ``n_inputs``."""
_RAW_KINDS = "biufc"
"""dtype kinds kept as raw bytes; others (text, objects, dates) become strings."""

Tensor = tuple[str, str, tuple[int, ...], "bytes | list[str]"]
"""``(name, datatype, shape, data)``: a dtype string (``"<f4"``), and raw bytes or strings."""
Fields = tuple[Any, ...]
"""One record as :func:`records` yields it: ``(record_id, request_id, model, version, ts,
latency_ms, status, error, metadata, inputs, outputs)``, the tensors as :data:`Tensor` lists."""


@dataclass
class Flush:
    """Marker: set ``done`` once everything queued before it is in the database or spool;
    ``ok`` tells whether it reached the database (and the spool is empty)."""

    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False
    then: Callable[[Flush], None] | None = None
    """Called (by the writer) right after ``done`` is set."""

    def finish(self, ok: bool) -> None:
        self.ok = ok
        self.done.set()
        if self.then is not None:
            self.then(self)


class Stop:
    """Marker: flush, try the spool once more, and end the writer."""


class Inbox:
    """Records, at most ``maxsize`` of them, and markers, each after the records before it.

    ``wake`` is set when the inbox goes from empty to not empty, so a busy writer is not woken
    once per record; ``hurry`` cuts the writer's linger short (flush, close).
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.count = 0
        """Records waiting (markers not included)."""
        self.items: list[Any] = []
        self.markers: list[Flush | Stop] = []
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.hurry = threading.Event()

    def __len__(self) -> int:
        """Records and markers waiting."""
        return self.count + len(self.markers)

    def put(
        self,
        record_id: str | None,
        request_id: str,
        model: str,
        version: str,
        ts: float,
        latency_ms: float,
        status: str,
        error: str | None,
        metadata: Mapping[str, Any] | None,
        inputs: Mapping[str, Any],
        outputs: Mapping[str, Any] | None,
    ) -> bool:
        """Append one record's fields (arrays copied to bytes); False if the inbox is full.

        Raises (and appends nothing) if ``inputs`` or ``outputs`` is not a mapping of arrays,
        or ``metadata`` cannot be written as JSON.
        """
        meta = metadata_text(metadata)
        with self.lock:
            if self.count >= self.maxsize:
                return False
            items = self.items
            mark = len(items)
            try:
                items += (record_id, request_id, model, version, float(ts), float(latency_ms),
                          status, error, meta)  # fmt: skip
                _append_tensors(items, inputs)
                if outputs is None:
                    items.append(-1)
                else:
                    _append_tensors(items, outputs)
            except BaseException:
                del items[mark:]  # not a mapping of arrays: leave no half record
                raise
            self.count += 1
            if self.count == 1:
                self.wake.set()
        return True

    def put_call(
        self,
        model: str,
        version: str,
        ts: float,
        request_ids: list[str | None],
        started: list[float],
        rows: Sequence[int],
        metadata: list[str | None],
        inputs: Mapping[str, Any],
        outputs: Mapping[str, Any],
    ) -> int:
        """Append the records of one model call's requests (a None request id: not recorded),
        each request's ``rows`` stacked in order in ``inputs`` and ``outputs`` (when there are
        several); how many records that is, 0 if they do not fit (or none is recorded).

        ``metadata`` is each request's, as JSON text. One hand-over for the whole batch is what
        keeps the request path's share of logging small.
        """
        count = len(request_ids) - request_ids.count(None)
        if not count:
            return 0
        with self.lock:
            if self.count and self.count + count > self.maxsize:
                return 0
            items = self.items
            mark = len(items)
            try:
                items += (len(request_ids), model, version, float(ts))
                items += request_ids
                items += started
                items += rows
                items += metadata
                _append_tensors(items, inputs)
                _append_tensors(items, outputs)
            except BaseException:
                del items[mark:]
                raise
            self.count += count
            if self.count == count:
                self.wake.set()
        return count

    def extend(self, fields: list[Any], count: int) -> bool:
        """Append ``count`` records already laid out as fields; False if they do not fit (an
        empty inbox takes any number)."""
        with self.lock:
            if self.count and self.count + count > self.maxsize:
                return False
            self.items += fields
            self.count += count
            if self.count == count:
                self.wake.set()
        return True

    def put_marker(self, marker: Flush | Stop) -> None:
        """Append a marker (never refused) and have the writer act on it now."""
        with self.lock:
            self.markers.append(marker)
            self.hurry.set()
            self.wake.set()

    def take(self) -> tuple[list[Any], int, list[Flush | Stop]]:
        """Everything waiting: the records' fields (parse them with :func:`records`), how many
        records that is, and the markers, whose records are all among those fields."""
        with self.lock:
            self.wake.clear()
            taken, self.items = self.items, []
            markers, self.markers = self.markers, []
            count, self.count = self.count, 0
        return taken, count, markers


def metadata_text(metadata: Mapping[str, Any] | None) -> str | None:
    """Caller metadata as the JSON text a record carries; None for none."""
    return dumps(dict(metadata)).decode() if metadata else None


def _append_tensors(items: list[Any], tensors: Mapping[str, Any]) -> None:
    """Append ``len(tensors)``, then each tensor's fields (arrays copied as bytes)."""
    items.append(len(tensors))
    raw = _RAW
    for name, array in tensors.items():
        dtype = raw.get(array.dtype) if type(array) is np.ndarray else None
        if dtype is None:
            items += _tensor(name, array)
        else:  # the common case, inline: numbers
            items += (name, dtype, array.ndim, *array.shape, array.tobytes())


_RAW: dict[np.dtype[Any], str] = {}
"""Numeric dtypes seen so far → their dtype string (``dtype.str`` builds a new one per call)."""


def _tensor(name: str, array: Any) -> list[Any]:
    """A tensor's fields, the general way (and a numeric dtype remembered for the fast one)."""
    if type(array) is not np.ndarray:
        array = np.asarray(array)
    dtype = array.dtype
    if dtype.kind in _RAW_KINDS:
        _RAW.setdefault(dtype, dtype.str)
        data: bytes | list[str] = array.tobytes()
    else:
        flat = array.reshape(-1)
        values = flat.tolist() if dtype.kind in "USO" else flat  # dates: str() of numpy's value
        data = [_text(v) for v in values]
    return [name, dtype.str, array.ndim, *array.shape, data]


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def spans(items: list[Any]) -> Iterator[tuple[int, int, int]]:
    """``(start, end, records)`` of each run of fields in what :meth:`Inbox.take` returned."""
    i, end = 0, len(items)
    while i < end:
        start = i
        head = items[i]
        if type(head) is int:  # a model call's requests
            ids = items[i + 4 : i + 4 + head]
            i = _call_end(items, i)
            yield start, i, len(ids) - ids.count(None)
            continue
        i = _skip(items, i + _HEAD, items[i + _HEAD - 1])
        n_out = items[i]
        i = _skip(items, i + 1, n_out) if n_out > 0 else i + 1
        yield start, i, 1


def _skip(items: list[Any], i: int, tensors: int) -> int:
    for _ in range(tensors):
        i += 4 + items[i + 2]
    return i


def _tensors(items: list[Any], i: int, count: int) -> tuple[list[Tensor], int]:
    tensors: list[Tensor] = []
    for _ in range(count):
        ndim = items[i + 2]
        data = i + 3 + ndim
        tensors.append((items[i], items[i + 1], tuple(items[i + 3 : data]), items[data]))
        i = data + 1
    return tensors, i


def _rows_of(tensors: list[Tensor], first: int, rows: int) -> list[Tensor]:
    """Rows ``[first, first + rows)`` of each tensor."""
    part: list[Tensor] = []
    for name, dtype, shape, data in tensors:
        total = shape[0]
        per_row = len(data) // total if total else 0
        piece = data[first * per_row : (first + rows) * per_row]
        part.append((name, dtype, (rows, *shape[1:]), piece))
    return part


class Call(NamedTuple):
    """The requests one model call answered, as :func:`runs` yields them: each request's
    rows stacked in order in ``inputs`` and ``outputs`` (a None request id: not recorded)."""

    model: str
    version: str
    ts: float
    request_ids: list[str | None]
    started: list[float]
    rows: list[int]
    metadata: list[str | None]
    inputs: list[Tensor]
    outputs: list[Tensor]

    def records(self) -> Iterator[Fields]:
        """One record per recorded request, its rows cut out of the call's tensors."""
        rows, inputs, outputs, ts = self.rows, self.inputs, self.outputs, self.ts
        n = len(rows)
        # Rows that do not add up cannot be told apart: such records fail to encode, and the
        # writer counts them lost (the batcher never stacks them: see runtime.batcher._key).
        aligned = n == 1 or all(t[2][:1] == (sum(rows),) for t in (*inputs, *outputs))
        first = 0
        ins: list[Tensor] | None
        outs: list[Tensor] | None
        for k, request_id in enumerate(self.request_ids):
            if request_id is not None:
                if n == 1:  # whole tensors: one request's outputs need not have its input rows
                    ins, outs = inputs, outputs
                elif not aligned:
                    ins = outs = None
                else:
                    ins, outs = _rows_of(inputs, first, rows[k]), _rows_of(outputs, first, rows[k])
                latency = (ts - self.started[k]) * 1000.0
                yield (None, request_id, self.model, self.version, ts, latency, "ok", None,
                       self.metadata[k], ins, outs)  # fmt: skip
            first += rows[k]


def runs(items: list[Any]) -> Iterator[Fields | Call]:
    """The runs in what :meth:`Inbox.take` returned: a lone record's :data:`Fields`, or a
    :class:`Call` holding the records of one model call."""
    i, end = 0, len(items)
    while i < end:
        head = items[i]
        if type(head) is int:  # a model call's requests
            n, model, version, ts = items[i : i + 4]
            i += 4
            ids, started, rows, meta = (items[i + k * n : i + (k + 1) * n] for k in range(4))
            inputs, i = _tensors(items, i + 4 * n + 1, items[i + 4 * n])
            outputs, i = _tensors(items, i + 1, items[i])
            yield Call(model, version, ts, ids, started, rows, meta, inputs, outputs)
            continue
        fields = items[i : i + _HEAD - 1]
        inputs, i = _tensors(items, i + _HEAD, items[i + _HEAD - 1])
        n_out = items[i]
        i += 1
        if n_out < 0:
            yield (*fields, inputs, None)
            continue
        outputs, i = _tensors(items, i, n_out)
        yield (*fields, inputs, outputs)


def records(items: list[Any]) -> Iterator[Fields]:
    """The records (as :data:`Fields`) in what :meth:`Inbox.take` returned."""
    for run in runs(items):
        if type(run) is Call:
            yield from run.records()
        else:
            yield run


def _call_end(items: list[Any], i: int) -> int:
    i += 4 + 4 * items[i]
    i = _skip(items, i + 1, items[i])
    return _skip(items, i + 1, items[i])
