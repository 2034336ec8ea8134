"""A real model repository built at test time, and real servers on loopback ports."""

from __future__ import annotations

import asyncio
import socket
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelport.runtime.dataplane import DataPlane
from modelport.server.app import create_app
from modelport.server.metrics import PrometheusMetrics
from modelport.server.protocol import http_protocol
from modelport.server.serve import build_dataplane
from modelport.settings import Settings
from tests.builders import mlp_reference, mlp_weights, onnx_mlp

TINY = [4, 16, 3]

BYTES_MODEL = '''
import numpy as np
from modelport import Model, Signature, TensorSpec


class Shout(Model):
    """Upper-cases text; also the plain-JSON path with pre/postprocess."""

    signature = Signature(
        inputs=(TensorSpec("text", "BYTES", (-1,)),),
        outputs=(TensorSpec("upper", "BYTES", (-1,)), TensorSpec("length", "INT64", (-1,))),
    )

    def preprocess(self, payload):
        return {"text": np.array([s.encode() for s in payload["texts"]], dtype=object)}

    def predict(self, inputs):
        text = inputs["text"]
        upper = np.array([t.upper() for t in text], dtype=object)
        return {"upper": upper, "length": np.array([len(t) for t in text], dtype=np.int64)}

    def postprocess(self, outputs):
        return {"shouted": [u.decode() for u in outputs["upper"]]}
'''

FLAKY_MODEL = '''
import time

import numpy as np
from modelport import Model, Signature, TensorSpec


class Flaky(Model):
    """y = 2x + 1 in 20 ms a call, but any row holding 13 makes the whole call raise."""

    signature = Signature(
        inputs=(TensorSpec("x", "FP32", (-1, 2)),),
        outputs=(TensorSpec("y", "FP32", (-1, 2)),),
    )

    def predict(self, inputs):
        time.sleep(0.02)
        x = inputs["x"]
        if (x == 13).any():
            raise ValueError("unlucky number")
        return {"y": x * 2 + 1}
'''

SLOW_MODEL = """
import time
from modelport import Model


class Slow(Model):
    '''The ONNX MLP beside this file, taking {delay} s per call: batches form behind it.'''

    def predict(self, inputs):
        time.sleep({delay})
        return super().predict(inputs)
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def tiny_reference(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """What the ``tiny`` MLP built with ``seed`` answers, computed with numpy."""
    return mlp_reference(x, mlp_weights(TINY, seed)).astype(np.float32)


def slow_model(directory: Path, delay: float, batching: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    onnx_mlp(directory / "model.onnx", TINY, seed=0)
    write(directory / "model.py", SLOW_MODEL.format(delay=delay))
    write(directory / "modelport.yaml", f"batching: {batching}\n")
    return directory


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny`` (versions 1 and 2), ``multi``, ``shout`` (BYTES), ``flaky``, ``slow``."""
    from tests.builders import onnx_multi_io

    root = tmp_path_factory.mktemp("repo")
    for version in ("1", "2"):
        (root / "tiny" / version).mkdir(parents=True)
    onnx_mlp(root / "tiny" / "1" / "model.onnx", TINY, seed=0)
    onnx_mlp(root / "tiny" / "2" / "model.onnx", TINY, seed=1)
    (root / "multi").mkdir()
    onnx_multi_io(root / "multi" / "model.onnx")
    write(root / "shout" / "model.py", BYTES_MODEL)
    write(root / "flaky" / "model.py", FLAKY_MODEL)
    write(root / "flaky" / "modelport.yaml", "batching: {max_batch_size: 64}\n")
    slow_model(root / "slow", 0.03, "{max_batch_size: 64, max_queue_delay_ms: 2}")
    return root


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class LiveServer:
    """The real app under uvicorn in a background thread, on a free loopback port."""

    def __init__(self, dataplane: DataPlane, settings: Settings, **protocol: Any) -> None:
        import uvicorn

        self.dataplane = dataplane
        self.app = create_app(dataplane, settings)
        self.sock = free_socket()
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app, lifespan="on", log_config=None, http=http_protocol(**protocol), loop="none"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.sock]))

    def __enter__(self) -> LiveServer:
        self.thread.start()
        with httpx.Client(base_url=self.url) as client:
            for _ in range(600):
                try:
                    if client.get("/v2/health/ready").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                threading.Event().wait(0.05)
        raise RuntimeError("server did not become ready")

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def start(path: Path, protocol: dict[str, float] | None = None, **settings: Any) -> LiveServer:
    cfg = Settings(model_path=path, grpc_port=None, **settings)
    dataplane = build_dataplane(cfg)
    assert isinstance(dataplane.metrics, PrometheusMetrics)
    return LiveServer(dataplane, cfg, **(protocol or {}))


@pytest.fixture(scope="session")
def server(repo: Path) -> Iterator[LiveServer]:
    """One server for the whole repository; bodies limited to 256 KiB."""
    with start(repo, max_body_size=256 * 1024) as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def infer_body(x: np.ndarray, name: str = "x", **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": name, "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}
        ],
        **extra,
    }


def assert_healthy(client: httpx.Client) -> None:
    """The server still answers a correct request correctly."""
    x = np.arange(8, dtype=np.float32).reshape(2, 4) / 10
    r = client.post("/v2/models/tiny/infer", json=infer_body(x))
    assert r.status_code == 200, r.text
    y = np.asarray(r.json()["outputs"][0]["data"], dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(y, tiny_reference(x, seed=1), rtol=1e-5, atol=1e-5)


class ServerLogs:
    """A live ``modelport serve``'s JSON log lines, read from its stderr in a thread."""

    def __init__(self, proc: Any) -> None:
        import json
        import threading

        self.lines: list[dict[str, Any]] = []

        def read() -> None:
            for line in proc.stderr:
                if line.startswith("{"):
                    self.lines.append(json.loads(line))

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()

    def count(self, message: str, **fields: Any) -> int:
        """Lines with ``message`` and ``fields``."""
        return sum(
            e["message"] == message and all(e.get(k) == v for k, v in fields.items())
            for e in list(self.lines)
        )
