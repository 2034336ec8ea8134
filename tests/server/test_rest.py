"""The V2 REST API through real clients (tritonclient.http, httpx) against a real server."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from modelport.server.rest import ROUTES
from tests.server.conftest import LiveServer, infer_body, tiny_reference


@pytest.fixture
def tc(server: LiveServer) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(f"127.0.0.1:{server.port}")


def test_health_and_server_metadata(tc: triton.InferenceServerClient) -> None:
    assert tc.is_server_live()
    assert tc.is_server_ready()
    meta = tc.get_server_metadata()
    assert meta["name"] == "modelport"
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata_and_versions(tc: triton.InferenceServerClient) -> None:
    meta = tc.get_model_metadata("tiny")
    assert meta["name"] == "tiny"
    assert meta["versions"] == ["1", "2"]
    assert meta["platform"] == "onnx"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]
    assert tc.get_model_metadata("tiny", "1")["versions"] == ["1"]
    assert tc.is_model_ready("tiny") and tc.is_model_ready("tiny", "2")
    assert tc.get_model_metadata("shout")["platform"] == "python"


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("version", ["1", "2", ""])
def test_tritonclient_infer(tc: triton.InferenceServerClient, binary: bool, version: str) -> None:
    x = np.random.default_rng(7).standard_normal((5, 4)).astype(np.float32)
    inp = triton.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = triton.InferRequestedOutput("y", binary_data=binary)
    result = tc.infer("tiny", [inp], model_version=version, outputs=[out], request_id="req-42")
    seed = 0 if version == "1" else 1  # no version: the latest, 2
    np.testing.assert_allclose(result.as_numpy("y"), tiny_reference(x, seed), rtol=1e-5, atol=1e-5)
    response = result.get_response()
    assert response["id"] == "req-42"
    assert response["model_version"] == (version or "2")


def test_requested_outputs_and_all_outputs(tc: triton.InferenceServerClient) -> None:
    a = np.array([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]], dtype=np.float32)
    b = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int64)
    inputs = [triton.InferInput("a", [2, 3], "FP32"), triton.InferInput("b", [2, 3], "INT64")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b, binary_data=False)
    only = tc.infer("multi", inputs, outputs=[triton.InferRequestedOutput("argmax")])
    np.testing.assert_array_equal(only.as_numpy("argmax"), [1, 0])
    assert only.as_numpy("sum") is None
    both = tc.infer("multi", inputs)  # none requested: all come back (binary, as asked)
    np.testing.assert_allclose(both.as_numpy("sum"), a + b)
    np.testing.assert_array_equal(both.as_numpy("argmax"), [1, 0])


@pytest.mark.parametrize("binary", [False, True])
def test_bytes_tensors(tc: triton.InferenceServerClient, binary: bool) -> None:
    text = np.array([b"hello", b"", "modelport ünicode".encode()], dtype=object)
    inp = triton.InferInput("text", [3], "BYTES")
    inp.set_data_from_numpy(text, binary_data=binary)
    outputs = [
        triton.InferRequestedOutput("upper", binary_data=binary),
        triton.InferRequestedOutput("length", binary_data=binary),
    ]
    result = tc.infer("shout", [inp], outputs=outputs)
    # tritonclient hands JSON BYTES back as str, binary ones as bytes.
    upper = [v if isinstance(v, bytes) else v.encode() for v in result.as_numpy("upper")]
    assert upper == [t.upper() for t in text]
    np.testing.assert_array_equal(result.as_numpy("length"), [5, 0, len(text[2])])


def test_generated_id_and_header(client: httpx.Client) -> None:
    x = np.ones((1, 4), dtype=np.float32)
    first = client.post("/v2/models/tiny/infer", json=infer_body(x))
    second = client.post("/v2/models/tiny/infer", json=infer_body(x))
    ids = {first.json()["id"], second.json()["id"]}
    assert len(ids) == 2 and all(len(i) == 32 for i in ids)
    assert first.headers["x-request-id"] == first.json()["id"]


def test_json_without_content_type_and_as_octet_stream(client: httpx.Client) -> None:
    import orjson

    x = np.ones((1, 4), dtype=np.float32)
    body = orjson.dumps(infer_body(x))
    for headers in ({}, {"content-type": "application/octet-stream"}):
        r = client.post("/v2/models/tiny/infer", content=body, headers=headers)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        np.testing.assert_allclose(
            r.json()["outputs"][0]["data"], tiny_reference(x, 1)[0], rtol=1e-5
        )


def test_fp16_bool_and_parameters(client: httpx.Client) -> None:
    x = np.array([[0.5, -1.25, 2.0, 3.5]], dtype=np.float32)
    body = infer_body(x, parameters={"custom": "kept"}, id="p1")
    r = client.post("/v2/models/tiny/versions/1/infer", json=body)
    assert r.status_code == 200 and r.json()["id"] == "p1"
    fp16 = {"inputs": [{"name": "x", "datatype": "FP16", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    r = client.post("/v2/models/tiny/infer", json=fp16)
    assert r.status_code == 400 and "expected datatype FP32, got FP16" in r.json()["error"]


def test_plain_json_predict_route(client: httpx.Client) -> None:
    x = np.random.default_rng(3).standard_normal((2, 4)).astype(np.float32)
    r = client.post("/v2/models/tiny/predict", json={"x": x.tolist()})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(r.json()["y"], tiny_reference(x, 1), rtol=1e-5, atol=1e-5)
    assert len(r.headers["x-request-id"]) == 32
    # A bare array goes to the only input.
    r = client.post("/v2/models/tiny/versions/1/predict", json=x.tolist())
    np.testing.assert_allclose(r.json()["y"], tiny_reference(x, 0), rtol=1e-5, atol=1e-5)
    # The model's own preprocess and postprocess turn JSON into tensors and back.
    r = client.post(
        "/v2/models/shout/predict", json={"texts": ["ab", "Cd"]}, headers={"x-request-id": "t1"}
    )
    assert r.json() == {"shouted": ["AB", "CD"]} and r.headers["x-request-id"] == "t1"
    bad = client.post("/v2/models/shout/predict", json={"wrong": 1})
    assert bad.status_code == 400 and "KeyError" in bad.json()["error"]


def test_models_listing_metrics_openapi_docs(server: LiveServer, client: httpx.Client) -> None:
    listing = client.get("/v2/models").json()["models"]
    assert {(m["name"], m["version"]) for m in listing} >= {("tiny", "1"), ("tiny", "2")}
    client.post("/v2/models/tiny/infer", json=infer_body(np.ones((1, 4), np.float32)))
    text = client.get("/metrics").text
    for name in (
        "modelport_requests_total",
        "modelport_request_duration_seconds_bucket",
        "modelport_queue_wait_seconds_bucket",
        "modelport_batch_size_bucket",
        "modelport_queue_depth",
        "modelport_requests_in_flight",
    ):
        assert name in text
    assert 'modelport_requests_total{model="tiny",protocol="rest",status="200",version="2"}' in text
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert set(ROUTES) <= set(server.app.routes)
    assert {(r.path, r.method.lower()) for r in server.app.routes} == {
        (path, method) for path, ops in doc["paths"].items() for method in ops
    }
    page = client.get("/docs")
    assert page.status_code == 200 and "/openapi.json" in page.text


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(tc: triton.InferenceServerClient, algorithm: str) -> None:
    x = np.random.default_rng(8).standard_normal((3, 4)).astype(np.float32)
    inp = triton.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = tc.infer("tiny", [inp], request_compression_algorithm=algorithm)
    np.testing.assert_allclose(result.as_numpy("y"), tiny_reference(x, 1), rtol=1e-5, atol=1e-5)
