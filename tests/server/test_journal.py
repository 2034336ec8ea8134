"""The admin journal: workers apply every change in one order, callers get their own result.

Each :class:`AdminJournal` here stands for one worker process (its own state, its own end of
the same real file), all on one event loop.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from modelport.errors import ArtifactError, InvalidInputError
from modelport.server.journal import AdminJournal


class Worker:
    """A worker's state: the changes it applied, in order; ``"bad"`` values are refused
    everywhere, ``"broken-<name>"`` fails only on the worker called ``name``."""

    def __init__(self, path: Path, name: str) -> None:
        self.name = name
        self.applied: list[Any] = []
        self.journal = AdminJournal(path, self.apply)

    async def apply(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)  # let other tasks run between changes, as real ones do
        value = args["value"]
        if value == "bad":
            raise InvalidInputError("bad value")
        if value == f"broken-{self.name}":
            raise ArtifactError(f"cannot load here ({self.name})")
        self.applied.append((op, value))
        return {"worker": self.name, "applied": len(self.applied)}


async def _settle(workers: list[Worker], count: int) -> None:
    for _ in range(500):
        if all(len(w.applied) >= count for w in workers):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(
        f"not every worker applied {count} changes: {[w.applied for w in workers]}"
    )


def test_racing_changes_are_applied_in_one_order_everywhere(tmp_path: Path) -> None:
    async def main() -> None:
        workers = [Worker(tmp_path / "journal.jsonl", n) for n in ("a", "b", "c")]
        for w in workers:
            w.journal.start()
        try:
            calls = [
                w.journal.submit("set", {"value": f"{w.name}{k}"})
                for k in range(10)
                for w in workers
            ]
            results = await asyncio.gather(*calls)
            await _settle(workers, 30)
        finally:
            for w in workers:
                await w.journal.stop()
        assert workers[0].applied == workers[1].applied == workers[2].applied
        assert sorted(v for _, v in workers[0].applied) == sorted(
            f"{n}{k}" for n in "abc" for k in range(10)
        )
        # each caller got its own worker's result
        assert [r["worker"] for r in results] == ["a", "b", "c"] * 10

    asyncio.run(main())


def test_a_refusal_reaches_its_caller_and_a_failure_elsewhere_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        a, b = Worker(tmp_path / "j", "a"), Worker(tmp_path / "j", "b")
        a.journal.start()
        b.journal.start()
        try:
            with pytest.raises(InvalidInputError, match="bad value"):
                await a.journal.submit("set", {"value": "bad"})
            assert await a.journal.submit("set", {"value": "broken-b"}) == {
                "worker": "a",
                "applied": 1,
            }
            assert await b.journal.submit("set", {"value": "last"}) == {"worker": "b", "applied": 1}
            await _settle([a], 2)
        finally:
            await a.journal.stop()
            await b.journal.stop()
        assert a.applied == [("set", "broken-b"), ("set", "last")] and b.applied == [
            ("set", "last")
        ]

    with caplog.at_level(logging.INFO, logger="modelport.server"):
        asyncio.run(main())
    seen = [(r.levelname, r.getMessage(), getattr(r, "value", None)) for r in caplog.records]
    assert ("INFO", "admin change from another worker refused here", "bad") in seen
    assert ("ERROR", "admin change from another worker failed here", "broken-b") in seen
    failed = next(r for r in caplog.records if r.levelname == "ERROR")
    assert "cannot load here (b)" in failed.error  # type: ignore[attr-defined]


def test_a_late_worker_replays_the_journal_and_skips_a_torn_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journal.jsonl"

    async def main() -> None:
        early = Worker(path, "early")
        early.journal.start()
        try:
            for k in range(3):
                await early.journal.submit("set", {"value": k})
            with path.open("ab") as f:
                f.write(b"not json\n")
            late = Worker(path, "late")
            late.journal.start()
            try:
                await late.journal.submit("set", {"value": "after"})
                await _settle([early], 4)
            finally:
                await late.journal.stop()
        finally:
            await early.journal.stop()
        assert (
            late.applied == early.applied == [("set", 0), ("set", 1), ("set", 2), ("set", "after")]
        )

    with caplog.at_level(logging.INFO, logger="modelport.server"):
        asyncio.run(main())
    assert any("not JSON" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")


def test_stopping_fails_the_changes_still_waiting(tmp_path: Path) -> None:
    async def main() -> None:
        w = Worker(tmp_path / "j", "a")  # never started: nothing applies its change
        pending = asyncio.ensure_future(w.journal.submit("set", {"value": 1}))
        await asyncio.sleep(0.05)
        await w.journal.stop()
        with pytest.raises(RuntimeError, match="shutting down"):
            await pending

    asyncio.run(main())
