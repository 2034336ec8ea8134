"""Schema version 2 on real SQLite and PostgreSQL: a version 1 log upgrades in place and its
requests stay readable beside the new ones; replayed calls are stored once."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from modelport.store import PredictionLog, PredictionRecord, schema
from modelport.store import db as db_module
from modelport.store.db import Database
from modelport.store.rows import LEGACY_COLUMNS, requests_in
from modelport.store.spool import Spool


def legacy_row(i: int, ts: float, model: str = "iris") -> dict[str, object]:
    """A request as modelport wrote it with schema version 1 (and spools of it hold)."""
    return {
        "record_id": f"{i:032x}",
        "request_id": f"old-{i}",
        "model": model,
        "version": "1",
        "ts": ts,
        "inputs": json.dumps({"x": {"shape": [1, 2], "datatype": "<f4", "data": [i, 0.5]}}),
        "inputs_sha256": "0" * 64,
        "inputs_bytes": 60,
        "inputs_truncated": False,
        "outputs": json.dumps({"y": {"shape": [1], "datatype": "<i8", "data": [i % 3]}}),
        "latency_ms": 2.0,
        "status": "ok",
        "error": None,
        "metadata": "{}" if i else '{"user":"ana"}',
    }


def version_1_database(url: str, rows: list[dict[str, object]]) -> None:
    """A log database as version 1 left it: its tables, its version, its rows."""
    engine = sa.create_engine(Database(url).url)
    with engine.begin() as conn:
        schema.schema_version.create(conn)
        schema.MIGRATIONS[0](conn)
        conn.execute(sa.insert(schema.schema_version).values(version=1))
        conn.execute(sa.insert(schema.predictions), rows)
    engine.dispose()


def record(i: int, ts: float) -> PredictionRecord:
    return PredictionRecord(f"new-{i}", "iris", "2", {"x": np.array([[i, 1.5]], np.float32)},
                            {"y": np.array([i % 3])}, latency_ms=1.0, time=ts)  # fmt: skip


def test_a_version_1_log_upgrades_and_reads_old_and_new_requests_in_time_order(
    db_url: str, tmp_path: Path
) -> None:
    now = time.time()
    version_1_database(db_url, [legacy_row(i, now - 100 + 2 * i) for i in range(5)])
    with PredictionLog.open(db_url, spool_dir=tmp_path / "spool") as log:
        for i in range(5):
            assert log.record(record(i, now - 99 + 2 * i))  # between the old ones
        assert log.flush(timeout=30)
        log.feedback("old-3", 0)  # an old request takes feedback like a new one
        log.feedback("new-1", 1)
        rows = list(log.predictions("iris"))
        assert log.db.count("iris") == 10
        assert list(log.predictions("iris", since=now - 95, until=now - 91)) == rows[5:9]
    with sa.create_engine(Database(db_url).url).connect() as conn:
        assert conn.execute(sa.select(schema.schema_version.c.version)).scalar() == 2
    assert [r["request_id"] for r in rows] == [
        f"{age}-{i}" for i in range(5) for age in ("old", "new")
    ]
    by_id = {r["request_id"]: r for r in rows}
    assert by_id["old-3"]["feedback"] == 0 and by_id["new-1"]["feedback"] == 1
    assert by_id["old-0"]["metadata"] == {"user": "ana"} and by_id["new-0"]["metadata"] == {}
    assert json.loads(by_id["old-4"]["inputs"])["x"]["data"] == [4, 0.5]
    assert json.loads(by_id["new-4"]["inputs"])["x"]["data"] == [4.0, 1.5]


def test_a_spool_written_by_version_1_replays_into_its_table(
    db_url: str, tmp_path: Path
) -> None:
    """Records a version 1 process spooled while its database was down are not lost by an
    upgrade: the next process replays them into version 1's table."""
    spool = Spool(tmp_path / "spool", 10_000_000)
    assert spool.append([legacy_row(i, 1000.0 + i) for i in range(7)]) == []
    spool.close()
    with PredictionLog.open(db_url, spool_dir=tmp_path / "spool") as log:
        assert log.flush(timeout=30)
        assert log.stats.replayed == 7
        assert [r["request_id"] for r in log.predictions("iris")] == [f"old-{i}" for i in range(7)]
    assert not list((tmp_path / "spool").glob("seg-*"))
    assert set(LEGACY_COLUMNS) == set(legacy_row(0, 0.0))


