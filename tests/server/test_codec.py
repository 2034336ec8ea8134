"""The V2 REST codec on its own: every datatype both ways, JSON and binary."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from modelport.errors import InvalidInputError
from modelport.protocol.codec import decode_request, encode_response
from modelport.protocol.types import InferenceRequest, InferenceResponse, RequestedOutput

NUMERIC = ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
           "FP16", "FP32", "FP64"]  # fmt: skip


def _json_request(datatype: str, shape: list[int], data: object) -> bytes:
    return orjson.dumps(
        {"inputs": [{"name": "t", "datatype": datatype, "shape": shape, "data": data}]}
    )


@pytest.mark.parametrize("datatype", NUMERIC)
def test_numeric_json_and_binary_round_trip(datatype: str) -> None:
    from modelport.datatypes import to_numpy

    dtype = to_numpy(datatype)
    values = (np.arange(6) % 2 == 1) if datatype == "BOOL" else np.arange(6)
    array = values.astype(dtype).reshape(2, 3)
    decoded = decode_request(_json_request(datatype, [2, 3], array.ravel().tolist()))
    np.testing.assert_array_equal(decoded.inputs["t"], array)
    assert decoded.inputs["t"].dtype == dtype
    raw = array.tobytes()
    head = orjson.dumps({"inputs": [{"name": "t", "datatype": datatype, "shape": [2, 3],
                                     "parameters": {"binary_data_size": len(raw)}}]})  # fmt: skip
    binary = decode_request(head + raw, len(head))
    np.testing.assert_array_equal(binary.inputs["t"], array)
    # And back, as JSON and as binary.
    response = InferenceResponse("m", "1", {"t": array}, "id")
    body, length = encode_response(response)
    assert length is None
    out = orjson.loads(body)["outputs"][0]
    assert out["datatype"] == datatype and out["shape"] == [2, 3]
    np.testing.assert_array_equal(np.asarray(out["data"], dtype=dtype).reshape(2, 3), array)
    wants_binary = InferenceRequest({}, outputs=[RequestedOutput("t", {"binary_data": True})])
    body, length = encode_response(response, wants_binary)
    assert length is not None
    meta = orjson.loads(body[:length])["outputs"][0]
    assert meta["parameters"]["binary_data_size"] == len(raw) and "data" not in meta
    np.testing.assert_array_equal(np.frombuffer(body[length:], dtype).reshape(2, 3), array)


def test_bf16_from_json_floats_and_back() -> None:
    values = [1.0, -2.5, 0.15625, 3.0e38]
    decoded = decode_request(_json_request("BF16", [4], values)).inputs["t"]
    assert decoded.dtype == np.uint16
    response = InferenceResponse("m", "1", {"t": decoded}, "id", datatypes={"t": "BF16"})
    out = orjson.loads(encode_response(response)[0])["outputs"][0]
    assert out["datatype"] == "BF16"
    np.testing.assert_allclose(out["data"], values, rtol=1e-2)  # bf16 keeps 8 bits of mantissa


def test_bytes_binary_matches_tritonclient_serialization() -> None:
    items = np.array([b"", b"abc", "ü".encode(), b"\x00\xff"], dtype=object)
    raw = serialize_byte_tensor(items).item()  # a 0-d object array holding the bytes
    head = orjson.dumps({"inputs": [{"name": "t", "datatype": "BYTES", "shape": [4],
                                     "parameters": {"binary_data_size": len(raw)}}]})  # fmt: skip
    decoded = decode_request(head + raw, len(head)).inputs["t"]
    assert list(decoded) == list(items)
    request = InferenceRequest({}, parameters={"binary_data_output": True})
    body, length = encode_response(InferenceResponse("m", "1", {"t": decoded}, "id"), request)
    assert length is not None
    assert list(deserialize_bytes_tensor(body[length:])) == list(items)
    # Bytes that are not UTF-8 cannot travel as JSON text: the error says how to get them.
    with pytest.raises(InvalidInputError, match="binary_data"):
        encode_response(InferenceResponse("m", "1", {"t": decoded}, "id"))


def test_fp16_json_and_nested_data() -> None:
    nested = [[0.5, 1.5], [2.5, -1.0]]
    decoded = decode_request(_json_request("FP16", [2, 2], nested)).inputs["t"]
    assert decoded.dtype == np.float16
    np.testing.assert_array_equal(decoded, np.asarray(nested, np.float16))


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("INT32", [1.5], "expected INT32 data, got FP64"),
        ("UINT8", [-1], "outside the range of UINT8"),
        ("BOOL", [1], "expected BOOL data, got INT64"),
        ("FP32", [None], "null or mixed values"),
        ("BYTES", [1], "BYTES data must be strings"),
        ("FP32", [True], "expected FP32 data, got BOOL"),
    ],
)
def test_json_data_of_the_wrong_kind(datatype: str, data: list[object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        decode_request(_json_request(datatype, [1], data))
