"""Admin changes made once for all the worker processes of one server (``--workers N``).

The kernel hands each connection to one worker, so an admin call reaches one process. With
several workers, a change (pin, canary, rollback, the log's sample rate, …) is not applied
by the worker that takes the call but appended to a journal file the supervisor made for this
server, and every worker, the one that took the call included, applies the journal's changes
in the journal's order. So all of them go through the same sequence and end in the same state,
even when two calls race; the caller's answer is its worker's result of the change (an error
included), given once that worker has applied it. The others apply it within :data:`POLL_S`
(plus the time a version takes to load). A change another worker refuses as the caller's
worker did (an unknown version: a 4xx) is logged there at INFO; one that fails there only (a
version that does not load in that process, say) at ERROR, and that worker stays apart.

A worker that starts after others replays the journal from its start. The journal is a file
of JSON lines, appended under an exclusive ``flock`` so lines never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .errors import status_for

__all__ = ["POLL_S", "AdminJournal"]

log = logging.getLogger("modelport.server")

POLL_S = 0.1
"""How often each worker looks for changes the others appended."""

Apply = Callable[[str, dict[str, Any]], Awaitable[Any]]
"""Applies one change ``(op, args)`` in this process and returns its result."""


class AdminJournal:
    """One worker's end of the journal at ``path``: :meth:`submit` a change, and (once
    :meth:`start` ed on the event loop) apply every change in the journal with ``apply``."""

    def __init__(self, path: str | Path, apply: Apply) -> None:
        self.path = Path(path)
        self._apply = apply
        self.pid = os.getpid()
        self._origin = f"{self.pid}-{os.urandom(4).hex()}"
        self._ids = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pending = b""
        self._reader = open(self.path, "ab+")  # noqa: SIM115 (kept open, closed in stop())
        self._reader.seek(0)

    def start(self) -> None:
        """Follow the journal from its start on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="admin-journal")

    async def stop(self) -> None:
        """Stop following; changes submitted and not yet applied fail."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(RuntimeError("the server is shutting down"))
        self._waiting.clear()
        self._reader.close()

    async def submit(self, op: str, args: dict[str, Any]) -> Any:
        """Append a change and return this worker's result of applying it (or raise its
        error), once every change before it in the journal is applied here too."""
        change_id = f"{self._origin}-{next(self._ids)}"
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[change_id] = future
        line = json.dumps({"id": change_id, "op": op, "args": args}) + "\n"
        try:
            self._append(line.encode())
        except OSError:
            del self._waiting[change_id]
            raise
        self._wake.set()
        return await future

    def _append(self, line: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line)  # a line of a few hundred bytes: one write
        finally:
            os.close(fd)  # releases the lock

    def _new_changes(self) -> list[dict[str, Any]]:
        data = self._pending + self._reader.read()
        *lines, self._pending = data.split(b"\n")
        changes = []
        for line in lines:
            try:
                changes.append(json.loads(line))
            except ValueError:
                log.error("admin journal: skipping a line that is not JSON: %r", line[:200])
        return changes

    async def _follow(self) -> None:
        while True:
            try:
                for change in self._new_changes():
                    await self._run(change)
            except OSError as exc:  # an unreadable journal: say so, keep serving, try again
                log.error("admin journal %s: %s", self.path, exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_S)
            self._wake.clear()

    async def _run(self, change: dict[str, Any]) -> None:
        future = self._waiting.pop(str(change.get("id")), None)
        op, args = change.get("op", "?"), change.get("args", {})
        try:
            result = await self._apply(op, args)
        except Exception as exc:
            if future is not None:
                if not future.done():  # done: the caller went away
                    future.set_exception(exc)
                return
            # A refusal (a 4xx: unknown version, nothing to promote) is the same in every
            # worker and its caller was told; anything else leaves this worker apart.
            refused = status_for(exc).http < 500
            log.log(
                logging.INFO if refused else logging.ERROR,
                "admin change from another worker %s here",
                "refused" if refused else "failed",
                extra={
                    "op": op,
                    **args,
                    "error": f"{type(exc).__name__}: {exc}",
                    "worker": self.pid,
                },
            )
            return
        if future is not None:
            if not future.done():
                future.set_result(result)
        else:
            log.info(
                "admin change from another worker applied",
                extra={"op": op, **args, "worker": self.pid},
            )