@pytest.fixture(params=["sqlite", "sqlite before 3.35", "postgresql"])
def any_insert(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each database, and SQLite's way before 3.35 (no ``RETURNING``: a call a statement)."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    if request.param == "sqlite before 3.35":
        monkeypatch.setattr(db_module, "_RETURNING", False)
    return str(request.getfixturevalue("sqlite_url"))


def test_a_replayed_batch_stores_each_call_and_request_once(any_insert: str) -> None:
    from modelport.store.inbox import Call
    from modelport.store.rows import call_row

    x = ("x", "<f4", (3, 2), np.arange(6, dtype=np.float32).tobytes())
    y = ("y", "<i8", (3,), np.arange(3).tobytes())
    call = Call("m", "1", 50.0, ["a", "b", "c"], [49.0] * 3, [1, 2], [None] * 3, [x], [y])
    lone = Call("m", "1", 51.0, ["d"], [50.0], [3], [None], [x], [y])
    call = call._replace(rows=[1, 1, 1])
    flat = [*(call_row(call, 65536) or []), *(call_row(lone, 65536) or [])]
    assert requests_in(flat) == 4
    db = Database(any_insert)
    try:
        db.insert_calls(flat)
        db.insert_calls(flat)  # an ambiguous failure's batch, written again
        db.insert_calls(flat[: len(flat) // 2])
        with db.engine.connect() as conn:
            keys = conn.execute(sa.select(schema.requests.c.request_id, schema.requests.c.pos)
                                .order_by(schema.requests.c.request_id)).all()  # fmt: skip
        assert [tuple(k) for k in keys] == [("a", 0), ("b", 1), ("c", 2), ("d", 0)]
        assert db.count("m") == 4
        assert db.models_for_request("c") == ["m"] and db.models_for_request("zz") == []
        rows = list(db.prediction_rows("m"))
        assert [r["request_id"] for r in rows] == ["a", "b", "c", "d"]
        assert json.loads(rows[1]["inputs"])["x"]["data"] == [2.0, 3.0]
        assert json.loads(rows[3]["inputs"])["x"]["shape"] == [3, 2]  # a lone request: whole
    finally:
        db.dispose()


def test_a_spool_segment_the_database_refuses_is_set_aside_and_the_rest_replays(
    sqlite_url: str, tmp_path: Path
) -> None:
    """A segment holding a row that cannot be stored (here a call row missing its inputs) is
    renamed ``*.rejected`` and its requests counted lost; the next segment still replays and
    the log goes on logging."""
    first = Spool(tmp_path / "spool", 10_000_000)
    broken = {"call_id": "c" * 32, "model": "iris", "requests": 3, "request_ids": '["a","b","c"]'}
    assert first.append([broken]) == []
    first.close()
    second = Spool(tmp_path / "spool", 10_000_000)  # a later process: a segment of its own
    assert second.append([legacy_row(i, 1000.0 + i) for i in range(2)]) == []
    second.close()
    with PredictionLog.open(sqlite_url, spool_dir=tmp_path / "spool") as log:
        assert log.flush(timeout=30)
        assert (log.stats.lost, log.stats.replayed) == (3, 2)
        assert log.record(record(7, 2000.0))
        assert log.flush(timeout=30)
        ids = [r["request_id"] for r in log.predictions("iris")]
    assert ids == ["old-0", "old-1", "new-7"]
    assert len(list((tmp_path / "spool").glob("*.rejected"))) == 1
    assert not list((tmp_path / "spool").glob("seg-*.jsonl"))
