"""The gRPC codec against the messages tritonclient really builds and reads."""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest
from tritonclient.grpc import InferInput, InferRequestedOutput, InferResult, service_pb2
from tritonclient.grpc._utils import _get_inference_request
from tritonclient.utils import np_to_triton_dtype

from modelport.errors import InvalidInputError, PredictionError
from modelport.protocol.grpc_codec import (
    decode_infer_request,
    encode_infer_request,
    encode_infer_response,
    encode_model_metadata,
    encode_server_metadata,
    pb,
    wants_raw_output,
)
from modelport.protocol.types import InferenceRequest, InferenceResponse, RequestedOutput

NUMERIC = [
    np.bool_, np.uint8, np.uint16, np.uint32, np.uint64,
    np.int8, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64,
]  # fmt: skip


def triton_request(
    inputs: list[InferInput],
    outputs: list[InferRequestedOutput] | None = None,
    request_id: str = "",
    parameters: dict[str, object] | None = None,
) -> pb.ModelInferRequest:
    """What ``InferenceServerClient.infer`` puts on the wire, parsed as modelport's message."""
    msg = _get_inference_request(
        model_name="m",
        inputs=inputs,
        model_version="2",
        request_id=request_id,
        outputs=outputs,
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=0,
        timeout=None,
        parameters=parameters,
    )
    return pb.ModelInferRequest.FromString(msg.SerializeToString())


def triton_input(name: str, array: np.ndarray) -> InferInput:
    tensor = InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
    return tensor.set_data_from_numpy(array)


def triton_result(msg: pb.ModelInferResponse) -> InferResult:
    """Read a modelport response the way tritonclient reads a server's answer."""
    return InferResult(service_pb2.ModelInferResponse.FromString(msg.SerializeToString()))


def sample(dtype: type, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if dtype is np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda d: np.dtype(d).name)
def test_raw_inputs_from_tritonclient_decode_exactly(dtype: type, rng: np.random.Generator) -> None:
    array = sample(dtype, (3, 5), rng)
    request = decode_infer_request(triton_request([triton_input("x", array)]))
    assert request.inputs["x"].dtype == array.dtype
    np.testing.assert_array_equal(request.inputs["x"], array)


def test_bytes_and_multiple_inputs_from_tritonclient(rng: np.random.Generator) -> None:
    words = np.array([[b"alpha", b""], [b"\x00\xff binary", "caf\u00e9".encode()]], dtype=object)
    numbers = rng.standard_normal((2, 3)).astype(np.float32)
    msg = triton_request(
        [triton_input("text", words), triton_input("n", numbers)],
        outputs=[InferRequestedOutput("y")],
        request_id="req-7",
        parameters={"flag": True, "count": 3, "note": "hi"},
    )
    request = decode_infer_request(msg)
    assert request.id == "req-7"
    assert request.parameters == {"flag": True, "count": 3, "note": "hi"}
    assert request.outputs == [RequestedOutput("y", {})]
    assert request.inputs["text"].shape == (2, 2)
    assert request.inputs["text"].tolist() == words.tolist()
    np.testing.assert_array_equal(request.inputs["n"], numbers)


def test_priority_and_timeout_parameters_survive(rng: np.random.Generator) -> None:
    msg = _get_inference_request(
        "m", [triton_input("x", sample(np.float32, (1, 2), rng))], "", "", None,
        0, False, False, 5, 1000, None,
    )  # fmt: skip
    request = decode_infer_request(pb.ModelInferRequest.FromString(msg.SerializeToString()))
    assert request.parameters == {"priority": 5, "timeout": 1000}


@pytest.mark.parametrize(
    "dtype", [d for d in NUMERIC if d is not np.float16], ids=lambda d: np.dtype(d).name
)
def test_typed_contents_round_trip(dtype: type, rng: np.random.Generator) -> None:
    array = sample(dtype, (4, 2), rng)
    msg = encode_infer_request(InferenceRequest({"x": array}), "m", raw=False)
    assert not msg.raw_input_contents and msg.inputs[0].HasField("contents")
    assert not wants_raw_output(msg)
    decoded = decode_infer_request(pb.ModelInferRequest.FromString(msg.SerializeToString()))
    assert decoded.inputs["x"].dtype == array.dtype
    np.testing.assert_array_equal(decoded.inputs["x"], array)


