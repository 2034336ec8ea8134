"""Overload and slow clients: past ``max_concurrency`` a request gets a JSON 503 before its
body is read while the admitted ones are answered; a request whose client has gone, or whose
``Request-Timeout`` has passed, leaves the queue unrun; past ``max_connections`` a connection
gets a 503; slow-loris connections are closed by the header deadline. Real servers on loopback,
raw sockets and real clients; no timings are asserted (those are bench/overload.py's)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import orjson
import pytest

from modelport.protocol._grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from modelport.protocol.grpc_codec import encode_infer_request
from modelport.protocol.types import InferenceRequest
from modelport.runtime.batcher import Batcher
from modelport.runtime.dataplane import DataPlane
from modelport.server.admission import Admission
from modelport.settings import Settings
from tests.server.conftest import LiveServer
from tests.server.grpc_server import HANG_GUARD, Gate, ServerThread
from tests.server.test_protocol import _responses


class Recording(Gate):
    """The gate model, remembering every row it was called on."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seen: list[float] = []

    def predict(self, inputs: Any) -> Any:
        self.seen += inputs["x"].ravel().tolist()
        return super().predict(inputs)


def body(x: float) -> bytes:
    return orjson.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [x]}]}
    )


def post(x: float, *headers: bytes) -> bytes:
    data = body(x)
    head = b"POST /v2/models/gate/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += b"".join(h + b"\r\n" for h in headers)
    return head + b"Content-Length: %d\r\n\r\n" % len(data) + data


