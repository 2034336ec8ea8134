"""The prediction log on real SQLite and PostgreSQL: concurrency, outages, the spool bound."""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from modelport.errors import ConfigError
from modelport.store import PredictionLog, PredictionRecord, schema
from modelport.store.schema import schema_version
from modelport.store.spool import Spool
from tests.store.pg import PostgresServer, _free_port

OpenLog = Callable[..., PredictionLog]


@pytest.fixture(params=["process", "thread"])
def open_log(request: pytest.FixtureRequest) -> OpenLog:
    """``PredictionLog.open`` with each writer: a child process, and a thread."""
    return functools.partial(PredictionLog.open, writer=request.param)


def make_record(i: int, model: str = "iris", **kw: object) -> PredictionRecord:
    x = np.array([[i, i + 0.5, -i, 1.0]], dtype=np.float32)
    y = np.array([[0.1, 0.7, 0.2]], dtype=np.float32)
    return PredictionRecord(
        request_id=f"req-{i}",
        model=model,
        version="1",
        inputs={"x": x},
        outputs={"y": y},
        latency_ms=1.5,
        **kw,  # type: ignore[arg-type]
    )


def logged_ids(url: str, log: PredictionLog, model: str = "iris") -> list[str]:
    return [row["request_id"] for row in log.predictions(model)]


def hammer(log: PredictionLog, threads: int, per_thread: int, offset: int = 0) -> None:
    def work(t: int) -> None:
        for k in range(per_thread):
            assert log.record(make_record(offset + t * per_thread + k))

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()


def test_every_record_present_after_concurrent_logging(
    db_url: str, tmp_path: Path, open_log: OpenLog
) -> None:
    with open_log(db_url, spool_dir=tmp_path / "spool", batch_size=64) as log:
        hammer(log, threads=16, per_thread=150)
        assert log.flush(timeout=60)
        ids = logged_ids(db_url, log)
        stats = log.stats
    assert sorted(ids) == sorted(f"req-{i}" for i in range(2400))
    assert (stats.received, stats.written, stats.lost, stats.spooled) == (2400, 2400, 0, 0)


def test_record_round_trips_inputs_outputs_and_metadata(
    db_url: str, tmp_path: Path, open_log: OpenLog
) -> None:
    big = np.arange(5000, dtype=np.int64).reshape(1, 5000)
    with open_log(db_url, spool_dir=tmp_path / "spool", max_input_bytes=1000) as log:
        log.record(make_record(3, metadata={"user": "ana", "tags": ["a"]}, status="ok"))
        log.record(
            PredictionRecord(
                request_id="big",
                model="iris",
                version="2",
                inputs={"ids": big},
                outputs=None,
                status="PredictionError",
                error="boom",
                latency_ms=9.0,
            )
        )
        assert log.flush(timeout=30)
        engine = sa.create_engine(log.db.url)
    with engine.connect() as conn:  # each lone record is a call of one request
        rows = {
            json.loads(r.request_ids)[0]: r
            for r in conn.execute(sa.text("SELECT * FROM modelport_calls")).mappings()
        }
    engine.dispose()
    small = rows["req-3"]
    assert (small["requests"], small["latency_ms"]) == (1, "[1.5]")
    inputs = json.loads(small["inputs"])
    assert inputs["x"]["shape"] == [1, 4] and inputs["x"]["data"] == [3.0, 3.5, -3.0, 1.0]
    assert json.loads(small["outputs"])["y"]["shape"] == [1, 3]
    assert json.loads(small["metadata"]) == [{"user": "ana", "tags": ["a"]}]
    assert not small["inputs_truncated"]
    large = rows["big"]
    assert large["inputs_truncated"] and large["inputs_bytes"] > 1000
    assert json.loads(large["inputs"]) == {"ids": {"shape": [1, 5000], "datatype": "<i8"}}
    assert len(large["inputs_sha256"]) == 64
    assert (large["status"], large["error"], large["outputs"]) == ("PredictionError", "boom", None)


