"""Where the request path leaves records for the writer: one flat list behind a lock.

A record is not an object but a run of fields appended to the list: ``record_id, request_id,
model, version, ts, latency_ms, status, error, metadata, n_inputs, (name, array) * n_inputs,
n_outputs (-1: none), (name, array) * n_outputs``. Strings, numbers and arrays are not tracked
by the garbage collector; records held as dataclasses, dicts or tuples were, and thousands of
them waiting for the writer made the collector run several times as often, promoting the
objects of requests in flight to the old generation and paying for full collections: about
5 µs per request, more than the rest of the request path's share of logging.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Fields", "Flush", "Inbox", "Stop", "records"]

_HEAD = 10
"""Fields before the first input: the nine scalars and ``n_inputs``."""

Fields = tuple[Any, ...]
"""One record as :func:`records` yields it: ``(record_id, request_id, model, version, ts,
latency_ms, status, error, metadata, inputs, outputs)``, the tensors as (name, array) lists."""


@dataclass
class Flush:
    """Marker: set ``done`` once everything queued before it is in the database or spool;
    ``ok`` tells whether it reached the database (and the spool is empty)."""

    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False


class Stop:
    """Marker: flush, try the spool once more, and end the thread."""


class Inbox:
    """Records and markers, oldest first, at most ``maxsize`` records.

    ``wake`` is set when the inbox goes from empty to not empty, so a busy writer is not woken
    once per record; ``hurry`` cuts the writer's linger short (flush, close).
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.count = 0
        """Records waiting (markers not included)."""
        self._markers = 0
        self.items: list[Any] = []
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.hurry = threading.Event()

    def __len__(self) -> int:
        """Records and markers waiting."""
        return self.count + self._markers

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
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray] | None,
    ) -> bool:
        """Append one record's fields (arrays by reference); False if the inbox is full.

        Raises (and appends nothing) if ``inputs`` or ``outputs`` is not a mapping.
        """
        with self.lock:
            if self.count >= self.maxsize:
                return False
            items = self.items
            mark = len(items)
            try:
                items += (record_id, request_id, model, version, ts, latency_ms, status, error,
                          metadata or None, len(inputs))  # fmt: skip
                for pair in inputs.items():
                    items += pair
                if outputs is None:
                    items.append(-1)
                else:
                    items.append(len(outputs))
                    for pair in outputs.items():
                        items += pair
            except BaseException:
                del items[mark:]  # inputs or outputs not a mapping: leave no half record
                raise
            self.count += 1
            if self.count == 1:
                self.wake.set()
        return True

    def put_marker(self, marker: Flush | Stop) -> None:
        """Append a marker (never refused) and have the writer act on it now."""
        with self.lock:
            self.items.append(marker)
            self._markers += 1
            self.hurry.set()
            self.wake.set()

    def take(self) -> list[Any]:
        """Everything waiting, in order (parse it with :func:`records`)."""
        with self.lock:
            self.wake.clear()
            taken, self.items = self.items, []
            self.count = self._markers = 0
        return taken


def records(items: list[Any]) -> Iterator[Fields | Flush | Stop]:
    """The records (as :data:`Fields`) and markers of what :meth:`Inbox.take` returned."""
    i, end = 0, len(items)
    while i < end:
        head = items[i]
        if isinstance(head, Flush | Stop):
            yield head
            i += 1
            continue
        n_in = items[i + _HEAD - 1]
        start = i + _HEAD
        i = start + 2 * n_in
        inputs = list(zip(items[start:i:2], items[start + 1 : i : 2]))
        n_out = items[i]
        outputs = None
        i += 1
        if n_out >= 0:
            outputs = list(zip(items[i : i + 2 * n_out : 2], items[i + 1 : i + 2 * n_out : 2]))
            i += 2 * n_out
        yield (*items[start - _HEAD : start - 1], inputs, outputs)
