"""A bounded on-disk spool of rows waiting for the database to come back.

Rows are appended as JSON lines to numbered segment files, flushed and fsynced per batch, and
replayed oldest segment first; a segment is deleted only after the database committed its rows.
Past ``limit_bytes`` rows are refused and the caller counts them as lost. A spool left behind
by a process that died is replayed by the next one that opens the same directory; a lock file
keeps two live processes out of one directory.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import IO, Any

from ..errors import ConfigError

__all__ = ["Spool", "SpoolBusyError"]

logger = logging.getLogger("modelport.store")

SEGMENT_BYTES = 4 * 1024 * 1024
"""A segment is closed past this size, so one replay step holds a bounded number of rows."""


class SpoolBusyError(ConfigError):
    """Another live process holds the spool directory."""


class Spool:
    """Segments of JSON-lines rows under ``directory``, at most ``limit_bytes`` in all."""

    def __init__(
        self, directory: str | Path, limit_bytes: int, *, lock: IO[bytes] | None = None
    ) -> None:
        """``lock``: the directory's lock file, already locked (a writer process gets the one
        its server holds)."""
        if limit_bytes < 0:
            raise ConfigError(f"spool limit must be >= 0 bytes, got {limit_bytes}")
        self.directory = Path(directory)
        self.limit_bytes = limit_bytes
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock = lock if lock is not None else _lock(self.directory / ".lock")
        except OSError as exc:
            raise ConfigError(f"cannot use spool directory {self.directory}: {exc}") from exc
        self._segments = sorted(self.directory.glob("seg-*.jsonl"))
        self.size = sum(p.stat().st_size for p in self._segments)
        self._seq = int(self._segments[-1].stem[4:]) if self._segments else 0
        self._current: IO[str] | None = None
        self._current_bytes = 0

    @property
    def lock_fd(self) -> int:
        """The lock file's descriptor, to share the lock with a writer process."""
        return self._lock.fileno()

    def __len__(self) -> int:
        """Number of segment files holding rows."""
        return len(self._segments)

    def append(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Write as many of ``rows`` as fit under the bound; return those that did not fit."""
        lines = []
        refused = []
        for row in rows:
            line = json.dumps(row, separators=(",", ":"), default=str) + "\n"
            size = len(line.encode())
            if self.size + size > self.limit_bytes:
                refused.append(row)
                continue
            self.size += size
            lines.append(line)
        if lines:
            out = self._open_current()
            out.write("".join(lines))
            out.flush()
            os.fsync(out.fileno())
            self._current_bytes += sum(len(line.encode()) for line in lines)
            if self._current_bytes >= SEGMENT_BYTES:
                self._close_current()
        return refused

    def oldest(self) -> tuple[Path, list[dict[str, Any]]] | None:
        """The oldest segment and its rows (closing the one being written first), or None.

        Lines that do not parse (a crash mid-write) are logged and skipped.
        """
        if not self._segments:
            return None
        if self._current is not None and len(self._segments) == 1:
            self._close_current()
        path = self._segments[0]
        rows = []
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    logger.error("prediction log spool: skipping unreadable line %d of %s", n, path)
        return path, rows

    def remove(self, path: Path, keep_as: Path | None = None) -> None:
        """Delete a replayed segment (or rename it to ``keep_as``)."""
        if self._current is not None and self._segments and self._segments[-1] == path:
            self._close_current()
        self.size -= path.stat().st_size
        if keep_as is None:
            path.unlink()
        else:
            path.rename(keep_as)
        self._segments.remove(path)

    def set_aside(self, path: Path) -> None:
        """Rename a segment the database refuses to ``*.rejected``, out of the bound and replay."""
        self.remove(path, keep_as=path.with_suffix(".rejected"))

    def close(self) -> None:
        """Close the open segment and release the directory lock; rows stay for the next run."""
        self._close_current()
        self._lock.close()

    def _open_current(self) -> IO[str]:
        if self._current is None:
            self._seq += 1
            path = self.directory / f"seg-{self._seq:012d}.jsonl"
            self._current = path.open("a", encoding="utf-8")
            self._current_bytes = 0
            self._segments.append(path)
        return self._current

    def _close_current(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None


def _lock(path: Path) -> IO[bytes]:
    handle = path.open("ab")
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks, one process assumed
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        raise SpoolBusyError(
            f"spool directory {path.parent} is in use by another process; give each process "
            "its own spool directory"
        ) from exc
    return handle
