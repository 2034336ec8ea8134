"""The writer process: what happens when it dies, when its server dies, and odd fields."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from modelport.runtime.runner import Prediction
from modelport.store import PredictionLog
from tests.store.test_log import hammer, logged_ids

HANG_GUARD = 60.0


def wait_for(predicate: object, what: str) -> None:
    give_up = time.monotonic() + HANG_GUARD
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > give_up:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_killed_writer_is_replaced_and_its_unwritten_records_counted(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "modelport.store")
    with PredictionLog.open(sqlite_url, spool_dir=tmp_path / "spool", linger_s=0.5) as log:
        hammer(log, threads=4, per_thread=100)
        assert log.flush(timeout=30)
        first = log.writer_pid
        assert first is not None
        hammer(log, threads=4, per_thread=100, offset=400)  # in flight when it is killed
        time.sleep(0.1)
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: log.writer_pid != first, "the dead writer to be retired")
        hammer(log, threads=4, per_thread=100, offset=800)
        assert log.flush(timeout=30)
        assert log.writer_pid not in (None, first)
        ids = set(logged_ids(sqlite_url, log))
        stats = log.stats
    assert {f"req-{i}" for i in (*range(400), *range(800, 1200))} <= ids
    assert stats.received == 1200 and stats.queued == 0
    assert stats.written + stats.lost == 1200
    # "lost" is what the dead writer had not reported: at most what it could not have written.
    assert stats.written <= len(ids) <= stats.written + stats.lost
    if stats.lost:
        assert "reported written may be lost" in caplog.text


def test_records_handed_over_survive_a_killed_server(tmp_path: Path) -> None:
    """The server is SIGKILLed while its writer process holds records it cannot write yet (a
    test connection holds SQLite's write lock): the writer still stores them, in the database
    or in the spool, which the next log opened on it replays."""
    path = tmp_path / "log.db"
    url = f"sqlite:///{path}"
    PredictionLog.open(url, spool_dir=tmp_path / "init").close()  # the schema, created
    blocker = sqlite3.connect(path)
    blocker.execute("BEGIN EXCLUSIVE")
    script = (
        "import os, signal, time\n"
        "import numpy as np\n"
        "from modelport.store import PredictionLog, PredictionRecord\n"
        f"log = PredictionLog.open({url!r}, spool_dir={str(tmp_path / 's')!r}, linger_s=0.01)\n"
        "for i in range(500):\n"
        "    log.record(PredictionRecord(f'r{i}', 'm', '1', {'x': np.ones((1, 2))}))\n"
        "while log._writer.sent < 500:  # all handed to the writer process\n"
        "    time.sleep(0.001)\n"
        "assert log.stats.written == 0\n"
        "print(log.writer_pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    err = tmp_path / "stderr.txt"
    try:
        with err.open("w") as stderr:  # a pipe would stay open in the orphaned writer
            done = subprocess.run(
                [sys.executable, "-c", script],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                timeout=HANG_GUARD,
            )
    finally:
        blocker.rollback()
        blocker.close()
    assert done.returncode == -signal.SIGKILL, err.read_text()
    writer = int(done.stdout.strip())
    wait_for(lambda: not Path(f"/proc/{writer}").exists(), "the orphaned writer to finish")
    with PredictionLog.open(url, spool_dir=tmp_path / "s") as log:
        assert log.flush(timeout=30)
        assert log.db.count("m") == 500


def test_a_field_marshal_cannot_write_loses_that_record_only(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, "modelport.store")
    x = {"x": np.ones((1, 2), np.float32)}

    def prediction(rid: str, model: str, version: object = "1") -> Prediction:
        return Prediction(rid, model, version, x, x, 1.0, 0.001, "ok", None, None)  # type: ignore[arg-type]

    with PredictionLog.open(sqlite_url, spool_dir=tmp_path / "spool", linger_s=0.2) as log:
        assert log.record_prediction(prediction("a", "m"))
        assert log.record_prediction(prediction("odd", "m", version=object()))
        assert log.record_prediction(prediction("b", "m"))
        assert log.flush(timeout=30)
        assert logged_ids(sqlite_url, log, "m") == ["a", "b"]
        assert log.stats.lost == 1
    assert "record 'odd' holds a value that marshal cannot write" in caplog.text


def test_unknown_writer_kind_is_a_config_error(sqlite_url: str) -> None:
    from modelport.errors import ConfigError

    with pytest.raises(ConfigError, match="writer must be one of process, thread, got 'fork'"):
        PredictionLog.open(sqlite_url, writer="fork")


def test_counters_come_back_without_a_flush(sqlite_url: str, tmp_path: Path) -> None:
    """The writer process reports its counters on its own, so /metrics never waits on it."""
    with PredictionLog.open(sqlite_url, spool_dir=tmp_path / "spool", linger_s=0.01) as log:
        hammer(log, threads=2, per_thread=50)
        wait_for(lambda: log.stats.written == 100, "the written count to reach 100")
        stats = log.stats
        assert (stats.queued, stats.lost, stats.db_up) == (0, 0, True)
