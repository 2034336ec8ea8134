"""The prediction log's writer in its own process, fed by a thread of the server's.

Encoding rows and inserting them cost about 10 µs of CPU per record; in a writer thread that
CPU and the GIL are taken from the event loop. Here the server's side only lays each record out
as plain fields (:mod:`.inbox`), and a feeder thread hands batches of them to a child process
(:mod:`.child`) as :mod:`marshal` frames over a pipe: about 0.3 µs per record, with the GIL
released while the pipe takes them. The child runs the thread mode's
:class:`~modelport.store.writer.Writer`, so the database, spool and counters behave the same.

If the child dies, the records it had not accounted for are counted lost and logged, pending
flushes report failure, and the next batch starts a new child (at most one start a second).
"""

from __future__ import annotations

import itertools
import json
import logging
import marshal
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from .inbox import Flush, Inbox, Stop, spans
from .pipe import CONFIG, ERROR, FLUSH, RECORDS, STATS, STOP, Snapshot, read_frame, write_frame
from .spool import Spool
from .writer import WriterStats

__all__ = ["ProcessWriter"]

logger = logging.getLogger("modelport.store")

RESPAWN_S = 1.0
"""Least time between two starts of the writer process."""
_EMPTY: Snapshot = (0, 0, 0, 0, 0, 0, False)
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class _Child:
    """One writer process: its pipes, what it was sent, and what it last reported."""

    def __init__(self, owner: ProcessWriter) -> None:
        reply_read, reply_write = os.pipe()
        env = dict(os.environ)
        # The child imports this very modelport, even when it was found through sys.path.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
        lock_fd = owner.spool.lock_fd
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "modelport.store.child", str(reply_write), str(lock_fd)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                pass_fds=(reply_write, lock_fd),
                env=env,
                bufsize=0,
            )
        finally:
            os.close(reply_write)
        self.replies = os.fdopen(reply_read, "rb")
        assert self.proc.stdin is not None
        self.stdin: IO[bytes] = self.proc.stdin
        self.write_lock = threading.Lock()
        self.sent = 0
        self.snapshot = _EMPTY
        self.final = False
        self.pending: dict[int, Flush] = {}
        try:
            self.send(CONFIG, json.dumps(owner.config).encode())
        except OSError:  # it died at once: leave nothing behind
            self.proc.kill()
            self.proc.wait()
            self.replies.close()
            raise
        self.reader = threading.Thread(
            target=owner._read_replies, args=(self,), name="modelport-log-replies", daemon=True
        )
        self.reader.start()

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        """Write one frame (blocks while the pipe is full)."""
        with self.write_lock:
            write_frame(self.stdin, kind, payload)

    @property
    def unaccounted(self) -> int:
        """Records sent that the child has not reported written, spooled or lost."""
        written, spooled, _, lost, *_ = self.snapshot
        return max(0, self.sent - written - spooled - lost)


