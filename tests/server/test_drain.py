"""SIGTERM under load loses no call on any transport: a real ``modelport serve`` process, real
clients (httpx keep-alive, tritonclient gRPC, grpcio), every call counted.

Answered (200, OK) and refused (503, UNAVAILABLE, a refused connection: the request never
reached the server) are the two allowed outcomes; a call that was sent and got no answer (the
connection closed under it, CANCELLED) is lost.
"""

from __future__ import annotations

import http.client
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import orjson
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from modelport.protocol._grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from modelport.protocol.grpc_codec import encode_infer_request
from modelport.protocol.types import InferenceRequest
from tests.builders import onnx_mlp
from tests.server.conftest import TINY, free_socket, tiny_reference, write

MODELPORT = [sys.executable, "-c", "from modelport.cli import main; main()"]
HANG_GUARD = 60.0
ROUNDS = 10

GATED = '''
import time
from pathlib import Path

from modelport import Model


class Gated(Model):
    """The ONNX MLP beside this file; each call says it entered, then waits for 'open'."""

    def predict(self, inputs):
        here = Path(__file__).parent
        (here / f"entered-{time.monotonic_ns()}").touch()
        for _ in range(6000):  # at most 60 s
            if (here / "open").exists():
                break
            time.sleep(0.01)
        return super().predict(inputs)
'''


def _port() -> int:
    with free_socket() as sock:
        return int(sock.getsockname()[1])


class Served:
    """A ``modelport serve`` subprocess on free HTTP and gRPC ports, with a SQLite log."""

    def __init__(self, repo: Path, log_db: Path, *args: str) -> None:
        self.http_port, self.grpc_port = _port(), _port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.target = f"127.0.0.1:{self.grpc_port}"
        self.log_db = log_db
        self.proc = subprocess.Popen(
            [*MODELPORT, "serve", str(repo), "--http-port", str(self.http_port),
             "--grpc-port", str(self.grpc_port), "--log-db", f"sqlite:///{log_db}",
             "--trust", "--log-format", "text", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self.stderr = ""

    def wait_ready(self) -> None:
        give_up = time.monotonic() + HANG_GUARD
        with httpx.Client(base_url=self.url) as client:
            while time.monotonic() < give_up:
                if self.proc.poll() is not None:
                    pytest.fail(f"serve exited early: {self.proc.communicate()[1]}")
                try:
                    if client.get("/v2/health/ready").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.02)
        pytest.fail("serve did not become ready")

    def listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.http_port), timeout=1).close()
        except OSError:
            return False
        return True

    def wait_exit(self) -> int:
        try:
            _, self.stderr = self.proc.communicate(timeout=HANG_GUARD)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, self.stderr = self.proc.communicate()
            pytest.fail(f"serve did not exit after SIGTERM: {self.stderr[-3000:]}")
        return self.proc.returncode

    def logged(self) -> int:
        """Requests in the prediction log."""
        with sqlite3.connect(self.log_db) as db:
            return int(db.execute("SELECT COUNT(*) FROM modelport_requests").fetchone()[0])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@contextmanager
def serving(repo: Path, log_db: Path, *args: str) -> Iterator[Served]:
    served = Served(repo, log_db, *args)
    try:
        served.wait_ready()
        yield served
    finally:
        served.close()


def row(i: int) -> np.ndarray:
    return np.full((1, 4), (i % 97) / 10, np.float32)


class Tally:
    """Outcomes of every call, by transport; thread-safe."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.problems: list[str] = []
        self._lock = threading.Lock()

    def add(self, outcome: str, problem: str | None = None) -> None:
        with self._lock:
            self.counts[outcome] += 1
            if problem is not None:
                self.problems.append(problem)


def http_caller(url: str, seed: int, tally: Tally, stop: threading.Event) -> None:
    """One keep-alive connection at a time, a request after another; refusals back off."""
    i = seed
    with httpx.Client(base_url=url, timeout=HANG_GUARD) as client:
        while not stop.is_set():
            i += 1
            x = row(i)
            body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                "data": x.ravel().tolist()}]}  # fmt: skip
            try:
                r = client.post("/v2/models/tiny/infer", json=body)
            except httpx.ConnectError:
                tally.add("http refused")  # nothing was sent: the listener is closed
                stop.wait(0.02)
                continue
            except httpx.TransportError as exc:
                tally.add("http lost", f"HTTP: {exc!r}")
                continue
            if r.status_code == 200:
                y = np.asarray(r.json()["outputs"][0]["data"], np.float32).reshape(1, 3)
                np.testing.assert_allclose(y, tiny_reference(x), rtol=1e-5, atol=1e-5)
                close = r.headers.get("connection", "").lower() == "close"
                tally.add("http answered, connection closed" if close else "http answered")
            elif r.status_code == 503:
                tally.add("http refused")
                stop.wait(0.02)
            else:
                tally.add("http lost", f"HTTP {r.status_code}: {r.text}")


def triton_caller(target: str, seed: int, tally: Tally, stop: threading.Event) -> None:
    """tritonclient's gRPC client, one call after another; UNAVAILABLE backs off."""
    i = seed
    with triton.InferenceServerClient(target) as client:
        while not stop.is_set():
            i += 1
            x = row(i)
            inp = triton.InferInput("x", [1, 4], "FP32").set_data_from_numpy(x)
            try:
                y = client.infer("tiny", [inp]).as_numpy("y")
            except InferenceServerException as exc:
                _grpc_failure(tally, str(exc.status()).removeprefix("StatusCode."), str(exc))
                continue
            np.testing.assert_allclose(y, tiny_reference(x), rtol=1e-5, atol=1e-5)
            tally.add("grpc answered")


