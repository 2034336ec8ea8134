"""``inference.GRPCInferenceService`` on a real loopback server, called by tritonclient.grpc."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from modelport.protocol._grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from modelport.protocol.grpc_codec import encode_infer_request, pb
from modelport.protocol.types import InferenceRequest
from modelport.runtime.repository import discover
from modelport.server.metrics import PrometheusMetrics
from tests.builders import mlp_reference, mlp_weights, onnx_mlp, onnx_multi_io
from tests.server.grpc_server import ServerThread, Words

SIZES = [4, 16, 3]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny`` versions 1 and 2 (different weights) and ``multi`` version 1."""
    root = tmp_path_factory.mktemp("repo")
    for version, seed in (("1", 0), ("2", 1)):
        (root / "tiny" / version).mkdir(parents=True)
        onnx_mlp(root / "tiny" / version / "model.onnx", SIZES, seed=seed)
    (root / "multi" / "1").mkdir(parents=True)
    onnx_multi_io(root / "multi" / "1" / "model.onnx")
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerThread]:
    running = ServerThread([*discover(repo), Words()], metrics=PrometheusMetrics())
    yield running
    running.close()


@pytest.fixture
def client(server: ServerThread) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(server.url) as c:
        yield c


@pytest.fixture
def stub(server: ServerThread) -> Iterator[GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.url) as channel:
        yield GRPCInferenceServiceStub(channel)


def tiny_input(x: np.ndarray) -> triton.InferInput:
    return triton.InferInput("x", list(x.shape), "FP32").set_data_from_numpy(x)


def expected_tiny(x: np.ndarray, version: str) -> np.ndarray:
    return mlp_reference(x, mlp_weights(SIZES, seed=int(version) - 1))


def assert_tiny_still_answers(client: triton.InferenceServerClient) -> None:
    x = np.random.default_rng(99).standard_normal((2, 4)).astype(np.float32)
    result = client.infer("tiny", [tiny_input(x)], model_version="1")
    np.testing.assert_allclose(result.as_numpy("y"), expected_tiny(x, "1"), rtol=1e-5, atol=1e-6)


def rpc_error(call: Any, *args: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args)
    return info.value


# -- health and metadata ------------------------------------------------------------------------


def test_server_live_ready_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta.name == "modelport"
    assert "binary_tensor_data" in meta.extensions
    assert meta.version


def test_model_metadata_and_readiness_per_version(client: triton.InferenceServerClient) -> None:
    meta = client.get_model_metadata("tiny")
    assert meta.name == "tiny"
    assert list(meta.versions) == ["1", "2"]
    assert meta.platform == "onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("x", "FP32", [-1, 4])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [("y", "FP32", [-1, 3])]
    assert list(client.get_model_metadata("tiny", "1").versions) == ["1"]
    words = client.get_model_metadata("words")
    assert [(t.name, t.datatype) for t in words.outputs] == [
        ("upper", "BYTES"),
        ("length", "INT32"),
    ]
    assert client.is_model_ready("tiny")
    assert client.is_model_ready("tiny", "1")
    assert client.is_model_ready("multi")


def test_health_service_reports_serving(server: ServerThread) -> None:
    with grpc.insecure_channel(server.url) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        error = rpc_error(health.Check, health_pb2.HealthCheckRequest(service="no.Such"))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        watch = health.Watch(health_pb2.HealthCheckRequest())
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()


# -- inference ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
def test_infer_raw_explicit_version(
    client: triton.InferenceServerClient, rng: np.random.Generator, version: str
) -> None:
    x = rng.standard_normal((5, 4)).astype(np.float32)
    result = client.infer("tiny", [tiny_input(x)], model_version=version, request_id="r-1")
    assert result.get_response().model_version == version
    assert result.get_response().id == "r-1"
    np.testing.assert_allclose(
        result.as_numpy("y"), expected_tiny(x, version), rtol=1e-5, atol=1e-6
    )


def test_infer_without_version_uses_the_latest_and_makes_an_id(
    client: triton.InferenceServerClient, rng: np.random.Generator
) -> None:
    x = rng.standard_normal((3, 4)).astype(np.float32)
    result = client.infer("tiny", [tiny_input(x)])
    assert result.get_response().model_version == "2"
    assert result.get_response().id  # a prediction id is generated when the caller sends none
    np.testing.assert_allclose(result.as_numpy("y"), expected_tiny(x, "2"), rtol=1e-5, atol=1e-6)