class ProcessWriter(threading.Thread):
    """Hands the inbox to a writer process; the server-side half of a process-mode log.

    ``spool`` is opened (and locked) here, so a bad directory fails :meth:`PredictionLog.open`;
    each child takes over the lock's descriptor and writes the spool itself.
    """

    def __init__(
        self,
        url: str,
        spool: Spool,
        inbox: Inbox,
        *,
        batch_size: int,
        max_input_bytes: int,
        linger_s: float,
        queue_size: int,
    ) -> None:
        super().__init__(name="modelport-prediction-log-feeder", daemon=True)
        self.spool = spool
        self.inbox = inbox
        self.batch_size = batch_size
        self.linger_s = linger_s
        store_logger = logging.getLogger("modelport")
        json_logs = any(
            type(h.formatter).__name__ == "JsonFormatter" for h in store_logger.handlers
        )
        self.config: dict[str, Any] = {
            "url": url,
            "spool_dir": str(spool.directory),
            "spool_limit_bytes": spool.limit_bytes,
            "batch_size": batch_size,
            "max_input_bytes": max_input_bytes,
            "linger_s": linger_s,
            "queue_size": queue_size,
            "log_level": logger.getEffectiveLevel(),
            "log_format": "json" if json_logs else "text",
        }
        self._lock = threading.Lock()
        self._child: _Child | None = None
        self._ids = itertools.count(1)
        self._gone = [0, 0, 0, 0]  # written, spooled, replayed, lost by children that ended
        self._lost = 0  # records that never reached a child, or died with one
        self._last = _EMPTY  # the last snapshot of the last child that ended
        self._holding = 0  # records taken from the inbox and not yet counted as sent
        self.sent = 0
        """Records handed to writer processes so far."""
        self._started_at = 0.0

    @property
    def pid(self) -> int | None:
        """The running writer process's id; None between a death and the next start."""
        child = self._child
        return child.proc.pid if child is not None else None

    # -- the counters PredictionLog reads --------------------------------------------------
    def counters(self) -> tuple[WriterStats, int, int]:
        """``(stats, queued, spool_bytes)``: the child's figures as of its last report (every
        half second while they change, and with each flush), so reading them never waits."""
        with self._lock:
            child = self._child
            if child is None:
                written, spooled, replayed, lost = self._gone
                queued, spool_bytes, db_up = self._holding, self._last[5], self._last[6]
            else:
                snap = child.snapshot
                written, spooled, replayed, lost = (a + b for a, b in zip(self._gone, snap[:4]))
                queued = child.unaccounted + self._holding
                spool_bytes, db_up = snap[5], snap[6]
            stats = WriterStats(written, spooled, replayed, lost + self._lost, db_up)
        return stats, queued, spool_bytes

    def release(self) -> None:
        """Release the spool's lock (the last child has exited)."""
        self.spool.close()

    # -- the feeder thread -------------------------------------------------------------------
    def run(self) -> None:
        inbox = self.inbox
        stopping = False
        while not stopping:
            if inbox.wake.wait() and inbox.count < self.batch_size:
                inbox.hurry.wait(self.linger_s)
            inbox.hurry.clear()
            with self._lock:
                items, count, markers = inbox.take()
                self._holding = count
            try:
                if count:
                    self._send_records(items, count)
                del items
                for marker in markers:
                    if isinstance(marker, Stop):
                        stopping = True
                    else:
                        self._send_flush(marker)
            except Exception:  # never let the thread die: flush() would wait forever
                logger.exception("prediction log feeder: unexpected error")
        self._stop_child()

    def _send_records(self, items: list[Any], count: int) -> None:
        try:
            payload = marshal.dumps((count, items))
        except ValueError:  # a field of a plain type's subclass, say: set those records apart
            payload, count = self._marshal_each(items)
        child = self._ensure_child()
        if child is None:
            self._lose(count, "the writer process is not running")
            return
        with self._lock:
            child.sent += count
            self._holding = 0
        try:
            child.send(RECORDS, payload)
            self.sent += count
        except OSError as exc:
            self._child_failed(child, f"writing to it failed: {exc}")

    def _marshal_each(self, items: list[Any]) -> tuple[bytes, int]:
        kept: list[Any] = []
        count = 0
        for start, end, records in spans(items):
            fields = items[start:end]
            try:
                marshal.dumps(fields)
            except ValueError:
                what = f"record {fields[1]!r}" if records == 1 else f"{records} records"
                self._lose(records, f"{what} holds a value that marshal cannot write")
                continue
            kept += fields
            count += records
        return marshal.dumps((count, kept)), count

    def _send_flush(self, marker: Flush) -> None:
        child = self._ensure_child()
        if child is None:
            marker.finish(False)
            return
        fid = next(self._ids)
        with self._lock:
            if child.final:
                marker.finish(False)
                return
            child.pending[fid] = marker
        try:
            child.send(FLUSH, marshal.dumps(fid))
        except OSError as exc:
            self._child_failed(child, f"writing to it failed: {exc}")

    def _ensure_child(self) -> _Child | None:
        if self._child is not None:
            return self._child
        wait = self._started_at + RESPAWN_S - time.monotonic()
        if wait > 0:
            time.sleep(wait)  # a child that dies at once must not be restarted in a loop
        self._started_at = time.monotonic()
        try:
            child = _Child(self)
        except OSError as exc:
            logger.error("prediction log: cannot start the writer process: %s", exc)
            return None
        self._child = child
        return child

    def _stop_child(self) -> None:
        child = self._child
        if child is None:
            return
        try:
            child.send(STOP)
            child.stdin.close()
        except OSError:
            pass
        child.reader.join()
        try:
            child.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.proc.wait()

    def _child_failed(self, child: _Child, why: str) -> None:
        logger.error("prediction log: writer process %d failed: %s", child.proc.pid, why)
        child.proc.kill()  # the reply reader then sees the end and accounts for it

    # -- the reply reader, one thread per child ---------------------------------------------
    def _read_replies(self, child: _Child) -> None:
        while True:
            frame = read_frame(child.replies)
            if frame is None:
                break
            kind, payload = frame
            value = marshal.loads(payload)
            with self._lock:
                if kind == FLUSH:
                    fid, ok, child.snapshot = value
                    marker = child.pending.pop(fid, None)
                elif kind == STATS:
                    child.snapshot = value
                    continue
                elif kind == STOP:
                    child.snapshot = value
                    child.final = True
                    continue
                elif kind == ERROR:
                    logger.error("prediction log: the writer process could not start: %s", value)
                    continue
                else:
                    continue
            if marker is not None:
                marker.finish(ok)
        child.replies.close()
        code = child.proc.wait()
        self._retire(child, code)

    def _retire(self, child: _Child, code: int) -> None:
        with self._lock:
            lost = 0 if child.final else child.unaccounted
            child.final = True
            self._gone = [a + b for a, b in zip(self._gone, child.snapshot[:4])]
            self._last = child.snapshot
            self._lost += lost
            pending = list(child.pending.values())
            child.pending.clear()
            if self._child is child:
                self._child = None
        if lost:
            logger.error(
                "prediction log: writer process %d exited (status %s); %d record(s) it had not "
                "reported written may be lost",
                child.proc.pid,
                code,
                lost,
            )
        for marker in pending:
            marker.finish(False)

    def _lose(self, n: int, why: str) -> None:
        with self._lock:
            self._lost += n
            self._holding = max(0, self._holding - n)
        logger.error("prediction log: %d record(s) lost: %s", n, why)
