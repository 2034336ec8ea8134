"""``modelport.aws_lambda``: every event kind, good and bad bodies, in each kind's format.

The events (``events/``, whose README names their sources) are the SAM CLI's own and AWS
Powertools' Function URL event, with the method, path and body of each request set on them.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelport.aws_lambda import LambdaHandler
from modelport.deploy import Bundle

from .conftest import ROOT, X
from .test_docker import instructions

EVENTS = Path(__file__).parent / "events"
SOURCES = {
    "rest": EVENTS / "apigateway-aws-proxy.json",
    "http": EVENTS / "apigateway-http-api-proxy.json",
    "alb": EVENTS / "alb-request.json",
    "function-url": EVENTS / "function-url.json",
}
KINDS = list(SOURCES)
MODEL = "iris_mlp"


def event(
    kind: str, method: str, path: str, body: str | bytes = "", b64: bool = False
) -> dict[str, Any]:
    """The ``kind`` fixture event, as a request for ``method path`` with ``body``."""
    ev: dict[str, Any] = copy.deepcopy(json.loads(SOURCES[kind].read_text()))
    raw = body.encode() if isinstance(body, str) else body
    ev["body"] = base64.b64encode(raw).decode() if b64 else raw.decode()
    ev["isBase64Encoded"] = b64
    if kind in ("http", "function-url"):
        ev["rawPath"] = path
        ev["requestContext"]["http"].update(method=method, path=path)
    else:
        ev["httpMethod"] = method
        ev["path"] = path
        if kind == "rest":
            ev["requestContext"].update(httpMethod=method, path=f"/prod{path}")
            ev["pathParameters"] = {"proxy": path.lstrip("/")}
    return ev


def infer_body(x: np.ndarray = X, **extra: Any) -> str:
    tensor = {"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
    return json.dumps({"inputs": [tensor], **extra})


def answer(result: dict[str, Any]) -> Any:
    body = result["body"]
    return json.loads(base64.b64decode(body) if result["isBase64Encoded"] else body)


def headers(result: dict[str, Any]) -> dict[str, str]:
    if "multiValueHeaders" in result:
        return {k: v[0] for k, v in result["multiValueHeaders"].items()}
    return dict(result["headers"])


def check_format(kind: str, result: dict[str, Any], status: int) -> None:
    """The response shape Lambda's caller of that kind accepts."""
    assert result["statusCode"] == status
    assert isinstance(result["body"], str) and isinstance(result["isBase64Encoded"], bool)
    if kind == "alb":
        assert result["statusDescription"].startswith(f"{status} ")
    else:
        assert "statusDescription" not in result
    assert headers(result)["content-type"].startswith("application/")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("b64", [False, True], ids=["text", "base64"])
