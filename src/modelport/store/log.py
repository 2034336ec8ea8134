"""The prediction log: record completed requests, take feedback, read them back for reports."""

from __future__ import annotations

import asyncio
import atexit
import getpass
import hashlib
import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .._deps import require
from ..errors import ConfigError
from .inbox import metadata_text
from .records import PredictionRecord

if TYPE_CHECKING:
    import numpy as np

    from .db import Database
    from .inbox import Inbox
    from .process import ProcessWriter
    from .spool import Spool
    from .writer import Writer

__all__ = ["Finished", "LogStats", "PredictionLog"]


class Finished(Protocol):
    """A finished request as :meth:`PredictionLog.record_prediction` reads it (the runtime's
    ``Prediction`` is one; the store does not import the runtime above it)."""

    @property
    def id(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def inputs(self) -> Mapping[str, np.ndarray]: ...
    @property
    def outputs(self) -> Mapping[str, np.ndarray]: ...
    @property
    def started(self) -> float: ...
    @property
    def duration(self) -> float: ...
    @property
    def status(self) -> str: ...
    @property
    def error(self) -> str | None: ...
    @property
    def metadata(self) -> Mapping[str, Any] | None: ...

logger = logging.getLogger("modelport.store")

DEFAULT_SPOOL_LIMIT = 256 * 1024 * 1024
DEFAULT_MAX_INPUT_BYTES = 64 * 1024
DEFAULT_QUEUE_SIZE = 100_000
WRITER_KINDS = ("process", "thread")
_LOSS_LOG_INTERVAL_S = 10.0


@dataclass(frozen=True)
class LogStats:
    """A snapshot of the log's counters.

    Accepted records end ``written`` (directly), ``spooled`` (then ``replayed``) or ``lost``
    (queue or spool full, or rejected by the database), or are still ``queued``; ``received``
    adds those up with ``sampled_out`` (exact once flushed: a batch being written is in none).
    """

    received: int
    sampled_out: int
    written: int
    spooled: int
    replayed: int
    lost: int
    queued: int
    spool_bytes: int
    db_up: bool


class PredictionLog:
    """Records predictions through a background writer; never blocks or raises in :meth:`record`.

    Open it with :meth:`open`; :meth:`close` (or ``await aclose()``) flushes and stops it.
    """

    def __init__(
        self,
        db: Database,
        writer: Writer | ProcessWriter,
        inbox: Inbox,
        *,
        sample_rate: float,
    ) -> None:
        self.db = db
        self.spool: Spool = writer.spool
        self._sample_rate = _check_rate(sample_rate)
        self._inbox = inbox
        self._writer = writer
        self._lock = threading.Lock()
        self._sampled_out = 0
        self._dropped = 0
        self._last_loss_log = 0.0
        self._closed = False
        self._writer.start()
        atexit.register(self.close)  # a forgotten close() must not lose what is queued

    @classmethod
    def open(
        cls,
        url: str | Path,
        *,
        spool_dir: str | Path | None = None,
        spool_limit_bytes: int = DEFAULT_SPOOL_LIMIT,
        sample_rate: float = 1.0,
        max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES,
        batch_size: int = 1000,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        linger_s: float = 0.1,
        writer: str = "process",
    ) -> PredictionLog:
        """Open the log at ``url`` (a file path, ``sqlite:///…`` or ``postgresql://…``).

        The database may be down: the log then spools to ``spool_dir`` (default: beside a
        SQLite file, or a per-URL folder in the temp directory) and retries in the background.
        ``max_input_bytes``: inputs whose JSON is larger (per request, averaged over a model
        call's requests) keep only shapes, dtypes and a hash.
        ``queue_size`` bounds the records waiting in memory; ``linger_s`` is how long the writer
        lets a batch gather.
        ``writer``: ``"process"`` (default) encodes and inserts rows in a child process, so the
        serving process only hands records over (about 2 µs each); ``"thread"`` does it all in
        a thread of this process (no child process; this process's CPU per record is about 3 µs
        when a model call hands over 16 requests, about 15 µs for lone records).
        """
        require("sqlalchemy", "store")
        from .db import Database

        _check_rate(sample_rate)
        for name, value in (
            ("max_input_bytes", max_input_bytes),
            ("batch_size", batch_size),
            ("queue_size", queue_size),
        ):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if linger_s < 0:
            raise ConfigError(f"linger_s must be >= 0, got {linger_s}")
        if writer not in WRITER_KINDS:
            raise ConfigError(f"writer must be one of {', '.join(WRITER_KINDS)}, got {writer!r}")
        from .inbox import Inbox

        inbox = Inbox(queue_size)
        db = Database(url)
        spool = _open_spool(db, spool_dir, spool_limit_bytes)
        try:
            db.ensure_schema()
        except Exception as exc:
            from .db import is_disconnect

            if not is_disconnect(exc):
                spool.close()
                raise
            logger.warning("prediction log: %s unreachable (%s); spooling", db.display_url, exc)
        worker: Writer | ProcessWriter
        if writer == "process":
            from .process import ProcessWriter

            worker = ProcessWriter(
                db.url,
                spool,
                inbox,
                batch_size=batch_size,
                max_input_bytes=max_input_bytes,
                linger_s=linger_s,
                queue_size=queue_size,
            )
        else:
            from .writer import Writer

            worker = Writer(
                db,
                spool,
                inbox,
                batch_size=batch_size,
                max_input_bytes=max_input_bytes,
                linger_s=linger_s,
            )
        return cls(db, worker, inbox, sample_rate=sample_rate)

    @property
    def sample_rate(self) -> float:
        """The share of requests recorded, 0 to 1; set it to change it while serving."""
        return self._sample_rate

    @sample_rate.setter
    def sample_rate(self, value: float) -> None:
        self._sample_rate = _check_rate(value)

    def record(self, record: PredictionRecord) -> bool:
        """Queue ``record`` for writing; False if it was sampled out or the queue is full.

        Never blocks and never raises.
        """
        r = record
        return self._put(
            r.record_id or None, str(r.request_id), str(r.model), str(r.version), r.time,
            r.latency_ms, str(r.status), r.error and str(r.error), r.metadata, r.inputs,
            r.outputs,
        )  # fmt: skip

    def record_prediction(self, p: Finished) -> bool:
        """:meth:`record` for the runtime's own ``Prediction`` (the server's failed requests;
        answered ones come a model call at a time, through :meth:`record_call`)."""
        return self._put(
            None, p.id, p.model, p.version, p.started + p.duration, p.duration * 1000.0,
            p.status, p.error, p.metadata, p.inputs, p.outputs if p.error is None else None,
        )  # fmt: skip

    def record_call(
        self,
        model: str,
        version: str,
        ts: float,
        contexts: Sequence[tuple[str, float, Mapping[str, Any] | None] | None],
        rows: Sequence[int],
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray],
    ) -> int:
        """Record the requests one model call answered at ``ts``; return how many were queued.

        ``contexts`` holds each request's ``(request_id, started, metadata)`` (None: not to be
        recorded), ``rows`` its rows, stacked in that order in ``inputs`` and ``outputs``.
        One hand-over for the whole call: what the server's batches cost the request path.
        Never blocks and never raises.
        """
        sample = self._sample_rate
        if sample <= 0.0:
            skipped = len(contexts) - contexts.count(None)
            with self._lock:
                self._sampled_out += skipped
            return 0
        ids: list[str | None] = []
        started: list[float] = []
        metas: list[str | None] = []
        sampled_out = 0
        for context in contexts:
            if context is None or (sample < 1.0 and random.random() >= sample):
                sampled_out += context is not None
                ids.append(None)
                started.append(0.0)
                metas.append(None)
                continue
            request_id, start, meta = context
            ids.append(request_id)
            started.append(start)
            metas.append(metadata_text(meta))
        if sampled_out:
            with self._lock:
                self._sampled_out += sampled_out
        wanted = len(ids) - ids.count(None)
        if not wanted:
            return 0
        if self._closed:
            return self._drop("the log is closed", wanted)
        try:
            queued = self._inbox.put_call(
                model, version, ts, ids, started, rows, metas, inputs, outputs
            )
        except Exception as exc:
            return self._drop(f"records could not be queued: {type(exc).__name__}: {exc}", wanted)
        if not queued:
            return self._drop(f"the write queue is full ({self._inbox.maxsize} records)", wanted)
        return queued

    def _put(self, *fields: Any) -> bool:
        if self._sample_rate < 1.0 and random.random() >= self._sample_rate:
            with self._lock:
                self._sampled_out += 1
            return False
        if self._closed:
            return self._drop("the log is closed")
        try:
            queued = self._inbox.put(*fields)
        except Exception as exc:
            return self._drop(f"a record could not be queued: {type(exc).__name__}: {exc}")
        if not queued:
            return self._drop(f"the write queue is full ({self._inbox.maxsize} records)")
        return True

    def feedback(self, request_id: str, value: Any, *, model: str | None = None) -> str:
        """Store ground truth for a logged request; return the model it was stored for.

        Raises :class:`InvalidInputError` for a malformed id or value (or an id logged by
        several models when ``model`` is not given), :class:`UnknownRequestError` when no
        prediction with that id was logged, :class:`StoreUnavailableError` when the database
        is down.
        """
        from .feedback import store_feedback

        return store_feedback(
            self.db,
            request_id,
            value,
            model=model,
            flush=lambda: self.flush(timeout=10.0),  # the prediction may still be queued
            why_unknown=f"never made, or not sampled at rate {self.sample_rate}",
        )

    async def afeedback(self, request_id: str, value: Any, *, model: str | None = None) -> str:
        """:meth:`feedback` off the event loop."""
        return await asyncio.to_thread(self.feedback, request_id, value, model=model)

    def feedback_many(
        self, items: Sequence[tuple[int, Any, Any]], *, model: str | None = None
    ) -> tuple[int, list[dict[str, Any]]]:
        """Store many ``(index, request_id, value)`` at once; return how many were stored and
        one ``{"index", "request_id", "error"}`` per refused item (the others are stored).

        Raises :class:`StoreUnavailableError` when the database is down (nothing stored).
        """
        from .feedback import store_feedback_many

        return store_feedback_many(
            self.db,
            items,
            model=model,
            flush=lambda: self.flush(timeout=10.0),
            why_unknown=f"never made, or not sampled at rate {self.sample_rate}",
        )

    async def afeedback_many(
        self, items: Sequence[tuple[int, Any, Any]], *, model: str | None = None
    ) -> tuple[int, list[dict[str, Any]]]:
        """:meth:`feedback_many` off the event loop."""
        return await asyncio.to_thread(self.feedback_many, items, model=model)

    def predictions(
        self, model: str, since: float | None = None, until: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """Logged predictions of ``model`` in ``[since, until)``, joined with their feedback."""
        from .feedback import read_predictions

        return read_predictions(self.db, model, since, until)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything recorded so far is in the database (spool replayed included);
        False if the database is still unreachable or ``timeout`` passed."""
        from .inbox import Flush

        if not self._writer.is_alive():
            return False
        marker = Flush()
        self._inbox.put_marker(marker)
        return marker.done.wait(timeout) and marker.ok

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush, stop the writer and release the spool; whatever is still spooled stays on
        disk for the next process that opens this log."""
        from .inbox import Stop

        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._inbox.put_marker(Stop())
        self._writer.join(timeout)
        if self._writer.is_alive():
            logger.error("prediction log: writer did not finish within %s s", timeout)
            return
        self._writer.release()
        self.db.dispose()

    async def aclose(self) -> None:
        """:meth:`close` off the event loop."""
        await asyncio.to_thread(self.close)

    def __enter__(self) -> PredictionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def writer_pid(self) -> int | None:
        """The writer process's id (``writer="process"``); None for a thread writer, or while
        a writer process that died is not restarted yet."""
        return getattr(self._writer, "pid", None)

    @property
    def stats(self) -> LogStats:
        """Current counters."""
        # The inbox first: a batch the writer takes in between is then counted twice, not missed.
        queued = self._inbox.count
        w, in_writer, spool_bytes = self._writer.counters()
        with self._lock:
            sampled_out, dropped = self._sampled_out, self._dropped
        queued += in_writer
        written, spooled, lost = w.written, w.spooled, w.lost
        return LogStats(
            received=sampled_out + dropped + written + spooled + lost + queued,
            sampled_out=sampled_out,
            written=written,
            spooled=spooled,
            replayed=w.replayed,
            lost=lost + dropped,
            queued=queued,
            spool_bytes=spool_bytes,
            db_up=w.db_up,
        )

    def _drop(self, why: str, records: int = 1) -> bool:
        """Count ``records`` lost (logged at most every few seconds); False."""
        now = time.monotonic()
        with self._lock:
            self._dropped += records
            log_it = now - self._last_loss_log >= _LOSS_LOG_INTERVAL_S
            if log_it:
                self._last_loss_log = now
        if log_it:
            logger.error("prediction log: record(s) lost: %s", why)
        return False


def _check_rate(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"sample rate must be between 0 and 1, got {value!r}")
    return float(value)


def _open_spool(db: Database, spool_dir: str | Path | None, limit: int) -> Spool:
    from .spool import Spool, SpoolBusyError

    if spool_dir is not None:
        return Spool(spool_dir, limit)
    if db.dialect == "sqlite" and db.engine.url.database not in (None, "", ":memory:"):
        base = Path(f"{db.engine.url.database}.spool")
    else:
        digest = hashlib.sha256(db.display_url.encode()).hexdigest()[:16]
        # One folder per user (0700): another user's spool in the shared temp folder is
        # neither writable nor any of this process's business.
        user = os.getuid() if hasattr(os, "getuid") else getpass.getuser()
        mine = Path(tempfile.gettempdir()) / f"modelport-spool-{user}"
        mine.mkdir(mode=0o700, exist_ok=True)
        base = mine / digest
    # Several worker processes may log to one database: each takes the first free folder,
    # which also picks up what a dead worker left behind.
    for k in range(64):
        try:
            return Spool(base if k == 0 else base.with_name(f"{base.name}-{k}"), limit)
        except SpoolBusyError:
            continue
    raise ConfigError(f"no free spool directory beside {base}; pass spool_dir")