def test_failed_requests_among_answered_ones_keep_their_errors(
    db_url: str, tmp_path: Path, open_log: OpenLog
) -> None:
    """Inserts of answered requests leave the error column to its default, those with a
    failure bind it: a batch of several statements mixing both stores each row as it came."""
    failed = {150, 151, 199}  # rows 0-149: statements without a failed request
    with open_log(db_url, spool_dir=tmp_path / "spool") as log:
        for k in range(250):
            if k in failed:
                record = make_record(k, status="PredictionError", error=f"boom {k}")
                record.outputs = None
            else:
                record = make_record(k)
            assert log.record(record)
        assert log.flush(timeout=30)
        engine = sa.create_engine(log.db.url)
    c = schema.calls
    with engine.connect() as conn:
        rows = conn.execute(sa.select(c.c.request_ids, c.c.status, c.c.error, c.c.outputs,
                                      c.c.inputs_truncated)).all()  # fmt: skip
    engine.dispose()
    assert len(rows) == 250
    for request_ids, status, error, outputs, truncated in rows:
        (request_id,) = json.loads(request_ids)
        k = int(request_id.removeprefix("req-"))
        assert truncated is False
        if k in failed:
            assert (status, error, outputs) == ("PredictionError", f"boom {k}", None)
        else:
            assert (status, error) == ("ok", None) and json.loads(outputs)["y"]["shape"] == [1, 3]


def test_runtime_predictions_with_several_tensors_round_trip(
    sqlite_url: str, tmp_path: Path, open_log: OpenLog
) -> None:
    """The runtime's path (record_prediction): records of different tensor counts, failed ones
    and flush markers interleaved in the inbox come out whole and in order."""
    from modelport.runtime.runner import Prediction

    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.array([b"hi", b"yo"], dtype=object)
    with open_log(sqlite_url, spool_dir=tmp_path / "spool") as log:
        for i in range(5):
            ins = {"a": a + i, "b": b} if i % 2 else {"a": a + i}
            outs = {"y": a[:, :1] * i, "z": np.array([i, -i])}
            error = "boom" if i == 3 else None
            p = Prediction(f"p{i}", "multi", "1", ins, outs, 100.0 + i, 0.002, "ok", error,
                           {"i": i} if i == 4 else None)  # fmt: skip
            assert log.record_prediction(p)
            if i == 2:
                assert log.flush(timeout=30)
        assert log.flush(timeout=30)
        rows = {r["request_id"]: r for r in log.predictions("multi")}
    assert list(rows) == [f"p{i}" for i in range(5)]
    one = json.loads(rows["p1"]["inputs"])
    assert one["a"] == {"shape": [2, 3], "datatype": "<f4", "data": [1, 2, 3, 4, 5, 6]}
    assert one["b"]["data"] == ["hi", "yo"]
    assert list(json.loads(rows["p2"]["inputs"])) == ["a"]
    assert json.loads(rows["p2"]["outputs"])["z"]["data"] == [2, -2]
    assert rows["p3"]["outputs"] is None
    assert rows["p4"]["metadata"] == {"i": 4} and rows["p0"]["metadata"] == {}
    assert rows["p4"]["ts"] == pytest.approx(104.002) and rows["p4"]["latency_ms"] == 2.0


