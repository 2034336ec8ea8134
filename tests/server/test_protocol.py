"""Requests that offer a cleartext HTTP/2 upgrade (what Java's HttpClient sends) get their
body delivered and an HTTP/1.1 answer."""

from __future__ import annotations

import socket

import orjson

from tests.server.conftest import LiveServer

BODY = orjson.dumps(
    {"id": "h2c", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                              "data": [1, 2, 3, 4]}]}
)  # fmt: skip
UPGRADE = (
    b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    b"HTTP2-Settings: AAEAAEAAAAIAAAAAAAMAAAAAAAQBAAAAAAUAAEAAAAYABgAA\r\n"
)


def _request(body: bytes = BODY, extra: bytes = b"") -> bytes:
    return (
        b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\n" + UPGRADE + extra
        + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )  # fmt: skip


def _responses(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    buffer = b""
    out: list[tuple[int, bytes]] = []
    while len(out) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(out)} responses"
            buffer += chunk
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
        length = int(headers[b"content-length"])
        while len(buffer) < length:
            buffer += sock.recv(65536)
        out.append((int(lines[0].split()[1]), buffer[:length]))
        buffer = buffer[length:]
    return out


def test_body_in_the_same_packet(server: LiveServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(_request() + BODY)
        [(status, body)] = _responses(sock, 1)
    assert status == 200, body
    assert orjson.loads(body)["id"] == "h2c"


def test_body_in_later_packets_then_another_request(server: LiveServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(_request())
        sock.sendall(BODY[:10])
        sock.sendall(BODY[10:])
        [(status, body)] = _responses(sock, 1)
        assert status == 200, body
        assert orjson.loads(body)["id"] == "h2c"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        plain = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
        sock.sendall(_request() + BODY + plain)
        statuses = [status for status, _ in _responses(sock, 2)]
    assert statuses == [200, 200]


def test_chunked_body_with_upgrade_offer_is_a_clear_400(server: LiveServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\n" + UPGRADE
            + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        )  # fmt: skip
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 400")
    assert b"chunked body with an HTTP/2 upgrade offer" in data
