"""A model's exception is the server's business: callers get the model and the request id, the
log gets the class and message under that id; ``expose_errors`` sends them on (development)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton

import modelport
from modelport.server.errors import private_message
from modelport.settings import Settings
from tests.server.conftest import infer_body, start, write
from tests.server.grpc_server import ServerThread

SECRET = "boom at /srv/internal/path"
RAISER = f'''
from modelport import Model, Signature, TensorSpec


class Raiser(Model):
    """y = x, unless x holds 13: then it raises, an internal path in the message."""

    signature = Signature(
        inputs=(TensorSpec("x", "FP32", (-1, 1)),), outputs=(TensorSpec("y", "FP32", (-1, 1)),)
    )

    def predict(self, inputs):
        if (inputs["x"] == 13).any():
            raise RuntimeError({SECRET!r})
        return {{"y": inputs["x"]}}
'''
THIRTEEN = np.array([[13.0]], np.float32)
ONE = np.ones((1, 1), np.float32)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    write(root / "raiser" / "model.py", RAISER)
    return root


def _logged(caplog: pytest.LogCaptureFixture, request_id: str) -> bool:
    """The server logged the exception's message under the request id."""
    return any(
        getattr(r, "request_id", None) == request_id and SECRET in getattr(r, "error", "")
        for r in caplog.records
    )


@pytest.mark.parametrize("expose", [False, True], ids=["private", "exposed"])
def test_rest(repo: Path, caplog: pytest.LogCaptureFixture, expose: bool) -> None:
    with (
        caplog.at_level(logging.ERROR, "modelport"),
        start(repo, expose_errors=expose) as live,
        httpx.Client(base_url=live.url) as client,
    ):
        r = client.post("/v2/models/raiser/infer", json=infer_body(THIRTEEN, id="req-13"))
        anonymous = client.post("/v2/models/raiser/infer", json=infer_body(THIRTEEN))
        good = client.post("/v2/models/raiser/infer", json=infer_body(ONE))
    assert (r.status_code, anonymous.status_code, good.status_code) == (500, 500, 200)
    if expose:
        assert SECRET in r.json()["error"]
    else:
        assert r.json()["error"] == "model 'raiser' failed (request id req-13)"
        # A request without an id still gets one to quote, and the log has it.
        error = anonymous.json()["error"]
        assert error.startswith("model 'raiser' failed (request id ") and SECRET not in error
        assert _logged(caplog, error.removesuffix(")").rsplit(" ", 1)[1])
    assert _logged(caplog, "req-13")


@pytest.fixture(params=[False, True], ids=["private", "exposed"])
def grpc_server(repo: Path, request: pytest.FixtureRequest) -> Iterator[tuple[ServerThread, bool]]:
    model = modelport.load(repo / "raiser")
    running = ServerThread([model], settings=Settings(expose_errors=request.param))
    yield running, request.param
    running.close()


def test_grpc(grpc_server: tuple[ServerThread, bool], caplog: pytest.LogCaptureFixture) -> None:
    server, expose = grpc_server
    with caplog.at_level(logging.ERROR, "modelport"), triton.InferenceServerClient(server.url) as c:
        bad = triton.InferInput("x", [1, 1], "FP32").set_data_from_numpy(THIRTEEN)
        with pytest.raises(Exception) as info:
            c.infer("raiser", [bad], request_id="g-13")
        ok = triton.InferInput("x", [1, 1], "FP32").set_data_from_numpy(ONE)
        assert c.infer("raiser", [ok]).as_numpy("y").tolist() == [[1.0]]  # still serving
    message = str(info.value)
    assert "StatusCode.INTERNAL" in message
    if expose:
        assert SECRET in message
    else:
        assert "model 'raiser' failed (request id g-13)" in message and SECRET not in message
    assert _logged(caplog, "g-13")


def test_the_private_message() -> None:
    assert private_message("m", "r1") == "model 'm' failed (request id r1)"
    assert private_message(None, None) == "internal error"