def connect(live: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", live.port), timeout=HANG_GUARD)
    return sock


def answer(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    [(status, raw)] = _responses(sock, 1)
    return status, orjson.loads(raw)


def until(condition: Any) -> None:
    give_up = time.monotonic() + HANG_GUARD
    while not condition():
        assert time.monotonic() < give_up, "condition never held"
        time.sleep(0.005)


@pytest.fixture
def capped() -> Iterator[tuple[LiveServer, Recording, Admission]]:
    """A server admitting two requests at once; its model holds each call at a gate."""
    gate = Recording(queue=1024, batch=1)
    admission = Admission(2)
    live = LiveServer(DataPlane([gate]), Settings(grpc_port=None), admission=admission)
    try:
        with live:
            yield live, gate, admission
    finally:
        gate.release.set()


def test_past_the_cap_a_fast_json_503_and_the_admitted_are_answered(
    capped: tuple[LiveServer, Recording, Admission],
) -> None:
    live, gate, admission = capped
    held = [connect(live) for _ in range(2)]
    for x, sock in zip((1.0, 2.0), held):
        sock.sendall(post(x))
    until(lambda: admission.in_flight == 2)
    # Refused while both are held at the gate: whole in one write (refused without the
    # parser), in pieces (the parser reads the head, the body is skipped), or kept alive.
    whole, pieces = connect(live), connect(live)
    whole.sendall(post(3.0))
    request = post(4.0)
    pieces.sendall(request[:60])
    time.sleep(0.05)
    pieces.sendall(request[60:])
    for sock in (whole, pieces):
        status, refusal = answer(sock)
        assert status == 503
        assert "max_concurrency" in refusal["error"]
    with httpx.Client(base_url=live.url) as client:
        assert client.get("/v2/health/ready").status_code == 200  # probes are never refused
        r = client.post("/v2/models/gate/infer", content=body(5.0))
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.headers["content-type"] == "application/json"
    assert admission.refused == 3 and gate.seen == [1.0]  # the second waits in the queue
    gate.release.set()
    for x, sock in zip((1.0, 2.0), held):
        status, reply = answer(sock)
        assert status == 200 and reply["outputs"][0]["data"] == [2 * x]
    until(lambda: admission.in_flight == 0)
    # The refused connections stay usable, and now their requests are admitted.
    for x, sock in ((6.0, whole), (7.0, pieces)):
        sock.sendall(post(x))
        status, reply = answer(sock)
        assert status == 200 and reply["outputs"][0]["data"] == [2 * x]
    assert sorted(gate.seen) == [1.0, 2.0, 6.0, 7.0]  # the refused never reached the model
    for sock in (*held, whole, pieces):
        sock.close()


def test_requests_whose_callers_gave_up_leave_the_queue_unrun(
    capped: tuple[LiveServer, Recording, Admission],
) -> None:
    live, gate, admission = capped
    admission.limit = None
    first = connect(live)
    first.sendall(post(1.0))
    until(gate.entered.is_set)
    batcher = live.dataplane.registry.get("gate").batcher
    assert batcher is not None
    gone = connect(live)
    gone.sendall(post(2.0))
    until(lambda: batcher.depth == 1)
    gone.close()  # the caller gives up
    until(lambda: all(item.future.done() for item in batcher._queue))
    impatient = connect(live)
    impatient.sendall(post(3.0, b"Request-Timeout: 0.2"))
    status, reply = answer(impatient)  # while the model is still held
    assert status == 504 and "Request-Timeout" in reply["error"]
    bad = connect(live)
    bad.sendall(post(4.0, b"Request-Timeout: soon"))
    status, reply = answer(bad)
    assert status == 400 and "invalid Request-Timeout header 'soon'" in reply["error"]
    patient = connect(live)
    patient.sendall(post(5.0, b"Request-Timeout: 60"))
    until(lambda: batcher.depth == 3)
    gate.release.set()
    status, reply = answer(first)
    assert status == 200 and reply["outputs"][0]["data"] == [2.0]
    status, reply = answer(patient)
    assert status == 200 and reply["outputs"][0]["data"] == [10.0]
    assert gate.seen == [1.0, 5.0]  # the abandoned and the timed-out never ran
    for sock in (first, impatient, bad, patient):
        sock.close()


def test_grpc_calls_past_the_cap_are_refused_at_once_and_the_admitted_answered() -> None:
    gate = Gate()
    server = ServerThread([gate], Settings(max_concurrency=1))
    try:
        with grpc.insecure_channel(server.url) as channel:
            call = GRPCInferenceServiceStub(channel).ModelInfer
            x = np.array([[1.5]], np.float32)
            first = call.future(encode_infer_request(InferenceRequest({"x": x}), "gate"))
            assert gate.entered.wait(HANG_GUARD)
            with pytest.raises(grpc.RpcError) as info:
                call(encode_infer_request(InferenceRequest({"x": x}), "gate"))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "max_concurrency" in str(info.value.details())
            gate.release.set()
            reply = first.result(HANG_GUARD)
            again = call(encode_infer_request(InferenceRequest({"x": x}), "gate"))
        for answered in (reply, again):
            y = np.frombuffer(answered.raw_output_contents[0], np.float32)
            np.testing.assert_array_equal(y, [3.0])
    finally:
        gate.release.set()
        server.close()


def _read_to_close(sock: socket.socket) -> bytes:
    buffer = b""
    while chunk := sock.recv(65536):
        buffer += chunk
    return buffer


def test_a_connection_cap_and_slow_loris_connections_closed_by_the_deadline() -> None:
    """100 connections trickle their headers: those past ``max_connections`` get a 503 at
    once, the others a 408 at the header deadline; a good client keeps being answered."""
    gate = Gate()
    gate.release.set()
    live = LiveServer(
        DataPlane([gate]), Settings(grpc_port=None), header_timeout=1.0, max_connections=50
    )
    with live, httpx.Client(base_url=live.url, timeout=HANG_GUARD) as good:
        assert good.get("/v2/health/ready").status_code == 200  # its connection is open
        slow = [connect(live) for _ in range(100)]
        stop = threading.Event()

        def trickle() -> None:  # a header byte on each connection every 0.2 s
            for byte in b"POST /v2/models/gate/infer HTTP/1.1\r\nX-Slow: " + b"a" * 1000:
                if stop.wait(0.2):
                    return
                for sock in slow:
                    with contextlib.suppress(OSError):  # closed by the server
                        sock.send(bytes([byte]))

        dripping = threading.Thread(target=trickle)
        dripping.start()
        try:
            for i in range(20):
                r = good.post("/v2/models/gate/infer", content=body(float(i)))
                assert r.status_code == 200, r.text
                assert r.json()["outputs"][0]["data"] == [2.0 * i]
            answers = [_read_to_close(sock) for sock in slow]
        finally:
            stop.set()
            dripping.join()
            for sock in slow:
                sock.close()
        refused = [a for a in answers if a.startswith(b"HTTP/1.1 503 ")]
        timed_out = [a for a in answers if a.startswith(b"HTTP/1.1 408 ")]
        assert len(refused) == 51 and len(timed_out) == 49  # the good client holds one place
        assert all(b"max_connections" in a for a in refused)
        assert all(b"not received within 1 s" in a for a in timed_out)
        r = good.post("/v2/models/gate/infer", content=body(21.0))
        assert r.status_code == 200  # still answered, on its kept-alive connection
        until(lambda: len(live.server.server_state.connections) <= 1)
        with httpx.Client(base_url=live.url) as fresh:  # new connections are taken again
            assert fresh.get("/v2/health/ready").status_code == 200


def test_the_worker_runs_full_batches_back_to_back_without_the_loop() -> None:
    """Under load the model's throughput must not wait for the loop's turns (long ones, with
    thousands of connections): while a full batch waits, the worker thread runs it at once."""
    calls: list[int] = []
    gate = threading.Event()

    def fn(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(len(inputs["x"]))
        if len(calls) == 1:
            gate.wait(HANG_GUARD)
        return {"y": inputs["x"] * 2}

    async def main() -> list[np.ndarray]:
        batcher = Batcher(fn, name="m", max_batch_size=4)
        xs = [np.full((1, 1), i, np.float32) for i in range(13)]
        tasks = [asyncio.ensure_future(batcher.submit({"x": x}, 1)) for x in xs]
        while not calls:
            await asyncio.sleep(0.001)  # the first batch runs, held; nine requests wait
        gate.set()
        give_up = time.monotonic() + HANG_GUARD
        while len(calls) < 3 and time.monotonic() < give_up:
            time.sleep(0.001)  # the loop is busy (blocked): no turn of it starts a batch
        assert calls == [4, 4, 4]  # the two full batches ran all the same
        answers = [(await task)["y"] for task in tasks]
        assert calls == [4, 4, 4, 1]  # the last, not a full batch, waited for the loop
        await batcher.close()
        return answers

    answers = asyncio.run(main())
    for i, y in enumerate(answers):
        np.testing.assert_array_equal(y, [[2.0 * i]])


def test_refusals_are_counted_in_the_metrics() -> None:
    from modelport.server.metrics import PrometheusMetrics

    metrics = PrometheusMetrics()
    admission = Admission(1)
    metrics.track_refusals(lambda: admission.refused)
    assert admission.enter() and not admission.enter() and not admission.enter()
    assert b"modelport_requests_refused_total 2.0" in metrics.render()
