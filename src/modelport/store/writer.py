"""The background writer: one thread that drains the record queue into the database in batches.

The thread sleeps until the inbox gets a record, lingers a moment (``linger_s``, cut short by
a flush) so more arrive, then takes up to ``batch_size`` and writes them in one transaction:
one wake-up and one commit per batch, which keeps the request path's share of the GIL intact.
When the database is unreachable, batches go to the :class:`~modelport.store.spool.Spool` and
the thread retries the database with exponential backoff; once it answers, the spool is
replayed one segment at a time between batches. Nothing here raises into a caller.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .db import Database, is_disconnect
from .records import PredictionRecord, to_row
from .spool import Spool

__all__ = ["Flush", "Inbox", "Stop", "Writer", "WriterStats"]

logger = logging.getLogger("modelport.store")

YIELD_EVERY = 16
"""Records encoded between two GIL hand-offs: without them the writer would hold the GIL for
the interpreter's whole switch interval (5 ms), and every request in flight would wait."""
RETRY_MIN_S = 0.2
RETRY_MAX_S = 5.0


@dataclass
class WriterStats:
    """Counters kept by the writer thread (read them through ``PredictionLog.stats``)."""

    written: int = 0
    spooled: int = 0
    replayed: int = 0
    lost: int = 0
    db_up: bool = False


@dataclass
class Flush:
    """Queue marker: set ``done`` once everything queued before it is in the database or spool;
    ``ok`` tells whether it reached the database (and the spool is empty)."""

    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False


class Stop:
    """Queue marker: flush, try the spool once more, and end the thread."""