def test_requested_outputs_only(client: triton.InferenceServerClient) -> None:
    a = np.array([[0.5, 3.0, -1.0], [2.0, 0.0, 1.0]], dtype=np.float32)
    b = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int64)
    inputs = [
        triton.InferInput("a", [2, 3], "FP32").set_data_from_numpy(a),
        triton.InferInput("b", [2, 3], "INT64").set_data_from_numpy(b),
    ]
    only = client.infer("multi", inputs, outputs=[triton.InferRequestedOutput("argmax")])
    assert [o.name for o in only.get_response().outputs] == ["argmax"]
    np.testing.assert_array_equal(only.as_numpy("argmax"), [1, 0])
    both = client.infer("multi", inputs)
    assert {o.name for o in both.get_response().outputs} == {"sum", "argmax"}
    np.testing.assert_array_equal(both.as_numpy("sum"), a + b.astype(np.float32))


def test_bytes_tensors(client: triton.InferenceServerClient) -> None:
    text = np.array([b"hello", b"", "gr\u00fc\u00dfe".encode()], dtype=object)
    inp = triton.InferInput("text", [3], "BYTES").set_data_from_numpy(text)
    result = client.infer("words", [inp])
    assert result.as_numpy("upper").tolist() == [t.upper() for t in text]
    np.testing.assert_array_equal(result.as_numpy("length"), [5, 0, 7])


def test_typed_contents_get_typed_answers(
    stub: GRPCInferenceServiceStub, rng: np.random.Generator
) -> None:
    x = rng.standard_normal((2, 4)).astype(np.float32)
    request = encode_infer_request(InferenceRequest({"x": x}), "tiny", "1", raw=False)
    reply = stub.ModelInfer(request)
    assert not reply.raw_output_contents
    y = np.array(reply.outputs[0].contents.fp32_contents, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(y, expected_tiny(x, "1"), rtol=1e-5, atol=1e-6)


# -- bad input: the right status, and the server keeps answering ---------------------------------


def triton_error(call: Any, *args: Any, **kwargs: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as info:
        call(*args, **kwargs)
    return info.value


@pytest.mark.parametrize(
    ("model", "version", "code", "message"),
    [
        ("nope", "", "NOT_FOUND", "unknown model 'nope'"),
        ("tiny", "7", "NOT_FOUND", "no version '7'"),
    ],
)
def test_unknown_model_or_version_is_not_found(
    client: triton.InferenceServerClient, model: str, version: str, code: str, message: str
) -> None:
    x = np.zeros((1, 4), dtype=np.float32)
    for call, args in (
        (client.infer, (model, [tiny_input(x)])),
        (client.get_model_metadata, (model,)),
        (client.is_model_ready, (model,)),
    ):
        error = triton_error(call, *args, model_version=version)
        assert error.status() == f"StatusCode.{code}"
        assert message in error.message()
    assert_tiny_still_answers(client)


def test_wrong_datatype_is_invalid_argument(client: triton.InferenceServerClient) -> None:
    x = np.zeros((1, 4), dtype=np.float64)
    inp = triton.InferInput("x", [1, 4], "FP64").set_data_from_numpy(x)
    error = triton_error(client.infer, "tiny", [inp])
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "expected datatype FP32" in error.message()
    assert_tiny_still_answers(client)


def test_wrong_shape_is_invalid_argument(client: triton.InferenceServerClient) -> None:
    error = triton_error(client.infer, "tiny", [tiny_input(np.zeros((2, 5), dtype=np.float32))])
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "'x'" in error.message() and "dimension 1 must be 4" in error.message()
    assert_tiny_still_answers(client)


def test_missing_input_and_unknown_output_are_invalid_argument(
    client: triton.InferenceServerClient,
) -> None:
    a = triton.InferInput("a", [1, 3], "FP32").set_data_from_numpy(np.zeros((1, 3), np.float32))
    error = triton_error(client.infer, "multi", [a])
    assert error.status() == "StatusCode.INVALID_ARGUMENT" and "'b'" in error.message()
    x = tiny_input(np.zeros((1, 4), dtype=np.float32))
    error = triton_error(client.infer, "tiny", [x], outputs=[triton.InferRequestedOutput("z")])
    assert error.status() == "StatusCode.INVALID_ARGUMENT" and "'z'" in error.message()
    assert_tiny_still_answers(client)


def test_wrong_input_name_names_missing_and_unexpected(
    client: triton.InferenceServerClient,
) -> None:
    x = np.zeros((1, 4), dtype=np.float32)
    wrong = triton.InferInput("input", [1, 4], "FP32").set_data_from_numpy(x)
    error = triton_error(client.infer, "tiny", [wrong])
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert (
        "missing input(s) ['x'] and unexpected input(s) ['input']; the model expects ['x']"
        in error.message()
    )
    assert_tiny_still_answers(client)


def raw_tiny(raw: bytes, shape: list[int], datatype: str = "FP32") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="tiny", raw_input_contents=[raw])
    request.inputs.add(name="x", datatype=datatype, shape=shape)
    return request


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (raw_tiny(bytes(31), [2, 4]), "needs 32 bytes of binary data, got 31"),
        (raw_tiny(bytes(64), [2, 4]), "needs 32 bytes of binary data, got 64"),
        (raw_tiny(bytes(32), [2, -4]), "shape must be a list of integers >= 0"),
        (raw_tiny(bytes(32), [2, 4], "FLOAT32"), "unknown datatype 'FLOAT32'"),
        (pb.ModelInferRequest(model_name="tiny"), "no inputs"),
        (pb.ModelInferRequest(), "model_name is empty"),
    ],
    ids=["short", "long", "negative-dim", "bad-datatype", "no-inputs", "no-model-name"],
)
def test_malformed_requests_are_invalid_argument(
    stub: GRPCInferenceServiceStub,
    client: triton.InferenceServerClient,
    request_: pb.ModelInferRequest,
    message: str,
) -> None:
    error = rpc_error(stub.ModelInfer, request_)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.details()
    assert_tiny_still_answers(client)