def test_a_model_calls_requests_are_split_back_into_their_records(
    sqlite_url: str, tmp_path: Path, open_log: OpenLog
) -> None:
    """``record_call``: one hand-over for a batch; each request comes out with its own rows,
    metadata and latency; requests without a context (their caller gone) are not recorded."""
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    words = np.array(["a", "b", "c", "d", "e", "f"], dtype=object)
    y = np.arange(6, dtype=np.int64) * 10
    contexts = [("c0", 99.0, {"user": "ana"}), None, ("c2", 99.5, None)]
    with open_log(sqlite_url, spool_dir=tmp_path / "spool") as log:
        queued = log.record_call(
            "batched", "3", 100.0, contexts, [2, 1, 3], {"x": x, "w": words}, {"y": y}
        )
        assert queued == 2
        # A lone request's call is kept whole: its outputs need not have its input rows.
        one = log.record_call("batched", "3", 101.0, [("c3", 100.0, None)], [1],
                              {"x": x[:1], "w": words[:1]}, {"y": np.float32(7.5)})  # fmt: skip
        assert one == 1
        assert log.flush(timeout=30)
        rows = {r["request_id"]: r for r in log.predictions("batched")}
        stats = log.stats
    assert list(rows) == ["c0", "c2", "c3"]
    c0, c2, c3 = (json.loads(rows[k]["inputs"]) for k in ("c0", "c2", "c3"))
    assert c0["x"] == {"shape": [2, 2], "datatype": "<f4", "data": [0, 1, 2, 3]}
    assert c0["w"]["data"] == ["a", "b"] and c2["w"]["data"] == ["d", "e", "f"]
    assert c2["x"] == {"shape": [3, 2], "datatype": "<f4", "data": list(range(6, 12))}
    assert json.loads(rows["c0"]["outputs"])["y"]["data"] == [0, 10]
    assert json.loads(rows["c2"]["outputs"])["y"] == {
        "shape": [3], "datatype": "<i8", "data": [30, 40, 50]
    }  # fmt: skip
    assert json.loads(rows["c3"]["outputs"])["y"] == {"shape": [], "datatype": "<f4", "data": [7.5]}
    assert c3["x"]["shape"] == [1, 2]
    assert rows["c0"]["metadata"] == {"user": "ana"} and rows["c2"]["metadata"] == {}
    assert rows["c0"]["latency_ms"] == pytest.approx(1000.0)
    assert rows["c2"]["latency_ms"] == pytest.approx(500.0) and rows["c2"]["ts"] == 100.0
    assert all(r["status"] == "ok" and r["version"] == "3" for r in rows.values())
    assert (stats.received, stats.written, stats.lost) == (3, 3, 0)


def test_a_call_whose_rows_do_not_add_up_is_counted_lost(
    sqlite_url: str, tmp_path: Path, open_log: OpenLog
) -> None:
    with open_log(sqlite_url, spool_dir=tmp_path / "spool") as log:
        x, y = np.zeros((3, 2), np.float32), np.zeros((2, 1), np.float32)  # 3 input rows, 2 out
        contexts = [("u0", 1.0, None), ("u1", 1.0, None)]
        assert log.record_call("odd", "1", 2.0, contexts, [1, 2], {"x": x}, {"y": y}) == 2
        assert log.flush(timeout=30)
        assert log.db.count("odd") == 0
        assert (log.stats.lost, log.stats.written) == (2, 0)
        # and the log goes on: a call whose rows add up is stored
        assert log.record_call("odd", "1", 3.0, contexts, [1, 1], {"x": x[:2]}, {"y": y}) == 2
        assert log.flush(timeout=30)
        assert log.db.count("odd") == 2 and (log.stats.lost, log.stats.written) == (2, 2)


def test_a_malformed_record_is_counted_lost_not_raised(
    sqlite_url: str, tmp_path: Path, open_log: OpenLog
) -> None:
    with open_log(sqlite_url, spool_dir=tmp_path / "spool") as log:
        bad = PredictionRecord("bad", "iris", "1", inputs=np.ones(3))  # type: ignore[arg-type]
        assert log.record(bad) is False
        assert log.record(make_record(1))
        assert log.flush(timeout=30)
        assert logged_ids(sqlite_url, log) == ["req-1"]
        assert (log.stats.lost, log.stats.written) == (1, 1)


def test_postgres_stopped_mid_run_every_record_present(
    postgres: PostgresServer, pg_url: str, tmp_path: Path, open_log: OpenLog
) -> None:
    log = open_log(pg_url, spool_dir=tmp_path / "spool", batch_size=50)
    try:
        hammer(log, threads=8, per_thread=100, offset=0)
        assert log.flush(timeout=60)
        postgres.stop()
        try:
            hammer(log, threads=8, per_thread=100, offset=800)  # never blocks, never raises
            assert not log.flush(timeout=60)  # the database is down: flushed to the spool only
            down = log.stats
            assert down.spooled == 800 and down.lost == 0 and not down.db_up
            assert down.spool_bytes > 0
        finally:
            postgres.start()
        hammer(log, threads=8, per_thread=100, offset=1600)
        assert log.flush(timeout=60)
        ids = logged_ids(pg_url, log)
        stats = log.stats
    finally:
        log.close()
    assert sorted(ids) == sorted(f"req-{i}" for i in range(2400))
    # Records arriving before the writer's next retry are spooled too; all come back.
    assert stats.spooled >= 800 and stats.replayed == stats.spooled
    assert stats.written + stats.replayed == 2400
    assert stats.lost == 0 and stats.spool_bytes == 0 and stats.db_up


