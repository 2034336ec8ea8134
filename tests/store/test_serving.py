"""``modelport serve --log-db``: every answered request logged, feedback over HTTP, the report.

The server runs as a real subprocess on loopback ports, stopped with SIGTERM (which flushes
the log); PostgreSQL is a real server, stopped and restarted in the middle of the load.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelport.errors import ModelNotFoundError, UnknownRequestError
from modelport.report import build_report
from modelport.runtime.dataplane import DataPlane
from modelport.store import PredictionLog
from tests.builders import mlp_reference, mlp_weights, onnx_mlp
from tests.store.pg import PostgresServer, _free_port

HANG_GUARD = 60.0

PICKY_MODEL = '''
from modelport import Model, Signature, TensorSpec


class Picky(Model):
    """y = x + 1, but a row holding 13 fails the request."""

    signature = Signature(
        inputs=(TensorSpec("x", "FP32", (-1, 1)),), outputs=(TensorSpec("y", "FP32", (-1, 1)),)
    )

    def predict(self, inputs):
        if (inputs["x"] == 13).any():
            raise ValueError("unlucky number")
        return {"y": inputs["x"] + 1}
'''


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    (root / "tiny" / "1").mkdir(parents=True)
    onnx_mlp(root / "tiny" / "1" / "model.onnx", [4, 16, 3], seed=0)
    (root / "picky").mkdir()
    (root / "picky" / "model.py").write_text(textwrap.dedent(PICKY_MODEL))
    return root


def _exe() -> str:
    return shutil.which("modelport", path=str(Path(sys.executable).parent)) or "modelport"


class Served:
    """``modelport serve`` in a subprocess."""

    def __init__(
        self, repo: Path, log_args: list[str], workdir: Path, env: dict[str, str] | None = None
    ) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        exe = _exe()
        self.output = workdir / "serve.log"
        with self.output.open("wb") as out:
            self.proc = subprocess.Popen(
                [exe, "serve", str(repo), "--http-port", str(self.port), "--grpc-port", "0",
                 "--trust", "--log-format", "text", *log_args],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            )  # fmt: skip
        give_up = time.monotonic() + HANG_GUARD
        with httpx.Client(base_url=self.url) as client:
            while time.monotonic() < give_up:
                if self.proc.poll() is not None:
                    pytest.fail(f"serve exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    if client.get("/v2/health/ready").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        self.proc.kill()
        pytest.fail(f"serve was not ready:\n{self.log()}")

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(HANG_GUARD) == 0, self.log()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(HANG_GUARD)


@pytest.fixture
def serve(repo: Path, tmp_path: Path) -> Iterator[Any]:
    started: list[Served] = []

    def run(log_db: str | None, env: dict[str, str] | None = None) -> Served:
        args = ["--log-db", log_db] if log_db else ["--log-predictions"]
        started.append(Served(repo, args, tmp_path, env))
        return started[-1]

    yield run
    for s in started:
        s.kill()


def body(x: np.ndarray, request_id: str) -> dict[str, Any]:
    return {
        "id": request_id,
        "inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                    "data": x.ravel().tolist()}],
    }  # fmt: skip


def log_counter(url: str, outcome: str) -> float:
    """The server's ``modelport_prediction_log_records_total`` for ``outcome``."""
    metric = f'modelport_prediction_log_records_total{{outcome="{outcome}"}}'
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(metric):
            return float(line.split()[-1])
    raise AssertionError(f"{metric} not exported")


def load(url: str, ids: list[str], threads: int = 8) -> dict[str, int]:
    """POST one tiny inference per id from ``threads`` threads; return id → predicted class."""
    answers: dict[str, int] = {}
    chunks = [ids[k::threads] for k in range(threads)]

    def work(chunk: list[str]) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            for rid in chunk:
                x = np.full((1, 4), int(rid.split("-")[1]) % 7 - 3, dtype=np.float32)
                r = client.post("/v2/models/tiny/infer", json=body(x, rid))
                assert r.status_code == 200, r.text
                answers[rid] = int(np.argmax(r.json()["outputs"][0]["data"]))

    pool = [threading.Thread(target=work, args=(c,)) for c in chunks]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert len(answers) == len(ids)
    return answers