def test_infer(handler: LambdaHandler, expected: np.ndarray, kind: str, b64: bool) -> None:
    result = handler(event(kind, "POST", f"/v2/models/{MODEL}/infer", infer_body(), b64))
    check_format(kind, result, 200)
    doc = answer(result)
    assert (doc["model_name"], doc["model_version"]) == (MODEL, "3")
    (out,) = doc["outputs"]
    assert (out["name"], out["shape"]) == ("y", [2, 3])
    np.testing.assert_allclose(np.array(out["data"]).reshape(2, 3), expected, rtol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_plain_json_predict(handler: LambdaHandler, expected: np.ndarray, kind: str) -> None:
    result = handler(event(kind, "POST", f"/v2/models/{MODEL}/predict", json.dumps(X.tolist())))
    check_format(kind, result, 200)
    np.testing.assert_allclose(np.array(answer(result)["y"]), expected, rtol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_health_and_metadata(handler: LambdaHandler, kind: str) -> None:
    assert answer(handler(event(kind, "GET", "/v2/health/live"))) == {"live": True}
    assert answer(handler(event(kind, "GET", "/v2/health/ready"))) == {"ready": True}
    result = handler(event(kind, "GET", f"/v2/models/{MODEL}"))
    check_format(kind, result, 200)
    meta = answer(result)
    assert (meta["name"], meta["versions"], meta["platform"]) == (MODEL, ["3"], "onnx")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert answer(handler(event(kind, "GET", f"/v2/models/{MODEL}/ready")))["ready"] is True


BAD = [
    pytest.param(
        "POST", f"/v2/models/{MODEL}/infer", "{not json", 400, "not valid JSON", id="json"
    ),
    pytest.param("POST", f"/v2/models/{MODEL}/infer", "", 400, "empty", id="empty"),
    pytest.param("POST", f"/v2/models/{MODEL}/infer", '{"inputs": []}', 400, '"inputs"', id="none"),
    pytest.param(
        "POST",
        f"/v2/models/{MODEL}/infer",
        json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": [1]}]}),
        400,
        "'x'",
        id="shape",
    ),
    pytest.param(
        "POST",
        f"/v2/models/{MODEL}/infer",
        json.dumps({"inputs": [{"name": "x", "datatype": "FP99", "shape": [1], "data": [1]}]}),
        400,
        "FP99",
        id="datatype",
    ),
    pytest.param(
        "POST", f"/v2/models/{MODEL}/predict", "[[1, 2]", 400, "not valid JSON", id="predict"
    ),
    pytest.param("POST", "/v2/models/nope/infer", infer_body(), 404, "nope", id="unknown-model"),
    pytest.param("GET", f"/v2/models/{MODEL}/infer", "", 405, "POST", id="method"),
    pytest.param("GET", "/v3/what", "", 404, "no route", id="route"),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("method", "path", "body", "status", "says"), BAD)
def test_bad_requests_get_a_4xx_error_body(
    handler: LambdaHandler,
    expected: np.ndarray,
    kind: str,
    method: str,
    path: str,
    body: str,
    status: int,
    says: str,
) -> None:
    result = handler(event(kind, method, path, body))
    check_format(kind, result, status)
    error = answer(result)
    assert list(error) == ["error"] and says in error["error"]
    # ... and the next good request is answered as usual.
    good = handler(event(kind, "POST", f"/v2/models/{MODEL}/infer", infer_body()))
    assert good["statusCode"] == 200


@pytest.mark.parametrize("kind", KINDS)
def test_body_that_is_not_base64(handler: LambdaHandler, kind: str) -> None:
    ev = event(kind, "POST", f"/v2/models/{MODEL}/infer", infer_body())
    ev["isBase64Encoded"] = True  # but the body is plain JSON text
    result = handler(ev)
    check_format(kind, result, 400)
    assert "base64" in answer(result)["error"]


@pytest.mark.parametrize("bad", [None, [], {"foo": 1}, "text"], ids=repr)
def test_unrecognised_events(handler: LambdaHandler, bad: Any) -> None:
    result = handler(bad)
    assert result["statusCode"] == 400
    assert "unrecognised event" in answer(result)["error"]


def test_binary_tensor_extension(handler: LambdaHandler, expected: np.ndarray) -> None:
    # Inputs as raw bytes after the JSON header, output requested the same way.
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [2, 4],
                    "parameters": {"binary_data_size": X.nbytes},
                }
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()
    ev = event("http", "POST", f"/v2/models/{MODEL}/infer", header + X.tobytes(), b64=True)
    ev["headers"]["Inference-Header-Content-Length"] = str(len(header))
    result = handler(ev)
    assert result["statusCode"] == 200 and result["isBase64Encoded"] is True
    assert result["headers"]["content-type"] == "application/octet-stream"
    raw = base64.b64decode(result["body"])
    split = int(result["headers"]["inference-header-content-length"])
    (out,) = json.loads(raw[:split])["outputs"]
    assert out["parameters"]["binary_data_size"] == len(raw) - split == expected.nbytes
    got = np.array(struct.unpack(f"<{expected.size}f", raw[split:])).reshape(expected.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_stage_and_base_path_prefixes_are_ignored(handler: LambdaHandler) -> None:
    ev = event("http", "POST", f"/prod/api/v2/models/{MODEL}/infer", infer_body())
    assert handler(ev)["statusCode"] == 200
    assert answer(handler(event("http", "GET", "/prod/v2")))["name"] == "modelport"


def test_alb_with_multi_value_headers_answers_in_kind(handler: LambdaHandler) -> None:
    ev = event("alb", "POST", f"/v2/models/{MODEL}/infer", infer_body())
    ev["multiValueHeaders"] = {k: [v] for k, v in ev.pop("headers").items()}
    result = handler(ev)
    assert result["statusCode"] == 200 and "headers" not in result
    assert result["multiValueHeaders"]["content-type"] == ["application/json"]


def test_module_handler_loads_the_baked_in_model_at_init(lambda_bundle: Bundle) -> None:
    # The Lambda image's own ENV line, with the bundle standing in for LAMBDA_TASK_ROOT.
    env_line = dict(instructions(lambda_bundle.directory / "Dockerfile"))["ENV"]
    name, _, value = env_line.partition("=")
    root = str(lambda_bundle.directory)
    env = {**os.environ, "LAMBDA_TASK_ROOT": root, name: value.replace("${LAMBDA_TASK_ROOT}", root)}
    script = """
import json, sys
import modelport.aws_lambda as fn
assert fn._handler is not None and fn._handler.dataplane.ready(), "not loaded at import"
event = json.loads(sys.stdin.read())
print(json.dumps([fn.handler(e, None) for e in event]))
"""
    events = [
        event("function-url", "GET", "/v2/health/ready"),
        event("rest", "POST", f"/v2/models/{MODEL}/infer", infer_body(), b64=True),
    ]
    proc = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(events),
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    ready, infer = json.loads(proc.stdout)
    assert answer(ready) == {"ready": True}
    assert answer(infer)["model_name"] == MODEL


@pytest.mark.parametrize("kind", KINDS)
def test_malformed_event_of_a_known_kind(handler: LambdaHandler, kind: str) -> None:
    ev = event(kind, "POST", f"/v2/models/{MODEL}/infer", infer_body())
    ev["headers"] = ["not", "a", "mapping"]
    ev.pop("multiValueHeaders", None)
    result = handler(ev)
    check_format(kind, result, 400)
    assert "malformed" in answer(result)["error"]
    assert handler(event(kind, "GET", "/v2/health/live"))["statusCode"] == 200