def test_spool_left_by_a_stopped_process_is_replayed_on_next_open(
    postgres: PostgresServer, pg_url: str, tmp_path: Path, open_log: OpenLog
) -> None:
    postgres.stop()
    try:
        log = open_log(pg_url, spool_dir=tmp_path / "spool")  # opens with the db down
        hammer(log, threads=4, per_thread=50)
        assert not log.flush(timeout=30)
        log.close()
        assert log.stats.spooled == 200
    finally:
        postgres.start()
    with open_log(pg_url, spool_dir=tmp_path / "spool") as log:
        assert log.flush(timeout=60)
        assert log.stats.replayed == 200
        assert sorted(logged_ids(pg_url, log)) == sorted(f"req-{i}" for i in range(200))
    assert not list((tmp_path / "spool").glob("seg-*"))


def test_spool_bound_exceeded_counts_the_loss_and_keeps_going(
    tmp_path: Path, open_log: OpenLog
) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from modelport.store.metrics import PredictionLogCollector

    nowhere = f"postgresql://modelport@127.0.0.1:{_free_port()}/postgres"  # nothing listens
    log = open_log(nowhere, spool_dir=tmp_path / "spool", spool_limit_bytes=20_000)
    registry = CollectorRegistry()
    registry.register(PredictionLogCollector(log))
    try:
        for i in range(300):
            assert log.record(make_record(i))
        assert not log.flush(timeout=60)
        stats = log.stats
        assert stats.spooled > 0 and stats.lost > 0
        assert stats.spooled + stats.lost == 300
        assert stats.spool_bytes <= 20_000
        text = generate_latest(registry).decode()
        assert log.record(make_record(999))  # still accepting
    finally:
        log.close(timeout=30)
    assert f'modelport_prediction_log_records_total{{outcome="lost"}} {stats.lost}.0' in text
    assert "modelport_prediction_log_db_up 0.0" in text


def test_full_queue_drops_and_counts_without_blocking(
    tmp_path: Path, sqlite_url: str, open_log: OpenLog
) -> None:
    nowhere = f"postgresql://modelport@127.0.0.1:{_free_port()}/postgres"
    log = open_log(nowhere, spool_dir=tmp_path / "spool", queue_size=1)
    try:
        accepted = [log.record(make_record(i)) for i in range(2000)]
        assert not all(accepted)
        assert log.stats.lost >= accepted.count(False)
    finally:
        log.close(timeout=30)


def test_sampling(sqlite_url: str, tmp_path: Path, open_log: OpenLog) -> None:
    with open_log(sqlite_url, spool_dir=tmp_path / "s", sample_rate=0.25) as log:
        for i in range(4000):
            log.record(make_record(i))
        assert log.flush(timeout=60)
        n = log.db.count("iris")
        stats = log.stats
    # Binomial(4000, 0.25): mean 1000, sd ~27; 6 sd either side.
    assert 840 < n < 1160
    assert stats.sampled_out == 4000 - n and stats.written == n
    with open_log(sqlite_url, spool_dir=tmp_path / "s", sample_rate=0.0) as log:
        assert not log.record(make_record(1))