class Inbox:
    """Where the request path leaves records: a bounded deque behind one uncontended lock.

    ``wake`` is set when the deque goes from empty to not empty, so a busy writer is not woken
    once per record; ``hurry`` cuts the writer's linger short (flush, close).
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.items: deque[Any] = deque()
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.hurry = threading.Event()

    def __len__(self) -> int:
        return len(self.items)

    def put(self, record: PredictionRecord) -> bool:
        """Append ``record``; False if the inbox is full."""
        with self.lock:
            if len(self.items) >= self.maxsize:
                return False
            self.items.append(record)
            if len(self.items) == 1:
                self.wake.set()
        return True

    def put_marker(self, marker: Flush | Stop) -> None:
        """Append a marker (never refused) and have the writer act on it now."""
        with self.lock:
            self.items.append(marker)
            self.hurry.set()
            self.wake.set()

    def take(self, limit: int) -> list[Any]:
        """Up to ``limit`` items, oldest first."""
        with self.lock:
            self.wake.clear()
            items = self.items
            taken = [items.popleft() for _ in range(min(limit, len(items)))]
            if items:
                self.wake.set()
        return taken


class Writer(threading.Thread):
    """Drains the inbox (records and markers) into ``db``, falling back to ``spool``.

    After waking it lingers ``linger_s`` (unless hurried) so records arrive in batches: one
    transaction and one wake-up per batch, not per record.
    """

    def __init__(
        self,
        db: Database,
        spool: Spool,
        inbox: Inbox,
        *,
        batch_size: int,
        max_input_bytes: int,
        linger_s: float,
    ) -> None:
        super().__init__(name="modelport-prediction-log", daemon=True)
        self.db = db
        self.spool = spool
        self.inbox = inbox
        self.batch_size = batch_size
        self.max_input_bytes = max_input_bytes
        self.linger_s = linger_s
        self.stats = WriterStats()
        self._retry_at = 0.0  # monotonic time of the next database attempt while it is down
        self._backoff = RETRY_MIN_S
        self._down = False

    @property
    def spool_bytes(self) -> int:
        return self.spool.size

    @property
    def queued(self) -> int:
        """Records taken from the inbox and not yet written (none between batches)."""
        return 0

    def release(self) -> None:
        """Close the spool (its rows stay on disk for the next process)."""
        self.spool.close()

    def run(self) -> None:
        stopping = False
        while not (stopping and not len(self.inbox)):
            try:
                stopping = self._step() or stopping
            except Exception:  # never let the thread die: that would block flush() forever
                logger.exception("prediction log writer: unexpected error")
                time.sleep(1.0)  # and never spin on a repeating one

    def _step(self) -> bool:
        timeout: float | None = None  # nothing spooled: sleep until a record or marker comes
        if len(self.spool):
            timeout = max(0.0, self._retry_at - time.monotonic()) if self._down else 0.0
        if self.inbox.wake.wait(timeout) and len(self.inbox) < self.batch_size:
            self.inbox.hurry.wait(self.linger_s)
        self.inbox.hurry.clear()
        items = self.inbox.take(self.batch_size)
        batch = [item for item in items if isinstance(item, PredictionRecord)]
        markers = [item for item in items if not isinstance(item, PredictionRecord)]
        if batch:
            self._write(batch)
        force = bool(markers)
        while len(self.spool) and self._db_available(force) and self._replay_one():
            if not force:
                break  # one segment per step, so fresh records are not held up behind a replay
        for marker in markers:
            if isinstance(marker, Flush):
                marker.ok = not self._down and len(self.spool) == 0
                marker.done.set()
        return any(isinstance(m, Stop) for m in markers)

    def _db_available(self, force: bool) -> bool:
        return not self._down or force or time.monotonic() >= self._retry_at

    def _write(self, batch: list[PredictionRecord]) -> None:
        rows = []
        for k, record in enumerate(batch, 1):
            try:
                rows.append(to_row(record, self.max_input_bytes))
            except Exception:
                self._lose(1, f"record {record.request_id!r} could not be encoded")
            if k % YIELD_EVERY == 0:
                time.sleep(0)  # hand the GIL to the event loop and the model's worker
        if not rows:
            return
        if self._db_available(force=False):
            try:
                self.db.insert_predictions(rows)
            except Exception as exc:
                if not is_disconnect(exc):
                    rows = self._insert_each(rows)
                else:
                    self._mark_down(exc)
            else:
                self._mark_up()
                self.stats.written += len(rows)
                return
        if rows:
            self._to_spool(rows)

    def _insert_each(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Isolate rows the database rejects; return those left unwritten by a disconnect."""
        for i, row in enumerate(rows):
            try:
                self.db.insert_predictions([row])
            except Exception as exc:
                if is_disconnect(exc):
                    self._mark_down(exc)
                    return rows[i:]
                self._lose(1, f"the database rejected record {row['request_id']!r}: {exc}")
            else:
                self.stats.written += 1
        return []

    def _to_spool(self, rows: list[dict[str, Any]]) -> None:
        try:
            lost = self.spool.append(rows)
        except OSError as exc:
            self._lose(len(rows), f"spool write failed: {exc}")
            return
        self.stats.spooled += len(rows) - lost
        if lost:
            self._lose(lost, f"spool is full ({self.spool.limit_bytes} bytes)")

    def _replay_one(self) -> bool:
        """Write the oldest spool segment to the database; False if the database failed."""
        oldest = self.spool.oldest()
        if oldest is None:
            return False
        path, rows = oldest
        try:
            for start in range(0, len(rows), self.batch_size):
                self.db.insert_predictions(rows[start : start + self.batch_size])
        except Exception as exc:
            if is_disconnect(exc):
                self._mark_down(exc)
                return False
            logger.exception("prediction log: spool segment %s rejected; set aside", path)
            self.spool.set_aside(path)
            self._lose(len(rows), f"spool segment {path.name} rejected by the database")
            return True
        self.spool.remove(path)
        self.stats.replayed += len(rows)
        self._mark_up()
        return True

    def _mark_down(self, exc: BaseException) -> None:
        if not self._down:
            logger.warning(
                "prediction log: database %s unreachable, spooling to %s: %s",
                self.db.display_url,
                self.spool.directory,
                exc,
            )
        else:
            self._backoff = min(self._backoff * 2, RETRY_MAX_S)
        self._down = True
        self.stats.db_up = False
        self._retry_at = time.monotonic() + self._backoff

    def _mark_up(self) -> None:
        if self._down:
            logger.warning("prediction log: database %s is back", self.db.display_url)
        self._down = False
        self.stats.db_up = True
        self._backoff = RETRY_MIN_S

    def _lose(self, n: int, why: str) -> None:
        self.stats.lost += n
        logger.error("prediction log: %d record(s) lost: %s", n, why)