def grpcio_caller(target: str, seed: int, tally: Tally, stop: threading.Event) -> None:
    """A plain grpcio stub keeping two calls in flight."""
    with grpc.insecure_channel(target) as channel:
        infer = GRPCInferenceServiceStub(channel).ModelInfer
        i = seed
        while not stop.is_set():
            xs = [row(i + 1), row(i + 2)]
            i += 2
            calls = [infer.future(encode_infer_request(InferenceRequest({"x": x}), "tiny"))
                     for x in xs]  # fmt: skip
            for x, call in zip(xs, calls):
                try:
                    reply = call.result(HANG_GUARD)
                except grpc.RpcError as exc:
                    _grpc_failure(tally, exc.code().name, str(exc.details()))
                    continue
                y = np.frombuffer(reply.raw_output_contents[0], np.float32).reshape(1, 3)
                np.testing.assert_allclose(y, tiny_reference(x), rtol=1e-5, atol=1e-5)
                tally.add("grpc answered")


def _grpc_failure(tally: Tally, code: str, details: str) -> None:
    if code == "UNAVAILABLE":
        tally.add("grpc refused")
        time.sleep(0.02)
    elif code == "CANCELLED":
        tally.add("grpc cancelled", f"gRPC CANCELLED: {details}")
    else:
        tally.add("grpc lost", f"gRPC {code}: {details}")


CALLERS: list[tuple[Callable[[str, int, Tally, threading.Event], None], str]] = [
    (http_caller, "url"),
    (http_caller, "url"),
    (http_caller, "url"),
    (triton_caller, "target"),
    (triton_caller, "target"),
    (triton_caller, "target"),
    (grpcio_caller, "target"),
]


@pytest.fixture
def tiny_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "tiny" / "1").mkdir(parents=True)
    onnx_mlp(root / "tiny" / "1" / "model.onnx", TINY, seed=0)
    return root


def test_sigterm_under_load_loses_no_call_over_ten_rounds(tiny_repo: Path, tmp_path: Path) -> None:
    rng = random.Random(18)
    totals: Counter[str] = Counter()
    for round_ in range(ROUNDS):
        tally, stop = Tally(), threading.Event()
        with serving(tiny_repo, tmp_path / f"log-{round_}.db") as served:
            threads = [
                threading.Thread(
                    target=caller, args=(getattr(served, where), 1000 * k, tally, stop)
                )
                for k, (caller, where) in enumerate(CALLERS)
            ]
            for thread in threads:
                thread.start()
            time.sleep(rng.uniform(0.15, 0.6))  # under load, SIGTERM at a random moment
            served.proc.send_signal(signal.SIGTERM)
            returncode = served.wait_exit()
            stop.set()
            for thread in threads:
                thread.join(HANG_GUARD)
            counts = tally.counts
            answered = sum(n for outcome, n in counts.items() if "answered" in outcome)
            assert returncode == 0, served.stderr[-3000:]
            assert not tally.problems, (round_, counts, tally.problems[:5])
            assert counts["http answered"] > 0 and counts["grpc answered"] > 0, counts
            # Each keep-alive caller sent again during the drain: answered, with close.
            assert counts["http answered, connection closed"] >= 1, counts
            assert served.logged() == answered, (counts, served.logged())
            totals.update(counts)
    assert not totals["http lost"] + totals["grpc lost"] + totals["grpc cancelled"], totals
    assert totals["grpc refused"] > 0  # new gRPC calls during the drain: UNAVAILABLE


@pytest.fixture
def gated_repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "tiny" / "1").mkdir(parents=True)
    onnx_mlp(root / "tiny" / "1" / "model.onnx", TINY, seed=0)
    gated = root / "gated"
    gated.mkdir()
    onnx_mlp(gated / "model.onnx", TINY, seed=0)
    write(gated / "model.py", GATED)
    write(gated / "modelport.yaml", "batching: {max_batch_size: 1}\nwarmup: {enabled: false}\n")
    return root