def test_bytes_whose_lengths_lie_are_invalid_argument(
    stub: GRPCInferenceServiceStub, client: triton.InferenceServerClient
) -> None:
    request = pb.ModelInferRequest(model_name="words", raw_input_contents=[b"\x09\0\0\0abc"])
    request.inputs.add(name="text", datatype="BYTES", shape=[1])
    error = rpc_error(stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "claims 9 bytes" in error.details()
    assert_tiny_still_answers(client)


def test_a_model_that_raises_fails_only_that_request(client: triton.InferenceServerClient) -> None:
    boom = np.array([b"boom"], dtype=object)
    inp = triton.InferInput("text", [1], "BYTES").set_data_from_numpy(boom)
    error = triton_error(client.infer, "words", [inp])
    assert error.status() == "StatusCode.INTERNAL"
    # Private by default: the model and the request id, not the exception (that is logged).
    assert "model 'words' failed (request id " in error.message()
    assert "boom" not in error.message()
    fine = np.array([b"ok"], dtype=object)
    inp = triton.InferInput("text", [1], "BYTES").set_data_from_numpy(fine)
    assert client.infer("words", [inp]).as_numpy("upper").tolist() == [b"OK"]


def test_metadata_requests_need_a_model_name(stub: GRPCInferenceServiceStub) -> None:
    for call, request in (
        (stub.ModelMetadata, pb.ModelMetadataRequest()),
        (stub.ModelReady, pb.ModelReadyRequest()),
    ):
        error = rpc_error(call, request)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "name is empty" in error.details()


def test_requests_are_counted_by_protocol_and_status(
    server: ServerThread, client: triton.InferenceServerClient
) -> None:
    metrics = server.dataplane.metrics
    assert isinstance(metrics, PrometheusMetrics)

    def count(status: str, version: str) -> float:
        labels = {"model": "tiny", "version": version, "protocol": "grpc", "status": status}
        return metrics.registry.get_sample_value("modelport_requests_total", labels) or 0.0

    ok, bad = count("OK", "2"), count("INVALID_ARGUMENT", "")
    client.infer("tiny", [tiny_input(np.ones((1, 4), np.float32))])
    triton_error(client.infer, "tiny", [tiny_input(np.ones((1, 5), np.float32))])
    assert count("OK", "2") == ok + 1  # the version that answered, though none was asked for
    assert count("INVALID_ARGUMENT", "") == bad + 1
    in_flight = metrics.registry.get_sample_value(
        "modelport_requests_in_flight", {"protocol": "grpc"}
    )
    assert in_flight == 0
