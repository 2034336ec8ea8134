"""Feedback: ground truth joined with logged predictions; bad input gets clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from modelport.errors import InvalidInputError, StoreUnavailableError, UnknownRequestError
from modelport.store import PredictionLog
from tests.store.pg import PostgresServer
from tests.store.test_log import make_record


def test_feedback_is_joined_with_its_prediction(db_url: str, tmp_path: Path) -> None:
    with PredictionLog.open(db_url, spool_dir=tmp_path / "spool") as log:
        for i in range(4):
            log.record(make_record(i))
        # No flush: feedback must find a prediction that is still queued.
        assert log.feedback("req-1", 2) == "iris"
        log.feedback("req-2", "setosa", model="iris")
        log.feedback("req-3", [0.5])
        log.feedback("req-1", 1)  # replaces the earlier value
        rows = {r["request_id"]: r["feedback"] for r in log.predictions("iris")}
    assert rows == {"req-0": None, "req-1": 1, "req-2": "setosa", "req-3": [0.5]}


def test_unknown_request_id(db_url: str, tmp_path: Path) -> None:
    with PredictionLog.open(db_url, spool_dir=tmp_path / "spool") as log:
        log.record(make_record(0))
        with pytest.raises(
            UnknownRequestError, match="no logged prediction with request id 'nope'"
        ):
            log.feedback("nope", 1)
        with pytest.raises(LookupError, match="for model 'other'"):
            log.feedback("req-0", 1, model="other")
        assert log.feedback("req-0", 1) == "iris"  # still working


def test_ambiguous_request_id_needs_the_model(sqlite_url: str, tmp_path: Path) -> None:
    with PredictionLog.open(sqlite_url, spool_dir=tmp_path / "spool") as log:
        log.record(make_record(0, model="a"))
        log.record(make_record(0, model="b"))
        with pytest.raises(InvalidInputError, match=r"several models \(a, b\); name the model"):
            log.feedback("req-0", 1)
        assert log.feedback("req-0", 1, model="b") == "b"


@pytest.mark.parametrize(
    ("request_id", "value", "message"),
    [
        ("", 1, "request id must be a non-empty string"),
        (None, 1, "request id must be a non-empty string"),
        ("x" * 300, 1, "at most 256 allowed"),
        ("req-0", None, "must be a number, a label string or a flat list of those, got NoneType"),
        ("req-0", float("nan"), "must be a finite number, got nan"),
        ("req-0", float("inf"), "must be a finite number, got inf"),
        ("req-0", {"label": 1}, "got dict"),
        ("req-0", [[1, 2]], r"feedback value\[0\] must be .* got nested list"),
        ("req-0", [], "empty list"),
        ("req-0", "  ", "empty string"),
        ("req-0", "y" * 2000, "label of 2000 characters"),
    ],
)
def test_malformed_feedback(
    sqlite_url: str, tmp_path: Path, request_id: Any, value: Any, message: str
) -> None:
    with PredictionLog.open(sqlite_url, spool_dir=tmp_path / "spool") as log:
        log.record(make_record(0))
        with pytest.raises(InvalidInputError, match=message):
            log.feedback(request_id, value)
        assert log.feedback("req-0", 1) == "iris"


@pytest.mark.parametrize(
    ("store", "stored"),
    [
        (lambda log: log.feedback("req-0", 1), "iris"),
        (lambda log: log.feedback_many([(0, "req-0", 1)]), (1, [])),  # bulk: nothing stored
    ],
    ids=["one", "bulk"],
)
def test_feedback_while_the_database_is_down(
    postgres: PostgresServer, pg_url: str, tmp_path: Path, store: Any, stored: Any
) -> None:
    with PredictionLog.open(pg_url, spool_dir=tmp_path / "spool") as log:
        log.record(make_record(0))
        assert log.flush(timeout=30)
        postgres.stop()
        try:
            with pytest.raises(StoreUnavailableError, match="is unreachable"):
                store(log)
        finally:
            postgres.start()
        assert store(log) == stored


async def _afeedback(log: PredictionLog) -> str:
    return await log.afeedback("req-0", 2.5)


def test_async_feedback(sqlite_url: str, tmp_path: Path) -> None:
    import asyncio

    with PredictionLog.open(sqlite_url, spool_dir=tmp_path / "spool") as log:
        log.record(make_record(0))
        assert asyncio.run(_afeedback(log)) == "iris"
        assert [r["feedback"] for r in log.predictions("iris")] == [2.5]


def test_bulk_feedback_stores_good_items_and_reports_each_bad_one(
    db_url: str, tmp_path: Path
) -> None:
    with PredictionLog.open(db_url, spool_dir=tmp_path / "spool") as log:
        for i in range(600):  # more ids than one lookup statement takes
            log.record(make_record(i))
        log.record(make_record(0, model="other"))  # req-0 is now ambiguous
        # No flush: the bulk call must find predictions that are still queued.
        items: list[tuple[int, Any, Any]] = [(i, f"req-{i}", i % 3) for i in range(1, 600)]
        items += [
            (600, "req-0", 1),
            (601, "nope", 1),
            (602, "req-5", None),
            (603, "", 1),
        ]
        stored, errors = log.feedback_many(items)
        assert stored == 599
        refused = sorted((e["index"], e["request_id"]) for e in errors)
        assert refused == [(600, "req-0"), (601, "nope"), (602, "req-5"), (603, "")]
        messages = {e["index"]: e["error"] for e in errors}
        assert "several models (iris, other); name the model" in messages[600]
        assert "no logged prediction with request id 'nope'" in messages[601]
        assert "must be a number, a label" in messages[602]
        assert "must be a non-empty string" in messages[603]
        assert log.feedback_many([(0, "req-0", 2)], model="other") == (1, [])
        rows = {r["request_id"]: r["feedback"] for r in log.predictions("iris")}
    assert rows == {"req-0": None, **{f"req-{i}": i % 3 for i in range(1, 600)}}

