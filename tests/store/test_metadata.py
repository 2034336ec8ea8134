"""Caller metadata from the wire: the V2 "metadata" parameter (object, or JSON text as gRPC
carries it) and the X-Modelport-Metadata header, bounded, validated and logged."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelport.server.serve import build_dataplane
from modelport.settings import Settings
from modelport.store import PredictionLog
from modelport.store.hook import attach
from modelport.store.records import MAX_METADATA_BYTES
from tests.builders import onnx_mlp
from tests.server.conftest import TINY, LiveServer, infer_body

X = np.arange(8, dtype=np.float32).reshape(2, 4) / 10


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[httpx.Client, PredictionLog]]:
    (tmp_path / "repo" / "tiny" / "1").mkdir(parents=True)
    onnx_mlp(tmp_path / "repo" / "tiny" / "1" / "model.onnx", TINY, seed=0)
    settings = Settings(model_path=tmp_path / "repo", grpc_port=None)
    dataplane = build_dataplane(settings)
    log = attach(dataplane, f"sqlite:///{tmp_path / 'log.db'}")
    try:
        with (
            LiveServer(dataplane, settings) as server,
            httpx.Client(base_url=server.url, timeout=30) as client,
        ):
            yield client, log
    finally:
        log.close()


def _logged(log: PredictionLog) -> dict[str, dict[str, Any]]:
    assert log.flush(timeout=30)
    return {r["request_id"]: r["metadata"] for r in log.predictions("tiny")}


def test_metadata_parameter_and_header_are_logged(
    served: tuple[httpx.Client, PredictionLog],
) -> None:
    client, log = served
    given: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
        "object": ({"parameters": {"metadata": {"user": "u1", "tags": ["a", "b"]}}}, {}),
        "text": ({"parameters": {"metadata": json.dumps({"client": "grpc-style"})}}, {}),
        "header": ({}, {"x-modelport-metadata": '{"user": "u3", "n": 3}'}),
        "none": ({}, {}),
    }
    for rid, (extra, headers) in given.items():
        r = client.post(
            "/v2/models/tiny/infer", json=infer_body(X, id=rid, **extra), headers=headers
        )
        assert r.status_code == 200, r.text
    r = client.post(
        "/v2/models/tiny/predict",
        json=X.tolist(),
        headers={"x-request-id": "plain", "x-modelport-metadata": '{"route": "predict"}'},
    )
    assert r.status_code == 200, r.text
    assert _logged(log) == {
        "object": {"user": "u1", "tags": ["a", "b"]},
        "text": {"client": "grpc-style"},
        "header": {"user": "u3", "n": 3},
        "none": {},
        "plain": {"route": "predict"},
    }


def test_bad_metadata_is_a_clear_400_and_the_server_keeps_serving(
    served: tuple[httpx.Client, PredictionLog],
) -> None:
    client, log = served
    big = {"note": "x" * MAX_METADATA_BYTES}
    cases: list[tuple[str, dict[str, Any], dict[str, str], str]] = [
        ("list", {"metadata": [1, 2]}, {}, 'parameter "metadata" must be a JSON object'),
        ("number", {"metadata": 7}, {}, "got int"),
        ("bad-text", {"metadata": "{oops"}, {}, 'parameter "metadata" is not valid JSON'),
        ("text-list", {"metadata": "[1]"}, {}, "must be a JSON object"),
        ("big", {"metadata": big}, {}, f"at most {MAX_METADATA_BYTES} allowed"),
        ("big-text", {"metadata": json.dumps(big)}, {}, f"at most {MAX_METADATA_BYTES}"),
        ("reserved", {"metadata": {"shadow": True}}, {}, "['shadow'] are reserved"),
        ("bad-header", {}, {"x-modelport-metadata": "nope"}, "X-Modelport-Metadata header"),
        (
            "twice",
            {"metadata": {"a": 1}},
            {"x-modelport-metadata": '{"b": 2}'},
            "metadata given twice",
        ),
    ]
    for rid, params, headers, message in cases:
        body = infer_body(X, id=rid, parameters=params)
        r = client.post("/v2/models/tiny/infer", json=body, headers=headers)
        assert r.status_code == 400 and message in r.json()["error"], (rid, r.text)
    r = client.post(
        "/v2/models/tiny/predict", json=X.tolist(), headers={"x-modelport-metadata": "[1]"}
    )
    assert r.status_code == 400 and "X-Modelport-Metadata header must be a JSON object" in r.text
    r = client.post("/v2/models/tiny/infer", json=infer_body(X, id="after"))
    assert r.status_code == 200, r.text
    assert set(_logged(log)) == {"after"}  # refused requests never ran, so nothing logged


def test_metadata_over_grpc_as_a_string_parameter(tmp_path: Path) -> None:
    grpc = pytest.importorskip("grpc")
    import modelport
    from modelport.protocol._grpc import grpc_predict_v2_pb2 as pb
    from modelport.protocol._grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
    from tests.server.grpc_server import ServerThread

    onnx_mlp(tmp_path / "model.onnx", TINY, seed=0)
    model = modelport.load(tmp_path / "model.onnx", name="tiny")
    server = ServerThread([model])
    log = PredictionLog.open(f"sqlite:///{tmp_path / 'log.db'}", spool_dir=tmp_path / "spool")
    server.dataplane.log_to(log)
    try:
        with grpc.insecure_channel(server.url) as channel:
            stub = GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]

            def request(rid: str, metadata: str) -> Any:
                msg = pb.ModelInferRequest(model_name="tiny", id=rid)
                msg.parameters["metadata"].string_param = metadata
                tensor = msg.inputs.add(name="x", datatype="FP32", shape=[2, 4])
                tensor.contents.fp32_contents.extend(X.ravel().tolist())
                return msg

            reply = stub.ModelInfer(request("g1", '{"user": "grpc"}'))
            assert reply.id == "g1"
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(request("g2", '{"agrees": 1}'))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "reserved" in (info.value.details() or "")
        assert _logged(log) == {"g1": {"user": "grpc"}}
    finally:
        server.close()
        log.close()
