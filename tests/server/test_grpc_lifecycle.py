"""The gRPC server's life: graceful stop, shutdown readiness, overload, limits, ports."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

import modelport
from modelport.errors import ConfigError
from modelport.protocol._grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from modelport.protocol.grpc_codec import encode_infer_request
from modelport.protocol.types import InferenceRequest
from modelport.server.grpc import start_grpc_server, stop_grpc_server
from modelport.server.metrics import PrometheusMetrics
from modelport.settings import Settings
from tests.server.grpc_server import HANG_GUARD, Gate, ServerThread

ONE = np.array([[1.5]], dtype=np.float32)


def gate_request(x: np.ndarray = ONE) -> Any:
    return encode_infer_request(InferenceRequest({"x": x}), "gate")


def test_graceful_stop_finishes_calls_in_flight() -> None:
    gate = Gate()
    server = ServerThread([gate])
    try:
        with grpc.insecure_channel(server.url) as channel:
            in_flight = GRPCInferenceServiceStub(channel).ModelInfer.future(gate_request())
            assert gate.entered.wait(HANG_GUARD)
            stopping = server.call_soon(stop_grpc_server(server.server, grace=HANG_GUARD))
            gate.release.set()
            reply = in_flight.result(HANG_GUARD)
            stopping.result(HANG_GUARD)
        y = np.frombuffer(reply.raw_output_contents[0], dtype=np.float32)
        np.testing.assert_array_equal(y, [3.0])
        with grpc.insecure_channel(server.url) as channel:
            after = GRPCInferenceServiceStub(channel).ModelInfer.future(gate_request())
            assert after.exception(HANG_GUARD).code() == grpc.StatusCode.UNAVAILABLE
    finally:
        gate.release.set()
        server.close()


def test_readiness_turns_false_while_the_data_plane_drains(tiny_onnx: Path) -> None:
    server = ServerThread([modelport.load(tiny_onnx)])
    try:
        server.call(server.dataplane.close())
        with grpc.insecure_channel(server.url) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
        with triton.InferenceServerClient(server.url) as client:
            assert client.is_server_live()
            assert not client.is_server_ready()
            assert not client.is_model_ready("tiny")
            x = triton.InferInput("x", [1, 4], "FP32").set_data_from_numpy(
                np.zeros((1, 4), np.float32)
            )
            with pytest.raises(InferenceServerException) as info:
                client.infer("tiny", [x])
        assert info.value.status() == "StatusCode.UNAVAILABLE"
        assert re.search("shutting down|unloading", info.value.message())
    finally:
        server.close()


def test_overload_is_refused_at_once_and_admitted_calls_answer() -> None:
    gate = Gate(queue=1)  # one call running, one waiting, the rest refused
    server = ServerThread([gate])
    try:
        with grpc.insecure_channel(server.url) as channel:
            call = GRPCInferenceServiceStub(channel).ModelInfer
            first = call.future(gate_request())
            assert gate.entered.wait(HANG_GUARD)
            done = threading.Semaphore(0)
            rest = [call.future(gate_request(np.full((1, 1), i, np.float32))) for i in range(10)]
            for future in rest:
                future.add_done_callback(lambda _: done.release())
            for _ in range(9):  # all but the one admitted to the queue answer while it blocks
                assert done.acquire(timeout=HANG_GUARD)
            gate.release.set()
            results = [first, *rest]
            for future in results:
                future.exception(HANG_GUARD)
        answers = [future.exception() is None for future in results]
        assert answers.count(True) == 2 and answers[0]
        for future, ok, x in zip(results, answers, [1.5, *range(10)]):
            if ok:
                y = np.frombuffer(future.result().raw_output_contents[0], np.float32)
                np.testing.assert_array_equal(y, [2 * x])
            else:
                assert future.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "overloaded" in future.details()
                assert dict(future.trailing_metadata())["retry-after"] == "1"
    finally:
        gate.release.set()
        server.close()


def test_messages_over_the_limit_are_refused(tiny_onnx: Path) -> None:
    server = ServerThread([modelport.load(tiny_onnx)], Settings(max_body_size=4096))
    try:
        with triton.InferenceServerClient(server.url) as client:
            big = np.zeros((1000, 4), np.float32)  # 16 kB of tensor data
            x = triton.InferInput("x", list(big.shape), "FP32").set_data_from_numpy(big)
            with pytest.raises(InferenceServerException) as info:
                client.infer("tiny", [x])
            assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
            small = np.ones((2, 4), np.float32)
            x = triton.InferInput("x", [2, 4], "FP32").set_data_from_numpy(small)
            assert client.infer("tiny", [x]).as_numpy("y").shape == (2, 3)
    finally:
        server.close()


def test_a_port_in_use_is_a_config_error(tiny_onnx: Path) -> None:
    server = ServerThread([modelport.load(tiny_onnx)])
    try:
        second = start_grpc_server(server.dataplane, "127.0.0.1", server.port)
        with pytest.raises(ConfigError, match=f"cannot listen for gRPC on 127.0.0.1:{server.port}"):
            server.call(second)
        with triton.InferenceServerClient(server.url) as client:
            assert client.is_server_ready()
    finally:
        server.close()


def test_a_caller_deadline_ends_the_call_and_the_server_goes_on() -> None:
    gate = Gate()
    server = ServerThread([gate])
    try:
        with grpc.insecure_channel(server.url) as channel:
            call = GRPCInferenceServiceStub(channel).ModelInfer
            with pytest.raises(grpc.RpcError) as info:
                call(gate_request(), timeout=0.2)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            gate.release.set()
            reply = call(gate_request())
        np.testing.assert_array_equal(np.frombuffer(reply.raw_output_contents[0], np.float32), [3])
    finally:
        gate.release.set()
        server.close()


def test_a_bearer_token_guards_all_but_health(tiny_onnx: Path) -> None:
    server = ServerThread([modelport.load(tiny_onnx)], Settings(auth_token="s3cret"))
    x = np.ones((1, 4), np.float32)
    try:
        with triton.InferenceServerClient(server.url) as client:
            assert client.is_server_live() and client.is_server_ready()
            for headers in (None, {"authorization": "Bearer wrong"}, {"authorization": "s3cret"}):
                with pytest.raises(InferenceServerException) as info:
                    client.get_model_metadata("tiny", headers=headers)
                assert info.value.status() == "StatusCode.UNAUTHENTICATED"
                assert "bearer token" in info.value.message()
            good = {"authorization": "Bearer s3cret"}
            assert client.get_model_metadata("tiny", headers=good).name == "tiny"
            inp = triton.InferInput("x", [1, 4], "FP32").set_data_from_numpy(x)
            assert client.infer("tiny", [inp], headers=good).as_numpy("y").shape == (1, 3)
        with grpc.insecure_channel(server.url) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.close()


def test_concurrent_calls_are_batched_and_each_gets_its_own_rows() -> None:
    gate = Gate(batch=16)  # rows: the eight 2-row calls fit one batch
    metrics = PrometheusMetrics()
    server = ServerThread([gate], metrics=metrics)
    try:
        with grpc.insecure_channel(server.url) as channel:
            call = GRPCInferenceServiceStub(channel).ModelInfer
            first = call.future(gate_request())
            assert gate.entered.wait(HANG_GUARD)
            xs = [np.array([[i], [100 + i]], np.float32) for i in range(8)]  # 2 rows each
            queued = [call.future(gate_request(x)) for x in xs]
            batcher = server.dataplane.registry.get("gate").batcher
            give_up = time.monotonic() + HANG_GUARD
            while batcher.depth < len(xs) and time.monotonic() < give_up:
                time.sleep(0.01)  # until all eight wait behind the first call
            gate.release.set()
            first.result(HANG_GUARD)
            for x, future in zip(xs, queued):
                y = np.frombuffer(future.result(HANG_GUARD).raw_output_contents[0], np.float32)
                np.testing.assert_array_equal(y.reshape(2, 1), 2 * x)
        labels = {"model": "gate", "version": "1"}
        assert metrics.registry.get_sample_value("modelport_batch_size_count", labels) == 2
        assert metrics.registry.get_sample_value("modelport_batch_size_sum", labels) == 1 + 16
    finally:
        gate.release.set()
        server.close()