def test_a_bad_sample_rate_set_while_logging_is_refused_and_logging_goes_on(
    sqlite_url: str, tmp_path: Path, open_log: OpenLog
) -> None:
    with open_log(sqlite_url, spool_dir=tmp_path / "s") as log:
        for bad in (-0.1, 2, None, "all"):
            with pytest.raises(ConfigError, match="sample rate must be between 0 and 1"):
                log.sample_rate = bad  # type: ignore[assignment]
        assert log.sample_rate == 1.0
        assert log.record(make_record(1))
        assert log.flush(timeout=30)
        assert logged_ids(sqlite_url, log) == ["req-1"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sample_rate": 1.5}, "sample rate must be between 0 and 1"),
        ({"sample_rate": True}, "sample rate must be between 0 and 1, got True"),
        ({"sample_rate": "0.5"}, "sample rate must be between 0 and 1, got '0.5'"),
        ({"max_input_bytes": 0}, "max_input_bytes must be >= 1"),
        ({"spool_limit_bytes": -1}, "spool limit must be >= 0"),
    ],
)
def test_bad_options_are_config_errors(
    sqlite_url: str, tmp_path: Path, kwargs: dict[str, float], message: str, open_log: OpenLog
) -> None:
    with pytest.raises(ConfigError, match=message):
        open_log(sqlite_url, spool_dir=tmp_path / "s", **kwargs)  # type: ignore[arg-type]


def test_bad_url_is_a_config_error(tmp_path: Path, open_log: OpenLog) -> None:
    with pytest.raises(ConfigError, match="unsupported log database URL scheme 'mysql'"):
        open_log("mysql://x@y/z", spool_dir=tmp_path)


def test_unusable_paths_are_config_errors(tmp_path: Path, open_log: OpenLog) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="cannot create the log's folder"):
        open_log(blocker / "logs" / "log.db", spool_dir=tmp_path / "s")
    with pytest.raises(ConfigError, match="cannot use spool directory"):
        open_log(tmp_path / "log.db", spool_dir=blocker / "spool")


def test_schema_newer_than_the_code_is_refused(
    sqlite_url: str, tmp_path: Path, open_log: OpenLog
) -> None:
    with (
        open_log(sqlite_url, spool_dir=tmp_path / "s") as log,
        log.db.engine.begin() as conn,
    ):
        conn.execute(sa.update(schema_version).values(version=99))
    with pytest.raises(ConfigError, match="schema is version 99"):
        open_log(sqlite_url, spool_dir=tmp_path / "s")


def test_one_spool_directory_per_process(tmp_path: Path, sqlite_url: str) -> None:
    first = Spool(tmp_path / "spool", 1000)
    try:
        with pytest.raises(ConfigError, match="in use by another process"):
            Spool(tmp_path / "spool", 1000)
        # Without an explicit spool_dir, a second log on the same file takes the next folder.
        with PredictionLog.open(sqlite_url) as a, PredictionLog.open(sqlite_url) as b:
            assert a.spool.directory != b.spool.directory
    finally:
        first.close()


def test_record_ids_differ_across_forked_processes() -> None:
    import os

    from modelport.store.records import new_record_id

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, new_record_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    mine = new_record_id()
    assert len(child) == len(mine) == 32 and child[:16] != mine[:16]


def test_records_are_flushed_at_exit_without_close(tmp_path: Path, open_log: OpenLog) -> None:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'log.db'}"
    writer = open_log.keywords["writer"]  # type: ignore[attr-defined]
    script = (
        "import numpy as np\n"
        "from modelport.store import PredictionLog, PredictionRecord\n"
        f"log = PredictionLog.open({url!r}, spool_dir={str(tmp_path / 's')!r}, "
        f"writer={writer!r})\n"
        "for i in range(500):\n"
        "    log.record(PredictionRecord(f'r{i}', 'm', '1', {'x': np.ones((1, 2))}))\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    with open_log(url, spool_dir=tmp_path / "s") as log:
        assert log.db.count("m") == 500


def test_a_server_databases_default_spool_is_this_users_own(pg_url: str) -> None:
    # A spool in a shared /tmp folder that another user made first was not writable: a
    # non-root `modelport serve --log-db postgresql://...` could not start.
    import os
    import stat
    import tempfile

    from modelport.store.db import Database
    from modelport.store.log import _open_spool

    db = Database(pg_url)
    try:
        spool = _open_spool(db, None, 1024 * 1024)
        parent = spool.directory.parent
        assert parent == Path(tempfile.gettempdir()) / f"modelport-spool-{os.getuid()}"
        assert stat.S_IMODE(parent.stat().st_mode) == 0o700 and parent.stat().st_uid == os.getuid()
        spool.close()
    finally:
        db.dispose()
