"""What the HTTP parser refuses is answered as JSON like every other client mistake, and slow
clients are timed out; raw sockets on loopback against the real server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from tests.server.conftest import LiveServer, assert_healthy, infer_body, start
from tests.server.test_protocol import _responses

GOOD = b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400,
         "malformed HTTP request: Invalid character in Content-Length"),
        (b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Length: -10\r\n\r\n", 400,
         "malformed HTTP request: Invalid character in Content-Length"),
        (b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n", 400,
         "malformed HTTP request: Transfer-Encoding can't be present with Content-Length"),
        (b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"zz\r\n", 400, "malformed HTTP request: Invalid character in chunk size"),
        (b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n", 400, "malformed HTTP request: Invalid method"),
        (b"GET /v2/" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414,
         "request target longer than 16384 bytes"),
    ],
)  # fmt: skip
def test_framing_errors_are_json(
    server: LiveServer, client: httpx.Client, raw: bytes, status: int, message: str
) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(raw)
        buffer = b""
        while chunk := sock.recv(65536):  # the server answers, then closes
            buffer += chunk
    head, _, body = buffer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), head
    assert b"content-type: application/json" in head.lower()
    assert message in orjson.loads(body)["error"]
    assert_healthy(client)


@pytest.fixture(scope="module")
def impatient(repo: Path) -> Iterator[LiveServer]:
    """A server that gives a request's headers, and then its body, one second each."""
    with start(repo, protocol={"header_timeout": 1.0, "body_timeout": 1.0}) as live:
        yield live


def _closed_with_408(sock: socket.socket) -> bool:
    buffer = b""
    while chunk := sock.recv(65536):
        buffer += chunk
    return buffer.startswith(b"HTTP/1.1 408 ") and b"not received within 1 s" in buffer


def test_slow_loris_connections_are_closed_while_good_requests_are_answered(
    impatient: LiveServer,
) -> None:
    sockets = [socket.create_connection(("127.0.0.1", impatient.port)) for _ in range(100)]
    for k, sock in enumerate(sockets):
        sock.settimeout(10)
        if k % 3 == 0:  # a new connection that says nothing
            continue
        if k % 3 == 1:  # headers that never end
            sock.sendall(b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\n")
        else:  # headers, then a body that never ends
            sock.sendall(b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Length: 1000\r\n\r\n{\"inputs\": [")  # fmt: skip
    trickle = socket.create_connection(("127.0.0.1", impatient.port))
    stop = threading.Event()

    def drip() -> None:  # one header byte every 0.2 s: still out at the deadline
        for byte in b"GET /v2/health/ready HTTP/1.1\r\nX-Slow: " + b"a" * 1000:
            if stop.wait(0.2):
                return
            try:
                trickle.send(bytes([byte]))
            except OSError:
                return

    dripping = threading.Thread(target=drip)
    dripping.start()
    answered = 0
    started = time.monotonic()
    with httpx.Client(base_url=impatient.url, timeout=10) as client:
        while time.monotonic() - started < 1.5:
            r = client.post("/v2/models/tiny/infer", json=infer_body(np.ones((1, 4), np.float32)))
            assert r.status_code == 200, r.text
            answered += 1
    assert answered > 0
    try:
        assert all(_closed_with_408(s) for s in sockets)
        trickle.settimeout(10)
        assert _closed_with_408(trickle)
    finally:
        stop.set()
        dripping.join()
        for s in [*sockets, trickle]:
            s.close()


def test_a_prompt_client_on_a_kept_alive_connection_is_not_timed_out(
    impatient: LiveServer,
) -> None:
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=10) as sock:
        for _ in range(3):
            sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
            [(status, _)] = _responses(sock, 1)
            assert status == 200
            time.sleep(1.2)  # idle between requests, past the header deadline, within keep-alive
        sock.sendall(GOOD)
        [(status, body)] = _responses(sock, 1)
    assert status == 400 and b"error" in body  # answered, not timed out


class Recorder:
    """A transport that records each write (what ``send()`` each would be)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        self.writes.append(b"".join(parts))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def test_an_answer_leaves_in_one_write() -> None:
    from modelport.server.protocol import _Corked

    raw = Recorder()
    corked = _Corked(raw)
    corked.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    assert raw.writes == []  # the head waits for the body
    corked.write(b"{}")
    corked.write(b"more")  # later writes (a streamed body) pass straight on
    assert raw.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}", b"more"]
    assert not corked.is_closing()

    raw = Recorder()
    corked = _Corked(raw)
    corked.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # the client waits for it: sent at once
    assert raw.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    corked.write(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
    corked.close()  # closed without a body: the held head still goes out, then the close
    assert raw.writes[1:] == [b"HTTP/1.1 500 Internal Server Error\r\n\r\n"] and raw.closed

    raw = Recorder()
    corked = _Corked(raw)
    big = b"x" * 200_000
    corked.write(b"HTTP/1.1 200 OK\r\n\r\n")
    corked.write(big)
    assert raw.writes == [b"HTTP/1.1 200 OK\r\n\r\n" + big]


def test_head_requests_and_100_continue_are_answered(server: LiveServer) -> None:
    """The answers whose head is not followed by a body write, on the real server."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"HEAD /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        head = sock.recv(65536)  # 405 (the route takes GET), its head only, and no hang
        assert head.startswith(b"HTTP/1.1 405 ") and head.endswith(b"\r\n\r\n"), head
        body = orjson.dumps(infer_body(np.ones((1, 4), np.float32)))
        sock.sendall(
            b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        interim = sock.recv(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n", interim
        sock.sendall(body)
        buffer = b""
        while b"\r\n\r\n" not in buffer or len(buffer.partition(b"\r\n\r\n")[2]) < 10:
            buffer += sock.recv(65536)
        assert buffer.startswith(b"HTTP/1.1 200 "), buffer