def test_served_requests_are_logged_and_take_feedback(serve: Any, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'log.db'}"
    server = serve(db)
    ids = [f"r-{i}" for i in range(200)]
    answers = load(server.url, ids)
    weights = mlp_weights([4, 16, 3], 0)
    for rid, cls in answers.items():
        x = np.full((1, 4), int(rid.split("-")[1]) % 7 - 3, dtype=np.float32)
        assert cls == int(np.argmax(mlp_reference(x, weights)))
    with httpx.Client(base_url=server.url, timeout=30) as client:
        failed = client.post("/v2/models/picky/infer", json=body(np.array([[13.0]]), "bad-1"))
        assert failed.status_code == 500
        # Feedback: right for r-0..r-9, wrong for r-10..r-14.
        for i in range(15):
            truth = answers[f"r-{i}"] if i < 10 else (answers[f"r-{i}"] + 1) % 3
            r = client.post(
                "/v2/models/tiny/feedback", json={"request_id": f"r-{i}", "value": truth}
            )
            assert r.status_code == 200, r.text
        bad = {
            "/v2/models/tiny/feedback": [
                ({"request_id": "nope", "value": 1}, 404, "no logged prediction with request id"),
                ({"request_id": "r-1", "value": None}, 400, "must be a number, a label"),
                ({"request_id": "r-1", "value": [[1]]}, 400, "got nested list"),
                ({"request_id": "r-1"}, 400, 'feedback must be a JSON object {"request_id"'),
                ({"request_id": "r-1", "value": 1, "oops": 2}, 400, "unknown feedback field"),
                ("setosa", 400, "feedback must be a JSON object"),
                ([], 400, "bulk feedback is an empty list"),
            ],
            "/v2/models/ghost/feedback": [({"request_id": "r-1", "value": 1}, 404, "ghost")],
            # the request was logged by tiny, not picky
            "/v2/models/picky/feedback": [({"request_id": "r-1", "value": 1}, 404, "'picky'")],
        }
        for path, cases in bad.items():
            for payload, status, message in cases:
                r = client.post(path, json=payload)
                assert r.status_code == status and message in r.json()["error"], (payload, r.text)
        r = client.post("/v2/models/tiny/feedback", content=b"{not json")
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
        load(server.url, ["r-999"], threads=1)  # still serving
        spec = client.get("/openapi.json").json()["paths"]["/v2/models/{name}/feedback"]["post"]
        schema = spec["requestBody"]["content"]["application/json"]["schema"]
        one, many = schema["oneOf"]
        assert one["required"] == ["request_id", "value"] and many["items"] == one
        metrics = client.get("/metrics").text
        assert 'modelport_prediction_log_records_total{outcome="lost"} 0.0' in metrics
    server.stop()

    with PredictionLog.open(db, spool_dir=tmp_path / "read") as log:
        rows = {r["request_id"]: r for r in log.predictions("tiny")}
        picky = list(log.predictions("picky"))
    assert set(rows) == {*ids, "r-999"}
    assert all(r["status"] == "ok" and r["version"] == "1" for r in rows.values())
    assert [r["feedback"] for r in (rows[f"r-{i}"] for i in range(3))] == [
        answers[f"r-{i}"] for i in range(3)
    ]
    assert [(r["request_id"], r["status"]) for r in picky] == [("bad-1", "PredictionError")]

    report = subprocess.run(
        [_exe(), "report", "tiny", "--log-db", db],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert "requests: 201" in report.stdout and "accuracy 0.667 on 15 rows" in report.stdout


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_postgres_restarted_under_served_load_loses_nothing(
    serve: Any, postgres: PostgresServer, pg_url: str, writer: str
) -> None:
    server = serve(pg_url, env={"MODELPORT_LOG_WRITER": writer})
    load(server.url, [f"a-{i}" for i in range(150)])
    postgres.stop()
    try:
        load(server.url, [f"b-{i}" for i in range(150)])  # answered while the database is down
        # The outage must be seen, not slept through: wait until the writer spooled.
        give_up = time.monotonic() + HANG_GUARD
        while log_counter(server.url, "spooled") == 0 and time.monotonic() < give_up:
            time.sleep(0.1)
        assert log_counter(server.url, "spooled") > 0
    finally:
        postgres.start()
    load(server.url, [f"c-{i}" for i in range(150)])
    server.stop()
    assert "unreachable, spooling" in server.log()
    with PredictionLog.open(pg_url, spool_dir=server.output.parent / "read") as log:
        logged = sorted(r["request_id"] for r in log.predictions("tiny"))
    expected = sorted(f"{p}-{i}" for p in "abc" for i in range(150))
    assert logged == expected


def test_log_predictions_uses_the_data_directory(serve: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = serve(None, env={"MODELPORT_DATA_DIR": str(data)})
    load(server.url, [f"d-{i}" for i in range(20)], threads=2)
    server.stop()
    assert (data / "predictions.db").is_file()
    env = {**os.environ, "MODELPORT_DATA_DIR": str(data)}
    fed = subprocess.run(
        [_exe(), "feedback", "d-3", "1"], capture_output=True, text=True, env=env, check=False
    )
    assert fed.returncode == 0 and "feedback stored for tiny request d-3" in fed.stdout, fed.stderr
    report = subprocess.run(
        [_exe(), "report", "tiny"], capture_output=True, text=True, env=env, check=False
    )
    assert report.returncode == 0 and "requests: 20" in report.stdout, report.stderr


def test_ids_the_server_makes_are_logged_in_increasing_order(serve: Any, tmp_path: Path) -> None:
    server = serve(f"sqlite:///{tmp_path / 'log.db'}")
    x = np.zeros((1, 4), dtype=np.float32)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(30):  # no "id" in the body: the server makes one
            answer = client.post("/v2/models/tiny/infer", json={"inputs": body(x, "")["inputs"]})
            assert answer.status_code == 200, answer.text
    server.stop()
    with sqlite3.connect(tmp_path / "log.db") as db:
        rows = db.execute("SELECT request_id FROM modelport_requests ORDER BY call, pos")
        logged = [r for (r,) in rows]
    assert len(logged) == 30 and len(set(logged)) == 30
    # increasing ids keep the request-id key appending (no page splits in the middle)
    assert logged == sorted(logged)


def test_feedback_without_a_log_is_a_clear_error(repo: Path) -> None:
    from modelport.runtime.repository import discover

    plane = DataPlane(discover(repo / "tiny", trust=None))

    async def ask(name: str) -> None:
        await plane.feedback(name, "r-1", 1)

    with pytest.raises(UnknownRequestError, match="prediction logging is off on this server"):
        asyncio.run(ask("tiny"))
    with pytest.raises(ModelNotFoundError):
        asyncio.run(ask("ghost"))


ADMIN_TOKEN = "s3cret-admin"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def test_the_sample_rate_changes_while_serving_through_the_admin_api(
    repo: Path, tmp_path: Path, sqlite_url: str
) -> None:
    admin = ["--admin", "--auth-token", ADMIN_TOKEN]
    served = Served(repo, ["--log-db", sqlite_url, *admin], tmp_path)
    x = np.ones((1, 4), np.float32)
    try:
        assert httpx.get(f"{served.url}/admin/log").status_code == 401  # behind the token
        with httpx.Client(base_url=served.url, timeout=30, headers=ADMIN) as client:
            state = client.get("/admin/log").json()
            assert state["sample_rate"] == 1.0 and state["lost"] == 0
            assert client.post("/admin/log", json={"sample_rate": 0}).status_code == 200
            for k in range(10):
                r = client.post("/v2/models/tiny/infer", json=body(x, f"unlogged-{k}"))
                assert r.status_code == 200
            bad_bodies = (
                ({"sample_rate": 1.5}, "sample_rate"),
                ({"sample_rate": "all"}, "sample_rate"),
                ({"rate": 1}, "rate"),
                ({}, "sample_rate"),
            )
            for bad, named in bad_bodies:
                r = client.post("/admin/log", json=bad)
                assert r.status_code == 400 and named in r.json()["error"], (bad, r.text)
            state = client.post("/admin/log", json={"sample_rate": 1}).json()
            assert state["sample_rate"] == 1.0 and state["sampled_out"] == 10
            for k in range(5):
                r = client.post("/v2/models/tiny/infer", json=body(x, f"logged-{k}"))
                assert r.status_code == 200
    finally:
        served.stop()
    with PredictionLog.open(sqlite_url, spool_dir=tmp_path / "read-spool") as log:
        ids = sorted(row["request_id"] for row in log.predictions("tiny"))
    assert ids == [f"logged-{k}" for k in range(5)]


def test_the_log_admin_api_without_a_log_is_a_clear_404(repo: Path, tmp_path: Path) -> None:
    served = Served(repo, ["--admin", "--auth-token", ADMIN_TOKEN], tmp_path)
    try:
        with httpx.Client(base_url=served.url, timeout=30, headers=ADMIN) as client:
            for r in (client.get("/admin/log"), client.post("/admin/log", json={"sample_rate": 1})):
                assert r.status_code == 404 and "--log-db" in r.json()["error"]
            assert client.get("/v2/health/ready").status_code == 200
    finally:
        served.stop()


def test_bulk_feedback_stores_the_good_rows_and_names_each_bad_one(
    serve: Any, tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'log.db'}"
    server = serve(db)
    answers = load(server.url, [f"b-{i}" for i in range(50)])
    good = [{"request_id": f"b-{i}", "value": answers[f"b-{i}"]} for i in range(50)]
    bad = {  # position in the bulk request -> (item, what its error says)
        3: ({"request_id": "nope", "value": 1}, "no logged prediction with request id 'nope'"),
        10: ({"request_id": "b-1", "value": None}, "must be a number, a label"),
        11: ([1, 2], "feedback[11] must be a JSON object"),
        20: ({"request_id": "b-2", "value": 1, "oops": 1}, "unknown feedback[20] field(s)"),
        21: ({"request_id": "b-3", "value": "setosa"}, "is text, but model 'tiny' answers"),
    }
    items: list[Any] = list(good)
    for k in sorted(bad):
        items.insert(k, bad[k][0])
    with httpx.Client(base_url=server.url, timeout=30) as client:
        r = client.post("/v2/models/tiny/feedback", json=items)
        assert r.status_code == 200, r.text
        answer = r.json()
        assert (answer["model"], answer["stored"]) == ("tiny", 50)
        assert [e["index"] for e in answer["errors"]] == sorted(bad)
        for e in answer["errors"]:
            assert bad[e["index"]][1] in e["error"], e
        too_many = [good[0]] * 100_001
        r = client.post("/v2/models/tiny/feedback", json=too_many)
        assert r.status_code == 400 and "at most 100000" in r.json()["error"]
        load(server.url, ["b-999"], threads=1)  # still serving
    server.stop()
    with PredictionLog.open(db, spool_dir=tmp_path / "read") as log:
        stored = {r["request_id"]: r["feedback"] for r in log.predictions("tiny")}
    assert stored == {**{g["request_id"]: g["value"] for g in good}, "b-999": None}


def test_feedback_in_the_answers_own_words(repo: Path, tmp_path: Path) -> None:
    """The iris demo answers species names: feedback may name them; a name it does not know,
    or text for a model answering numbers, is a 400 listing what it takes."""
    demo = Path(__file__).resolve().parents[2] / "demo" / "iris"
    db = f"sqlite:///{tmp_path / 'log.db'}"
    server = Served(demo, ["--log-db", db], tmp_path)
    flowers = {  # request id -> (measurements, the right species)
        "f-0": ([5.1, 3.5, 1.4, 0.2], "setosa"),
        "f-1": ([6.7, 3.0, 5.2, 2.3], "virginica"),
        "f-2": ([5.9, 3.0, 4.2, 1.5], "versicolor"),
    }
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for rid, (x, species) in flowers.items():
                r = client.post("/v2/models/iris/predict", json=x, headers={"X-Request-ID": rid})
                assert r.status_code == 200 and r.json()[0]["species"] == species, r.text
            for rid, value in (("f-0", "setosa"), ("f-1", "virginica"), ("f-2", 1)):
                feedback = {"request_id": rid, "value": value}
                r = client.post("/v2/models/iris/feedback", json=feedback)
                assert r.status_code == 200, r.text
            for value in ("rose", 3, -1, True, ["setosa", "tulip"]):
                r = client.post(
                    "/v2/models/iris/feedback", json={"request_id": "f-0", "value": value}
                )
                assert r.status_code == 400, (value, r.text)
                assert "['setosa', 'versicolor', 'virginica']" in r.json()["error"], r.text
            assert client.get("/v2/health/ready").status_code == 200  # still serving
    finally:
        server.stop()
    with PredictionLog.open(db, spool_dir=tmp_path / "read") as log:
        rows = list(log.predictions("iris"))
    assert sorted(r["feedback"] for r in rows) == [0, 1, 2]  # stored as the label output holds it
    report = build_report("iris", rows)
    assert (report.accuracy, report.feedback_rows, report.feedback_unmatched) == (1.0, 3, 0)

    tiny = Served(repo, ["--log-db", db], tmp_path)  # answers class indices, declares no labels
    try:
        load(tiny.url, ["r-1"], threads=1)
        feedback = {"request_id": "r-1", "value": "setosa"}
        r = httpx.post(f"{tiny.url}/v2/models/tiny/feedback", json=feedback)
        assert r.status_code == 400
        assert "is text, but model 'tiny' answers FP32 in 'y'" in r.json()["error"], r.text
    finally:
        tiny.stop()