def test_typed_bytes_contents_round_trip() -> None:
    words = np.array(["a", "bb", "ccc"], dtype=object)
    msg = encode_infer_request(InferenceRequest({"w": words}), "m", raw=False)
    assert list(msg.inputs[0].contents.bytes_contents) == [b"a", b"bb", b"ccc"]
    assert decode_infer_request(msg).inputs["w"].tolist() == [b"a", b"bb", b"ccc"]


@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda d: np.dtype(d).name)
def test_raw_response_reads_back_in_tritonclient(dtype: type, rng: np.random.Generator) -> None:
    array = sample(dtype, (2, 3), rng)
    response = InferenceResponse("m", "1", {"y": array}, id="abc", parameters={"k": 1.5})
    msg = encode_infer_response(response)
    assert len(msg.raw_output_contents) == 1
    result = triton_result(msg)
    out = result.as_numpy("y")
    assert out.dtype == array.dtype
    np.testing.assert_array_equal(out, array)
    assert result.get_response().id == "abc"
    assert result.get_response().model_version == "1"
    assert result.get_response().parameters["k"].double_param == 1.5


def test_bytes_response_in_raw_and_typed_form() -> None:
    words = np.array([[b"x", b"yz"], [b"", b"\x00\x01"]], dtype=object)
    for raw in (True, False):
        msg = encode_infer_response(InferenceResponse("m", None, {"w": words}, id="i"), raw=raw)
        assert bool(msg.raw_output_contents) is raw
        if raw:
            assert triton_result(msg).as_numpy("w").tolist() == words.tolist()
        else:  # tritonclient's typed BYTES reader calls np.array(copy=False): numpy 2 refuses
            assert list(msg.outputs[0].shape) == [2, 2]
            assert list(msg.outputs[0].contents.bytes_contents) == words.ravel().tolist()


def test_typed_response_carries_typed_contents(rng: np.random.Generator) -> None:
    outputs = {"f": sample(np.float32, (2, 2), rng), "i": sample(np.int8, (3,), rng)}
    msg = encode_infer_response(InferenceResponse("m", "1", outputs, id="i"), raw=False)
    assert not msg.raw_output_contents
    assert list(msg.outputs[0].shape) == [2, 2]
    np.testing.assert_array_equal(
        np.array(msg.outputs[0].contents.fp32_contents, np.float32), outputs["f"].ravel()
    )
    assert list(msg.outputs[1].contents.int_contents) == outputs["i"].tolist()


def test_fp16_forces_raw_for_every_output(rng: np.random.Generator) -> None:
    outputs = {"h": sample(np.float16, (2,), rng), "f": sample(np.float32, (2,), rng)}
    msg = encode_infer_response(InferenceResponse("m", "1", outputs, id="i"), raw=False)
    assert len(msg.raw_output_contents) == 2
    result = triton_result(msg)
    np.testing.assert_array_equal(result.as_numpy("h"), outputs["h"])
    np.testing.assert_array_equal(result.as_numpy("f"), outputs["f"])


def test_bf16_travels_raw_both_ways() -> None:
    values = np.array([1.0, -2.5, 0.15625], dtype=np.float32)
    # tritonclient takes bfloat16 as ml_dtypes' type (since r26.06), no longer float32
    tensor = InferInput("b", [3], "BF16").set_data_from_numpy(values.astype(ml_dtypes.bfloat16))
    bits = decode_infer_request(triton_request([tensor])).inputs["b"]
    assert bits.dtype == np.uint16
    response = InferenceResponse("m", "1", {"b": bits}, id="i", datatypes={"b": "BF16"})
    result = triton_result(encode_infer_response(response, raw=False))
    assert result.get_response().outputs[0].datatype == "BF16"
    np.testing.assert_array_equal(result.as_numpy("b").astype(np.float32), values)  # exact