def _keep_alive(port: int) -> http.client.HTTPConnection:
    """A connection that has answered once and stays open."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HANG_GUARD)
    conn.request("GET", "/v2/health/live")
    response = conn.getresponse()
    response.read()
    assert response.status == 200 and response.getheader("connection") != "close"
    return conn


def _ask(
    conn: http.client.HTTPConnection, method: str, path: str, body: Any = None
) -> tuple[int, str | None, Any]:
    data = orjson.dumps(body) if body is not None else None
    headers = {"content-type": "application/json"} if data else {}
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    return response.status, response.getheader("connection"), orjson.loads(response.read())


def test_during_the_drain_readiness_is_off_liveness_on_and_open_connections_answer(
    gated_repo: Path, tmp_path: Path
) -> None:
    x = row(3)
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                        "data": x.ravel().tolist()}]}  # fmt: skip
    gate = gated_repo / "gated"
    with serving(gated_repo, tmp_path / "log.db", "--drain-period", "30") as served:
        ready, live, infer = (_keep_alive(served.http_port) for _ in range(3))
        results: dict[str, Any] = {}

        def http_call() -> None:
            results["http"] = httpx.post(
                f"{served.url}/v2/models/gated/infer", json=body, timeout=HANG_GUARD
            )

        channel = grpc.insecure_channel(served.target)
        stub = GRPCInferenceServiceStub(channel)
        held = stub.ModelInfer.future(
            encode_infer_request(InferenceRequest({"x": x}), "gated"), timeout=HANG_GUARD
        )
        give_up = time.monotonic() + HANG_GUARD
        while not list(gate.glob("entered-*")) and time.monotonic() < give_up:
            time.sleep(0.01)  # the gRPC call is in the model
        caller = threading.Thread(target=http_call)
        caller.start()
        while time.monotonic() < give_up:  # the HTTP call is in the server, queued behind it
            status, _, _ = _ask(live, "GET", "/v2/health/live")
            text = httpx.get(f"{served.url}/metrics").text
            if 'modelport_requests_in_flight{protocol="rest"} 2.0' in text:  # + this scrape
                break
        live.close()
        live = _keep_alive(served.http_port)
        served.proc.send_signal(signal.SIGTERM)
        while served.listening() and time.monotonic() < give_up:
            time.sleep(0.01)  # the drain has begun: no new connections
        assert not served.listening()

        # HTTP: readiness off, liveness on, a request on an open connection answered, with
        # Connection: close.
        assert _ask(ready, "GET", "/v2/health/ready") == (503, "close", {"ready": False})
        assert _ask(live, "GET", "/v2/health/live") == (200, "close", {"live": True})
        status, connection, answer = _ask(infer, "POST", "/v2/models/tiny/infer", body)
        assert (status, connection) == (200, "close")
        y = np.asarray(answer["outputs"][0]["data"], np.float32).reshape(1, 3)
        np.testing.assert_allclose(y, tiny_reference(x), rtol=1e-5, atol=1e-5)
        # gRPC, while a call is still in flight: live, not ready, new calls UNAVAILABLE.
        with triton.InferenceServerClient(served.target) as client:
            assert client.is_server_live()
            assert not client.is_server_ready()
            inp = triton.InferInput("x", [1, 4], "FP32").set_data_from_numpy(x)
            with pytest.raises(InferenceServerException) as info:
                client.infer("tiny", [inp])
            assert info.value.status() == "StatusCode.UNAVAILABLE"
            assert "shutting down" in str(info.value.message())
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING

        (gate / "open").touch()  # the calls accepted before SIGTERM are answered
        reply = held.result(HANG_GUARD)
        caller.join(HANG_GUARD)
        channel.close()
        assert served.wait_exit() == 0, served.stderr[-3000:]
        assert results["http"].status_code == 200
        for y in (
            np.frombuffer(reply.raw_output_contents[0], np.float32),
            np.asarray(results["http"].json()["outputs"][0]["data"], np.float32),
        ):
            np.testing.assert_allclose(y.reshape(1, 3), tiny_reference(x), rtol=1e-5, atol=1e-5)
        assert served.logged() == 3  # both held calls and the one during the drain


def test_the_drain_ends_at_its_period_for_idle_connections(tiny_repo: Path, tmp_path: Path) -> None:
    """An idle keep-alive connection holds the drain open for the drain period, then is
    closed: the process exits, and a request sent after it gets no answer."""
    with serving(tiny_repo, tmp_path / "log.db", "--drain-period", "0.5") as served:
        idle = _keep_alive(served.http_port)
        served.proc.send_signal(signal.SIGTERM)
        assert served.wait_exit() == 0, served.stderr[-3000:]
        with pytest.raises((http.client.HTTPException, OSError)):
            _ask(idle, "GET", "/v2/health/live")
    assert "drain period over: closing idle connections" in served.stderr
