"""Every bad input is a clear 4xx ``{"error": ...}``, and the server keeps answering."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from tests.server.conftest import LiveServer, assert_healthy, infer_body

X = {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}


def _check(r: httpx.Response, status: int, *needles: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert list(body) == ["error"], body  # never a framework's {"detail": ...}
    for needle in needles:
        assert needle in body["error"], body["error"]


BAD_BODIES: list[tuple[str, bytes, tuple[str, ...]]] = [
    ("malformed JSON", b'{"inputs": [', ("not valid JSON",)),
    ("empty body", b"", ("empty",)),
    ("not an object", b"[1, 2]", ("must be a JSON object",)),
    ("no inputs", b"{}", ('"inputs"',)),
    ("inputs not a list", b'{"inputs": {"x": 1}}', ('"inputs"',)),
    ("input without name", orjson.dumps({"inputs": [{"datatype": "FP32"}]}), ('"name"',)),
    ("unknown datatype", orjson.dumps({"inputs": [{**X, "datatype": "FLOAT"}]}), ("FLOAT",)),
    ("no shape", orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "data": []}]}),
     ("shape",)),
    ("negative dimension", orjson.dumps({"inputs": [{**X, "shape": [-1, 4]}]}), (">= 0",)),
    ("data length vs shape", orjson.dumps({"inputs": [{**X, "shape": [2, 4]}]}),
     ("holds 8 elements, data has 4",)),
    ("no data", orjson.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4]}]}),
     ('neither "data"',)),
    ("text in FP32", orjson.dumps({"inputs": [{**X, "data": ["a", "b", "c", "d"]}]}),
     ("expected FP32 data, got text",)),
    ("ragged data", orjson.dumps({"inputs": [{**X, "data": [[1, 2], [3]]}]}),
     ("not a regular array",)),
    ("wrong datatype", orjson.dumps({"inputs": [{**X, "datatype": "INT64"}]}),
     ("expected datatype FP32, got INT64",)),
    ("wrong shape", orjson.dumps({"inputs": [{**X, "shape": [1, 2, 2]}]}),
     ("expected 2 dimensions",)),
    ("wrong width", orjson.dumps({"inputs": [{**X, "shape": [2, 2]}]}), ("dimension 1 must be 4",)),
    ("unexpected input", orjson.dumps({"inputs": [X, {**X, "name": "z"}]}),
     ("unexpected input(s) ['z']; the model expects ['x']",)),
    ("duplicate input", orjson.dumps({"inputs": [X, X]}), ("more than once",)),
    ("unknown output", orjson.dumps({"inputs": [X], "outputs": [{"name": "nope"}]}),
     ("unknown output(s) ['nope']",)),
    ("bad id", orjson.dumps({"inputs": [X], "id": 5}), ('"id"',)),
    ("bad timeout", orjson.dumps({"inputs": [X], "parameters": {"timeout": "soon"}}),
     ("timeout",)),
    ("int out of range", orjson.dumps(
        {"inputs": [{"name": "b", "datatype": "INT8", "shape": [1], "data": [300]}]}),
     ("outside the range of INT8",)),
]  # fmt: skip


@pytest.mark.parametrize(
    "body,needles", [b[1:] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES]
)
def test_bad_body_is_400(client: httpx.Client, body: bytes, needles: tuple[str, ...]) -> None:
    _check(client.post("/v2/models/tiny/infer", content=body), 400, *needles)
    assert_healthy(client)


def test_missing_input(client: httpx.Client) -> None:
    body = {"inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    _check(
        client.post("/v2/models/multi/infer", json=body),
        400,
        "missing input(s) ['b']; the model expects ['a', 'b']",
    )
    assert_healthy(client)


def test_wrong_input_name_names_both_sides(client: httpx.Client) -> None:
    # The mistake of sending "input" (iris' name) to a model whose input is "x".
    body = {"inputs": [{**X, "name": "input"}]}
    _check(
        client.post("/v2/models/tiny/infer", json=body),
        400,
        "missing input(s) ['x'] and unexpected input(s) ['input']; the model expects ['x']",
    )
    body = {
        "inputs": [
            {"name": "b", "datatype": "INT64", "shape": [1, 3], "data": [1, 2, 3]},
            {"name": "c", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]},
        ]
    }
    _check(
        client.post("/v2/models/multi/infer", json=body),
        400,
        "missing input(s) ['a'] and unexpected input(s) ['c']; the model expects ['a', 'b']",
    )
    assert_healthy(client)


def test_unknown_model_version_route_and_method(client: httpx.Client) -> None:
    x = np.ones((1, 4), np.float32)
    _check(client.post("/v2/models/nope/infer", json=infer_body(x)), 404, "unknown model 'nope'")
    _check(client.get("/v2/models/nope"), 404, "unknown model")
    _check(client.post("/v2/models/tiny/versions/9/infer", json=infer_body(x)), 404, "version")
    _check(client.get("/v2/models/tiny/versions/9/ready"), 404, "no version '9'")
    _check(client.get("/v2/nothing/here"), 404, "no route")
    _check(client.get("/v2/models/tiny/infer"), 405, "not allowed")
    _check(client.post("/v2/models/nope/predict", json=[1]), 404, "unknown model")
    _check(client.post("/v2/models/tiny/predict", content=b"{"), 400, "not valid JSON")
    assert_healthy(client)


def _binary_request(header: dict[str, Any], payload: bytes) -> tuple[bytes, dict[str, str]]:
    head = orjson.dumps(header)
    return head + payload, {"inference-header-content-length": str(len(head))}


def test_binary_header_whose_lengths_lie(client: httpx.Client) -> None:
    raw = np.ones(4, np.float32).tobytes()
    tensor = {"name": "x", "datatype": "FP32", "shape": [1, 4]}
    cases = [
        ({"inputs": [{**tensor, "parameters": {"binary_data_size": 32}}]}, raw, "runs past"),
        ({"inputs": [{**tensor, "parameters": {"binary_data_size": 8}}]}, raw, "got 8"),
        ({"inputs": [{**tensor, "parameters": {"binary_data_size": 16}}]}, raw + b"more",
         "add up to 16 bytes, but 20"),
        ({"inputs": [{**tensor, "parameters": {"binary_data_size": 16}}]}, raw[:12] + b"\0" * 4,
         None),
        ({"inputs": [{**tensor, "shape": [2, 4], "parameters": {"binary_data_size": 16}}]}, raw,
         "needs 32 bytes"),
    ]  # fmt: skip
    for header, payload, needle in cases:
        body, headers = _binary_request(header, payload)
        r = client.post("/v2/models/tiny/infer", content=body, headers=headers)
        if needle is None:
            assert r.status_code == 200  # a truthful header with other bytes is fine
        else:
            _check(r, 400, needle)
    body, _ = _binary_request({"inputs": [{**tensor, "parameters": {"binary_data_size": 16}}]}, raw)
    long = {"inference-header-content-length": str(len(body) + 10)}
    _check(client.post("/v2/models/tiny/infer", content=body, headers=long), 400, "but the body")
    junk = {"inference-header-content-length": "ten"}
    _check(client.post("/v2/models/tiny/infer", content=body, headers=junk), 400, "integer")
    # A BYTES element that claims more bytes than follow.
    lie = struct.pack("<I", 50) + b"short"
    text = {"name": "text", "datatype": "BYTES", "shape": [1]}
    body, headers = _binary_request(
        {"inputs": [{**text, "parameters": {"binary_data_size": len(lie)}}]}, lie
    )
    r = client.post("/v2/models/shout/infer", content=body, headers=headers)
    _check(r, 400, "claims 50 bytes")
    assert_healthy(client)


def test_oversized_body_is_413(server: LiveServer, client: httpx.Client) -> None:
    big = b"x" * (300 * 1024)  # the limit is 256 KiB
    _check(client.post("/v2/models/tiny/infer", content=big), 413, "exceeds the limit")
    # The answer comes from Content-Length alone: this upload is never sent at all.
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(
            b"POST /v2/models/tiny/infer HTTP/1.1\r\nhost: x\r\n"
            b"content-length: 10000000000\r\n\r\n" + b"{" * 100
        )
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b'"error"' in answer and b"10000000000 bytes exceeds" in answer
    with httpx.Client(base_url=server.url) as fresh:
        assert_healthy(fresh)


def test_failing_model_is_500_for_that_request_only(client: httpx.Client) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [13, 1]}]}
    failed = client.post("/v2/models/flaky/infer", json=body)
    _check(failed, 500, "model 'flaky' failed (request id ")  # private: the log has the rest
    good = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
    r = client.post("/v2/models/flaky/infer", json=good)
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [3.0, 5.0]
    assert_healthy(client)


def test_bad_compressed_bodies(client: httpx.Client) -> None:
    import gzip

    url = "/v2/models/tiny/infer"
    _check(client.post(url, content=b"not gzip", headers={"content-encoding": "gzip"}), 400,
           "not valid gzip data")  # fmt: skip
    _check(client.post(url, content=b"{}", headers={"content-encoding": "br"}), 400,
           "unsupported Content-Encoding 'br'")  # fmt: skip
    bomb = gzip.compress(b" " * (10 * 1024 * 1024))  # 10 MiB of spaces in ~10 KiB
    _check(client.post(url, content=bomb, headers={"content-encoding": "gzip"}), 413,
           "decompressed request body exceeds")  # fmt: skip
    assert_healthy(client)


def test_chunked_upload_past_the_limit_is_413(server: LiveServer) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(30):
            yield b" " * 10_000  # 300 kB in all, no Content-Length; the limit is 256 KiB

    with httpx.Client(base_url=server.url) as client:
        r = client.post("/v2/models/tiny/infer", content=chunks())
        _check(r, 413, "exceeds the limit of 262144 bytes")
    with httpx.Client(base_url=server.url) as fresh:
        assert_healthy(fresh)