def test_requested_output_parameters_and_input_parameters_decode() -> None:
    msg = pb.ModelInferRequest(model_name="m")
    tensor = msg.inputs.add(name="x", datatype="INT32", shape=[1])
    tensor.contents.int_contents.append(4)
    tensor.parameters["scale"].double_param = 0.5
    out = msg.outputs.add(name="y")
    out.parameters["big"].uint64_param = 2**64 - 1
    request = decode_infer_request(msg)
    assert request.input_parameters == {"x": {"scale": 0.5}}
    assert request.outputs == [RequestedOutput("y", {"big": 2**64 - 1})]
    assert request.id is None


def test_metadata_encoders() -> None:
    server = encode_server_metadata(
        {"name": "modelport", "version": "0.1", "extensions": ["binary_tensor_data"]}
    )
    assert (server.name, server.version, list(server.extensions)) == (
        "modelport",
        "0.1",
        ["binary_tensor_data"],
    )
    model = encode_model_metadata(
        {
            "name": "tiny",
            "versions": ["1", "2"],
            "platform": "onnx",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
        }
    )
    parsed = service_pb2.ModelMetadataResponse.FromString(model.SerializeToString())
    assert list(parsed.versions) == ["1", "2"] and parsed.platform == "onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in parsed.inputs] == [("x", "FP32", [-1, 4])]
    assert [(t.name, list(t.shape)) for t in parsed.outputs] == [("y", [-1, 3])]


# -- bad input ----------------------------------------------------------------------------------


def raw_request(*tensors: tuple[str, str, list[int], bytes]) -> pb.ModelInferRequest:
    msg = pb.ModelInferRequest(model_name="m")
    for name, datatype, shape, raw in tensors:
        msg.inputs.add(name=name, datatype=datatype, shape=shape)
        msg.raw_input_contents.append(raw)
    return msg


def length_prefixed(*items: bytes) -> bytes:
    return b"".join(len(b).to_bytes(4, "little") + b for b in items)


