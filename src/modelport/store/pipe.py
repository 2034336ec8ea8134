"""The wire between a server process and its prediction-log writer process.

Frames are a kind byte, a little-endian payload length and the payload (:mod:`marshal` data,
JSON for the configuration): cheap to write on the server's side, and nothing a reader must
trust beyond the process that spawned it.
"""

from __future__ import annotations

import struct
from typing import IO

__all__ = [
    "CONFIG",
    "ERROR",
    "FLUSH",
    "RECORDS",
    "STATS",
    "STOP",
    "Snapshot",
    "read_frame",
    "write_frame",
]

CONFIG = b"C"
"""server → writer, first frame: the configuration as JSON."""
RECORDS = b"R"
"""server → writer: ``(count, fields)`` in the :mod:`.inbox` layout."""
FLUSH = b"F"
"""server → writer: a flush id; writer → server: ``(id, ok, snapshot)`` once flushed."""
STATS = b"S"
"""writer → server: a snapshot, sent every so often while the counters change."""
STOP = b"X"
"""server → writer: write everything and exit; writer → server: the final snapshot."""
ERROR = b"E"
"""writer → server: why the writer could not start."""

Snapshot = tuple[int, int, int, int, int, int, bool]
"""The writer's counters: ``(written, spooled, replayed, lost, queued, spool_bytes, db_up)``."""

_HEADER = struct.Struct("<cQ")


def write_frame(out: IO[bytes], kind: bytes, payload: bytes = b"") -> None:
    """Write one frame (blocks while the pipe is full)."""
    for part in (_HEADER.pack(kind, len(payload)), payload):
        data = memoryview(part)
        while data:
            written = out.write(data)
            data = data[written or 0 :]


def read_frame(source: IO[bytes]) -> tuple[bytes, bytes] | None:
    """The next ``(kind, payload)``; None at the end of the stream (or a cut-off frame)."""
    header = source.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    kind, size = _HEADER.unpack(header)
    payload = source.read(size) if size else b""
    if len(payload) < size:
        return None
    return kind, payload
