"""``python -m modelport.store.child REPLY_FD LOCK_FD``: the prediction-log writer process.

Started by :class:`~modelport.store.process.ProcessWriter`. Reads frames (:mod:`.pipe`) on
stdin, runs the same :class:`~modelport.store.writer.Writer` a thread-mode log runs, and
answers flushes and sends its counters (every :data:`PUSH_S` while they change) on
``REPLY_FD``. ``LOCK_FD`` is the spool directory's lock, held by
the server process and shared with each writer it starts. At the end of stdin (the server
exited, however it exited) it writes what it has and exits, so a killed server loses nothing
it handed over.
"""

from __future__ import annotations

import json
import logging
import marshal
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from .pipe import CONFIG, ERROR, FLUSH, RECORDS, STATS, STOP, Snapshot, read_frame, write_frame

logger = logging.getLogger("modelport.store")


PUSH_S = 0.5
"""How often the counters are sent to the server while they change (and at each flush)."""


class _Replies:
    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.lock = threading.Lock()

    def send(self, kind: bytes, value: Callable[[], Any]) -> None:
        """Send ``value()``, computed under the lock: counters arrive in the order taken."""
        try:
            with self.lock:
                write_frame(self.out, kind, marshal.dumps(value()))
        except OSError:
            pass  # the server is gone; the records are still written


def main(argv: list[str]) -> int:
    """Run the writer until stdin ends or a stop frame comes; the exit status."""
    # Ctrl-C and a group-wide SIGTERM are the server's to handle: it drains, then stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    replies = _Replies(os.fdopen(int(argv[0]), "wb", buffering=0))
    source = sys.stdin.buffer
    first = read_frame(source)
    if first is None or first[0] != CONFIG:
        return 2
    config = json.loads(first[1])
    from ..logs import configure_logging

    configure_logging("info", config["log_format"])  # the server's format and handlers, then
    logging.getLogger("modelport").setLevel(config["log_level"])  # its level, as a number
    try:
        from .db import Database
        from .inbox import Flush, Inbox, Stop
        from .spool import Spool
        from .writer import Writer

        db = Database(config["url"])
        spool = Spool(
            config["spool_dir"], config["spool_limit_bytes"], lock=os.fdopen(int(argv[1]), "ab")
        )
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"
        replies.send(ERROR, lambda: why)
        return 1
    inbox = Inbox(config["queue_size"])
    writer = Writer(
        db,
        spool,
        inbox,
        batch_size=config["batch_size"],
        max_input_bytes=config["max_input_bytes"],
        linger_s=config["linger_s"],
        yield_every=None,  # nothing here waits for the GIL but the frame reader, which can wait
    )
    received = 0

    def snapshot() -> Snapshot:
        s = writer.stats
        queued = max(0, received - s.written - s.spooled - s.lost)
        return (s.written, s.spooled, s.replayed, s.lost, queued, spool.size, s.db_up)

    def flushed(fid: int) -> Callable[[Flush], None]:
        return lambda marker: replies.send(FLUSH, lambda: (fid, marker.ok, snapshot()))

    stopped = threading.Event()

    sent: list[Snapshot | None] = [None]

    def taken() -> Snapshot:
        sent[0] = current = snapshot()
        return current

    def push() -> None:
        while not stopped.wait(PUSH_S):
            if snapshot() != sent[0]:
                replies.send(STATS, taken)

    writer.start()
    threading.Thread(target=push, name="modelport-log-counters", daemon=True).start()
    while True:
        frame = read_frame(source)
        if frame is None:
            break
        kind, payload = frame
        if kind == RECORDS:
            count, fields = marshal.loads(payload)
            # The server's inbox bounds what is in flight; this one only waits for the writer.
            while not inbox.extend(fields, count):
                time.sleep(0.005)
            received += count
        elif kind == FLUSH:
            fid = marshal.loads(payload)
            inbox.put_marker(Flush(then=flushed(fid)))
        elif kind == STOP:
            break
    inbox.put_marker(Stop())
    writer.join()
    stopped.set()
    writer.release()
    db.dispose()
    replies.send(STOP, snapshot)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
