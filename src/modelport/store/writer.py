"""The background writer: one thread that drains the record queue into the database in batches.

The thread sleeps until the inbox gets a record, lingers a moment (``linger_s``, cut short by
a flush) so more arrive, then takes all of them and writes them ``batch_size`` per
transaction: one wake-up per linger and one commit per batch, not per record.
When the database is unreachable, batches go to the :class:`~modelport.store.spool.Spool` and
the thread retries the database with exponential backoff; once it answers, the spool is
replayed one segment at a time between batches. Nothing here raises into a caller.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from .db import Database, is_disconnect
from .inbox import Call, Fields, Flush, Inbox, Stop, runs
from .rows import (
    CALL_WIDTH,
    LEGACY_COLUMNS,
    REQUESTS,
    call_row,
    is_legacy,
    record_row,
    requests_in,
    row_as_dict,
    row_from_dict,
    rows_in,
)
from .spool import Spool

__all__ = ["Flush", "Inbox", "Stop", "Writer", "WriterStats"]

logger = logging.getLogger("modelport.store")


YIELD_EVERY = 128
"""Records encoded between two GIL hand-offs (about half a millisecond of work): without them
the writer would hold the GIL for the interpreter's whole switch interval (5 ms) while
requests wait; with one every 16 records, the hand-offs cost the request path more CPU than
they saved."""
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
        yield_every: int | None = YIELD_EVERY,
    ) -> None:
        super().__init__(name="modelport-prediction-log", daemon=True)
        self.db = db
        self.spool = spool
        self.inbox = inbox
        self.batch_size = batch_size
        self.max_input_bytes = max_input_bytes
        self.linger_s = linger_s
        self.yield_every = yield_every
        """Rows encoded between two GIL hand-offs; None in a process of its own, where no
        request waits for the GIL."""
        self.stats = WriterStats()
        self._retry_at = 0.0  # monotonic time of the next database attempt while it is down
        self._backoff = RETRY_MIN_S
        self._down = False

    def counters(self) -> tuple[WriterStats, int, int]:
        """``(stats, queued, spool_bytes)``; records being written are in no count."""
        s = self.stats
        return WriterStats(s.written, s.spooled, s.replayed, s.lost, s.db_up), 0, self.spool.size

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
        if self.inbox.wake.wait(timeout) and self.inbox.count < self.batch_size:
            self.inbox.hurry.wait(self.linger_s)
        self.inbox.hurry.clear()
        items, _, markers = self.inbox.take()
        # Each run is encoded as it is read: a batch held as objects would make the garbage
        # collector run (see .inbox), so all a batch allocates is one flat list of row fields.
        flat: list[Any] = []
        count = unyielded = 0
        for run in runs(items):
            row = self._encode(run)
            if row is not None:
                flat += row
                added = row[REQUESTS]
                count += added
                unyielded += added
            if self.yield_every is not None and unyielded >= self.yield_every:
                unyielded = 0
                time.sleep(0)  # hand the GIL to the event loop and the model's worker
            if count >= self.batch_size:
                self._write(flat)
                flat = []
                count = 0
        del items
        if flat:
            self._write(flat)
        force = bool(markers)
        while len(self.spool) and self._db_available(force) and self._replay_one():
            if not force:
                break  # one segment per step, so fresh records are not held up behind a replay
        for marker in markers:
            if isinstance(marker, Flush):
                marker.finish(not self._down and len(self.spool) == 0)
        return any(isinstance(m, Stop) for m in markers)

    def _encode(self, run: Call | Fields) -> list[Any] | None:
        """The row of a model call or a lone record; None (its records counted lost) when it
        cannot be encoded, or when a call has no request to record."""
        try:
            if type(run) is Call:
                return call_row(run, self.max_input_bytes)
            return record_row(run, self.max_input_bytes)  # type: ignore[arg-type]
        except Exception as exc:
            if type(run) is Call:
                ids = run.request_ids
                self._lose(len(ids) - ids.count(None), f"a model call could not be encoded: {exc}")
            else:
                self._lose(1, f"record {run[1]!r} could not be encoded: {exc}")
            return None

    def _db_available(self, force: bool) -> bool:
        return not self._down or force or time.monotonic() >= self._retry_at

    def _write(self, flat: list[Any]) -> None:
        """Insert the rows in ``flat`` (:data:`CALL_WIDTH` fields each) or spool them."""
        if self._db_available(force=False):
            try:
                self.db.insert_calls(flat)
            except Exception as exc:
                if not is_disconnect(exc):
                    flat = self._insert_each(flat)
                else:
                    self._mark_down(exc)
            else:
                self._mark_up()
                self.stats.written += requests_in(flat)
                return
        if flat:
            self._to_spool(flat)

    def _insert_each(self, flat: list[Any]) -> list[Any]:
        """Isolate rows the database rejects; return those left unwritten by a disconnect."""
        for k in range(0, len(flat), CALL_WIDTH):
            row = flat[k : k + CALL_WIDTH]
            try:
                self.db.insert_calls(row)
            except Exception as exc:
                if is_disconnect(exc):
                    self._mark_down(exc)
                    return flat[k:]
                self._lose(row[REQUESTS], f"the database rejected call {row[0]!r}: {exc}")
            else:
                self.stats.written += row[REQUESTS]
        return []

    def _to_spool(self, flat: list[Any]) -> None:
        count = requests_in(flat)
        try:
            refused = self.spool.append([row_as_dict(row) for row in rows_in(flat)])
        except OSError as exc:
            self._lose(count, f"spool write failed: {exc}")
            return
        lost = sum(row["requests"] for row in refused)
        self.stats.spooled += count - lost
        if lost:
            self._lose(lost, f"spool is full ({self.spool.limit_bytes} bytes)")

    def _replay_one(self) -> bool:
        """Write the oldest spool segment to the database; False if the database failed."""
        oldest = self.spool.oldest()
        if oldest is None:
            return False
        path, rows = oldest
        legacy = [row for row in rows if is_legacy(row)]
        calls = [row for row in rows if not is_legacy(row)]
        count = len(legacy) + sum(row.get("requests", 1) for row in calls)  # version 1: one each
        try:  # a row missing a column is the segment's fault too: set aside below
            if legacy:
                self.db.insert_legacy([row_from_dict(row, LEGACY_COLUMNS) for row in legacy])
            for start in range(0, len(calls), self.batch_size):
                flat: list[Any] = []
                for row in calls[start : start + self.batch_size]:
                    flat += row_from_dict(row)
                self.db.insert_calls(flat)
        except Exception as exc:
            if is_disconnect(exc):
                self._mark_down(exc)
                return False
            logger.exception("prediction log: spool segment %s rejected; set aside", path)
            self.spool.set_aside(path)
            self._lose(count, f"spool segment {path.name} rejected by the database")
            return True
        self.spool.remove(path)
        self.stats.replayed += count
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
