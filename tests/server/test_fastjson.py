"""The simdjson path of the V2 JSON decoder answers exactly as the ordinary (orjson) one:
the same arrays, dtypes and shapes, and the same error for every bad tensor."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from modelport.errors import InvalidInputError
from modelport.protocol import fastjson
from modelport.protocol.codec import decode_request

pytestmark = pytest.mark.skipif(not fastjson.available(), reason="requires pysimdjson")


def tensor(datatype: str, shape: list[int], data: Any, name: str = "x") -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


GOOD = [
    tensor("FP32", [2, 3], [0.5, -1.25, 3.0, 1e-8, 2, 7]),
    tensor("FP32", [2, 3], [[0.5, -1.25, 3.0], [1e-8, 2, 7]]),
    tensor("FP64", [1, 2, 2], [[[1.5, 2], [3, 4]]]),
    tensor("FP16", [3], [1, 2.5, -3]),
    tensor("BF16", [2], [1.0, -2.5]),
    tensor("INT64", [3], [1, -2, 9223372036854775807]),
    tensor("INT8", [2, 2], [[1, -128], [127, 0]]),
    tensor("UINT64", [2], [0, 2**53]),
    tensor("UINT8", [2], [0, 255]),
    tensor("BOOL", [2], [True, False]),
    tensor("BYTES", [2], ["héllo", ""]),
    tensor("FP32", [0, 4], []),
    tensor("FP32", [4], [[1, 2], [3, 4]]),  # nested otherwise than the shape: as before
]
BAD = [
    tensor("FP32", [2], [1.0, "x"]),
    tensor("FP32", [2], [1.0, None]),
    tensor("FP32", [3], [1.0, 2.0]),
    tensor("FP32", [2, 2], [[1, 2], [3]]),
    tensor("FP32", [3], [[1, 2], [3]]),
    tensor("INT32", [2], [1, 2.5]),
    tensor("INT8", [1], [300]),
    tensor("UINT8", [2], [1, -2]),
    tensor("INT64", [1], [18446744073709551615]),
    tensor("BOOL", [2], [1, 0]),
    tensor("BYTES", [1], [1]),
]


def decode_both(body: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """(fast result or error, ordinary result or error)."""
    results = []
    for fast in (True, False):
        with monkeypatch.context() as m:
            if not fast:
                m.setattr(fastjson, "simdjson", None)
            try:
                results.append(decode_request(body))
            except InvalidInputError as exc:
                results.append(str(exc))
    return results[0], results[1]


@pytest.mark.parametrize("item", GOOD, ids=[f"{t['datatype']}-{i}" for i, t in enumerate(GOOD)])
def test_good_tensors_decode_the_same(
    item: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    body = json.dumps({"id": "r1", "inputs": [item], "parameters": {"a": [1, {"b": 2}]}})
    fast, ordinary = decode_both(body.encode(), monkeypatch)
    assert not isinstance(fast, str), fast
    assert not isinstance(ordinary, str), ordinary
    a, b = fast.inputs["x"], ordinary.inputs["x"]
    assert a.dtype == b.dtype and a.shape == b.shape == tuple(item["shape"])
    np.testing.assert_array_equal(a, b)
    assert (fast.id, fast.parameters) == (ordinary.id, ordinary.parameters)


@pytest.mark.parametrize("item", BAD, ids=[f"{t['datatype']}-{i}" for i, t in enumerate(BAD)])
def test_bad_tensors_get_the_same_error(
    item: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    body = json.dumps({"inputs": [item]}).encode()
    fast, ordinary = decode_both(body, monkeypatch)
    assert isinstance(ordinary, str), "the ordinary decoder accepted a bad tensor"
    assert fast == ordinary


@pytest.mark.parametrize("body", [b"", b"{", b"[1, 2]", b'{"inputs": 3}', b'{"inputs": [1e999]}'])
def test_bad_documents_get_the_same_error(body: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    fast, ordinary = decode_both(body, monkeypatch)
    assert isinstance(ordinary, str) and fast == ordinary


def test_the_json_part_before_binary_data(monkeypatch: pytest.MonkeyPatch) -> None:
    header = json.dumps(
        {
            "inputs": [
                tensor("FP32", [2], [1.5, 2.5], "a"),
                {
                    "name": "b",
                    "datatype": "INT32",
                    "shape": [2],
                    "parameters": {"binary_data_size": 8},
                },
            ]
        }
    ).encode()
    body = header + np.array([7, -8], dtype="<i4").tobytes()
    for fast in (True, False):
        with monkeypatch.context() as m:
            if not fast:
                m.setattr(fastjson, "simdjson", None)
            request = decode_request(body, len(header))
        np.testing.assert_array_equal(request.inputs["a"], np.array([1.5, 2.5], np.float32))
        np.testing.assert_array_equal(request.inputs["b"], np.array([7, -8], np.int32))


def test_many_requests_in_a_row_reuse_the_parser() -> None:
    for i in range(200):
        body = json.dumps({"inputs": [tensor("FP32", [1, 3], [i, i + 0.5, -i])]}).encode()
        np.testing.assert_array_equal(
            decode_request(body).inputs["x"], np.array([[i, i + 0.5, -i]], np.float32)
        )


def test_the_largest_uint64_stays_exact() -> None:
    """(The ordinary path reads it through a float and refuses it.)"""
    body = json.dumps({"inputs": [tensor("UINT64", [2], [0, 2**64 - 1])]}).encode()
    assert decode_request(body).inputs["x"].tolist() == [0, 2**64 - 1]
