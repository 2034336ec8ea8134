"""Readiness while models load and warm up, a model that fails to load, and the repository
layouts ``serve`` understands."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelport import Model, Signature, TensorSpec
from modelport.config import BatchingConfig, ModelConfig
from modelport.errors import ConfigError
from modelport.runtime.dataplane import DataPlane
from modelport.runtime.repository import discover
from modelport.settings import Settings
from tests.builders import onnx_mlp
from tests.server.conftest import TINY, LiveServer, write


class Gated(Model):
    """Loads when the test opens the gate; records the batch sizes it warmed up on."""

    signature = Signature(
        inputs=(TensorSpec("x", "FP32", (-1, 2)),), outputs=(TensorSpec("y", "FP32", (-1, 2)),)
    )

    def __init__(self, fail: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = threading.Event()
        self.fail = fail
        self.seen: list[int] = []

    def load(self) -> None:
        self.gate.wait(30)
        if self.fail:
            raise RuntimeError("weights are corrupt")

    def predict(self, inputs: Any) -> dict[str, np.ndarray]:
        self.seen.append(len(inputs["x"]))
        return {"y": inputs["x"] + 1}


class Starting(LiveServer):
    """A live server that does not wait for readiness."""

    def __enter__(self) -> Starting:
        self.thread.start()
        with httpx.Client(base_url=self.url) as client:
            for _ in range(600):
                try:
                    client.get("/v2/health/live")
                    return self
                except httpx.TransportError:
                    threading.Event().wait(0.05)
        raise RuntimeError("server did not start")


def test_not_ready_while_loading_then_ready_after_warm_up() -> None:
    model = Gated(config=ModelConfig(name="gated", batching=BatchingConfig(max_batch_size=8)))
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
    live = Starting(DataPlane([model]), Settings(grpc_port=None))
    with live, httpx.Client(base_url=live.url) as client:
        assert client.get("/v2/health/live").status_code == 200
        r = client.get("/v2/health/ready")
        assert r.status_code == 503 and r.json() == {"ready": False}
        assert client.get("/v2/models/gated/ready").json() == {"name": "gated", "ready": False}
        loading = client.post("/v2/models/gated/infer", json=body)
        assert loading.status_code == 503 and "is loading" in loading.json()["error"]
        assert loading.headers["retry-after"] == "1"
        model.gate.set()
        for _ in range(600):
            if client.get("/v2/health/ready").status_code == 200:
                break
            threading.Event().wait(0.05)
        assert model.seen == [1, 8]  # warmed up at batch 1 and at max_batch_size
        r = client.post("/v2/models/gated/infer", json=body)
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [2.0, 3.0]


def test_a_model_that_fails_to_load() -> None:
    broken = Gated(fail=True, config=ModelConfig(name="broken"))
    broken.gate.set()
    good = Gated(config=ModelConfig(name="good"))
    good.gate.set()
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
    live = Starting(DataPlane([broken, good]), Settings(grpc_port=None))
    with live, httpx.Client(base_url=live.url) as client:
        for _ in range(600):
            if client.get("/v2/models/good/ready").status_code == 200:
                break
            threading.Event().wait(0.05)
        assert client.get("/v2/health/ready").status_code == 503
        r = client.post("/v2/models/broken/infer", json=body)
        assert r.status_code == 503
        assert "failed to load: RuntimeError: weights are corrupt" in r.json()["error"]
        assert client.post("/v2/models/good/infer", json=body).status_code == 200


def test_repository_layouts(tmp_path: Path) -> None:
    (tmp_path / "single").mkdir()
    onnx_mlp(tmp_path / "single" / "net.onnx", TINY)
    assert [m.name for m in discover(tmp_path / "single" / "net.onnx")] == ["net"]
    assert [m.name for m in discover(tmp_path / "single")] == ["single"]
    # One model with versions, a model-level config naming it and setting its batching.
    for v in ("1", "3"):
        (tmp_path / "m" / v).mkdir(parents=True)
        onnx_mlp(tmp_path / "m" / v / "model.onnx", TINY)
    write(tmp_path / "m" / "modelport.yaml", "name: mlp\nbatching: {max_batch_size: 4}\n")
    models = discover(tmp_path / "m", options={"intra_op_threads": 1})
    assert [(m.name, m.version, m.batching.max_batch_size) for m in models] == [
        ("mlp", "1", 4),
        ("mlp", "3", 4),
    ]
    assert all(m.options["intra_op_threads"] == 1 for m in models)
    # A repository of both kinds.
    repo = tmp_path / "repo"
    (repo / "a").mkdir(parents=True)
    onnx_mlp(repo / "a" / "model.onnx", TINY)
    (repo / "b" / "7").mkdir(parents=True)
    onnx_mlp(repo / "b" / "7" / "model.onnx", TINY)
    (repo / "notes").mkdir()
    assert sorted((m.name, m.version) for m in discover(repo)) == [("a", "1"), ("b", "7")]
    with pytest.raises(ConfigError, match="no models found"):
        discover(repo / "notes")


def test_readiness_is_false_while_draining_but_requests_still_answer() -> None:
    model = Gated(config=ModelConfig(name="gated"))
    model.gate.set()
    dataplane = DataPlane([model])
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
    with (
        LiveServer(dataplane, Settings(grpc_port=None)) as live,
        httpx.Client(base_url=live.url) as client,
    ):
        dataplane.draining = True  # what SIGTERM does first (server/serve.py)
        assert client.get("/v2/health/ready").status_code == 503
        assert client.get("/v2/models/gated/ready").json()["ready"] is False
        assert client.post("/v2/models/gated/infer", json=body).status_code == 200