@pytest.mark.parametrize(
    ("msg", "message"),
    [
        (raw_request(("x", "FP32", [2, 4], bytes(31))), r"'x'.*32 bytes.*got 31"),
        (raw_request(("x", "FP32", [2, 4], bytes(36))), r"'x'.*32 bytes.*got 36"),
        (raw_request(("x", "FP32", [2, -4], bytes(32))), r"'x'.*shape"),
        (raw_request(("x", "FLOAT", [1], bytes(4))), r"unknown datatype 'FLOAT'"),
        (raw_request(("x", "", [1], bytes(4))), r"'x' has no datatype"),
        (raw_request(("", "FP32", [1], bytes(4))), r"inputs\[0\] has no name"),
        (
            raw_request(("x", "FP32", [1], bytes(4)), ("x", "FP32", [1], bytes(4))),
            r"'x' appears more than once",
        ),
        (raw_request(("s", "BYTES", [2], length_prefixed(b"ab"))), r"'s'.*cannot hold the 2"),
        (
            raw_request(("s", "BYTES", [2], length_prefixed(b"ab") + b"\x09\0\0\0xyzw")),
            r"'s'.*element 1 claims 9 bytes",
        ),
        (
            raw_request(("s", "BYTES", [1], length_prefixed(b"ab", b"c"))),
            r"'s'.*left over",
        ),
        (raw_request(("s", "BYTES", [10**12], b"")), r"'s'.*cannot hold"),
        (pb.ModelInferRequest(model_name="m"), r"no inputs"),
    ],
    ids=[
        "raw-too-short", "raw-too-long", "negative-dim", "unknown-datatype", "no-datatype",
        "no-name", "duplicate", "bytes-too-few", "bytes-length-lies", "bytes-left-over",
        "bytes-huge-shape", "no-inputs",
    ],
)  # fmt: skip
def test_malformed_raw_requests_name_the_problem(msg: pb.ModelInferRequest, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        decode_infer_request(msg)


def test_raw_entry_count_must_match_inputs() -> None:
    msg = raw_request(("x", "FP32", [1], bytes(4)))
    msg.inputs.add(name="z", datatype="FP32", shape=[1])
    with pytest.raises(InvalidInputError, match="1 entries for 2 inputs"):
        decode_infer_request(msg)


def test_raw_and_typed_contents_together_are_refused() -> None:
    msg = raw_request(("x", "FP32", [1], bytes(4)))
    msg.inputs[0].contents.fp32_contents.append(1.0)
    with pytest.raises(InvalidInputError, match="'x' has typed contents"):
        decode_infer_request(msg)


def typed_request(datatype: str, shape: list[int]) -> tuple[pb.ModelInferRequest, Any]:
    msg = pb.ModelInferRequest(model_name="m")
    tensor = msg.inputs.add(name="x", datatype=datatype, shape=shape)
    return msg, tensor.contents


def test_typed_count_mismatch_names_field_and_shape() -> None:
    msg, contents = typed_request("FP32", [2, 2])
    contents.fp32_contents.extend([1.0, 2.0, 3.0])
    with pytest.raises(InvalidInputError, match=r"fp32_contents holds 3 values.*\[2, 2\].*4"):
        decode_infer_request(msg)


def test_typed_contents_in_the_wrong_field_are_refused() -> None:
    msg, contents = typed_request("FP32", [2])
    contents.int_contents.extend([1, 2])
    with pytest.raises(InvalidInputError, match="fp32_contents holds 0 values"):
        decode_infer_request(msg)


def test_typed_values_out_of_range_are_refused() -> None:
    msg, contents = typed_request("INT8", [2])
    contents.int_contents.extend([1, 300])
    with pytest.raises(InvalidInputError, match=r"outside the range of INT8 \[-128, 127\]"):
        decode_infer_request(msg)


def test_typed_fp16_is_refused_with_the_raw_alternative() -> None:
    msg, _ = typed_request("FP16", [1])
    with pytest.raises(InvalidInputError, match=r"FP16 has no typed contents.*raw_input_contents"):
        decode_infer_request(msg)


def test_unencodable_output_is_a_prediction_error() -> None:
    weird = np.array([1 + 2j], dtype=np.complex64)
    with pytest.raises(PredictionError, match=r"'z'.*complex64"):
        encode_infer_response(InferenceResponse("m", "1", {"z": weird}, id="i"))
    mixed = np.array([b"ok", 3], dtype=object)
    with pytest.raises(PredictionError, match=r"'w'.*bytes or str, not int"):
        encode_infer_response(InferenceResponse("m", "1", {"w": mixed}, id="i"), raw=False)


@pytest.mark.parametrize(("datatype", "dtype"), [("FP32", np.float32), ("FP64", np.float64)])
def test_typed_floats_set_by_other_clients_decode_exactly(
    datatype: str, dtype: type, rng: np.random.Generator
) -> None:
    """Values put in the repeated field one by one (as KServe/MLServer clients do), next to
    other populated fields that the reader must step over."""
    values = rng.standard_normal(6).astype(dtype)
    msg = service_pb2.ModelInferRequest(model_name="m")
    tensor = msg.inputs.add(name="x", datatype=datatype, shape=[2, 3])
    field = "fp32_contents" if datatype == "FP32" else "fp64_contents"
    getattr(tensor.contents, field).extend(values.tolist())
    tensor.contents.int_contents.extend([1, -2, 300000])
    tensor.contents.bytes_contents.append(b"ignored")
    tensor.contents.fp64_contents.extend([] if datatype == "FP64" else [9.5])
    decoded = decode_infer_request(pb.ModelInferRequest.FromString(msg.SerializeToString()))
    assert decoded.inputs["x"].dtype == dtype
    np.testing.assert_array_equal(decoded.inputs["x"], values.reshape(2, 3))
