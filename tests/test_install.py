"""modelport[onnx,serve] installs beside tritonclient in either order, and serves without a
working gRPC health module.

The slow tests build fresh virtual environments (from pip's cache when it has the wheels) and
install modelport from this checkout, then ``tritonclient[all]``, or the other way round, the
way a user adds a client to a server's environment or a server to a client's. Each then serves a
tiny ONNX model and answers the venv's own tritonclient over HTTP and gRPC, and the standard
gRPC health check. The environments hold no pip of their own: this interpreter's pip installs
into them (``pip --python``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.builders import mlp_reference, mlp_weights

ROOT = Path(__file__).resolve().parent.parent
BIN = "Scripts" if sys.platform == "win32" else "bin"
STARTUP = 60.0
X = np.arange(8, dtype=np.float32).reshape(2, 4) / 8

# Run with the venv's python: every answer the server gives to tritonclient (HTTP and gRPC)
# and to the standard health check; prints the inferred tensor as JSON.
CLIENT = """
import json, sys
import grpc
import numpy as np
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from grpc_health.v1 import health_pb2, health_pb2_grpc

http_url, grpc_url, x = sys.argv[1], sys.argv[2], np.array(json.loads(sys.argv[3]), np.float32)
with thttp.InferenceServerClient(http_url) as client:
    assert client.is_server_ready() and client.is_model_ready("tiny")
with tgrpc.InferenceServerClient(grpc_url) as client:
    assert client.is_server_ready() and client.is_model_ready("tiny")
    inp = tgrpc.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    y = client.infer("tiny", [inp]).as_numpy("y")
with grpc.insecure_channel(grpc_url) as channel:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "inference.GRPCInferenceService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, reply
print(json.dumps(y.tolist()))
"""

# What the quickstart install leaves out (the `io` extra, onnx, uvicorn[standard]'s extras).
NOT_IN_QUICKSTART = ["pandas", "pyarrow", "onnx", "watchfiles", "websockets", "dotenv"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(
    modelport: Path, model: Path, log: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    """``modelport serve MODEL`` on free ports until ready over HTTP; SIGTERM at the end."""
    http_port, grpc_port = free_port(), free_port()
    cmd = [str(modelport), "serve", str(model), "--http-port", str(http_port)]
    cmd += ["--grpc-port", str(grpc_port)]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MODELPORT_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**clean, **(env or {})}
        )
    http_url, grpc_url = f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"
    try:
        give_up = time.monotonic() + STARTUP
        with httpx.Client(base_url=f"http://{http_url}") as client:
            while True:
                if proc.poll() is not None:
                    pytest.fail(
                        f"modelport serve exited with {proc.returncode}:\n{log.read_text()}"
                    )
                if time.monotonic() > give_up:
                    pytest.fail(f"modelport serve was not ready:\n{log.read_text()}")
                try:
                    if client.get("/v2/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        yield proc, http_url, grpc_url
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def log_records(log: Path) -> list[dict[str, object]]:
    """The server's JSON log lines; anything else in it (a traceback) fails the test."""
    text = log.read_text()
    assert "Traceback" not in text, text
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --- the fallback: a health module that does not import --------------------------------------

BROKEN_HEALTH = """
from google.protobuf.runtime_version import VersionError

raise VersionError(
    "Detected incompatible Protobuf Gencode/Runtime versions when loading "
    "grpc_health/v1/health.proto: gencode 7.35.1 runtime 6.33.6. Runtime version cannot be "
    "older than the linked gencode version."
)
"""


def test_serves_without_a_health_module_that_does_not_import(
    tiny_onnx: Path, tmp_path: Path
) -> None:
    """As after ``pip install tritonclient[grpc]`` downgraded protobuf below what an installed
    grpcio-health-checking was generated for: one warning line, and every other call answers."""
    import grpc
    import tritonclient.grpc as tgrpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    # A grpc_health package ahead of the real one, whose generated module refuses this protobuf
    # as the real one does (the package itself imports: grpc imports it at start-up).
    shadow = tmp_path / "shadow"
    (shadow / "grpc_health" / "v1").mkdir(parents=True)
    (shadow / "grpc_health" / "__init__.py").write_text("")
    (shadow / "grpc_health" / "v1" / "__init__.py").write_text("")
    (shadow / "grpc_health" / "v1" / "health_pb2.py").write_text(BROKEN_HEALTH)
    path = os.pathsep.join(p for p in (str(shadow), os.environ.get("PYTHONPATH")) if p)
    log = tmp_path / "serve.log"
    modelport = Path(sys.executable).parent / "modelport"
    with serving(modelport, tiny_onnx, log, env={"PYTHONPATH": path}) as (_, http_url, grpc_url):
        assert httpx.get(f"http://{http_url}/v2/models/tiny/ready").status_code == 200
        with tgrpc.InferenceServerClient(grpc_url) as client:
            assert client.is_server_ready()
            inp = tgrpc.InferInput("x", [2, 4], "FP32")
            inp.set_data_from_numpy(X)
            y = client.infer("tiny", [inp]).as_numpy("y")
        np.testing.assert_allclose(y, mlp_reference(X, mlp_weights([4, 16, 3])), rtol=1e-5)
        with grpc.insecure_channel(grpc_url) as channel:
            with pytest.raises(grpc.RpcError) as info:
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    warnings = [r for r in log_records(log) if r["level"] != "info"]
    assert len(warnings) == 1, warnings
    message = str(warnings[0]["message"])
    assert warnings[0]["level"] == "warning"
    assert "health" in message and "VersionError" in message, message
    assert 'pip install "modelport[serve]"' in message, message


# --- modelport and tritonclient in one environment, in either order ---------------------------


def pip(python: Path, *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert proc.returncode == 0, (
        f"pip {' '.join(args)}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """modelport built once from this checkout, as ``pip install modelport`` would get it."""
    out = tmp_path_factory.mktemp("wheel")
    pip(Path(sys.executable), "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT))
    return next(out.glob("modelport-*.whl"))


@pytest.mark.slow
@pytest.mark.parametrize("order", ["modelport-then-tritonclient", "tritonclient-then-modelport"])
def test_installs_beside_tritonclient_in_either_order(
    order: str, wheel: Path, tiny_onnx: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / BIN / "python"
    ours, theirs = f"{wheel}[onnx,serve]", "tritonclient[all]"
    first, second = (ours, theirs) if order.startswith("modelport") else (theirs, ours)
    pip(python, "install", "--quiet", first)
    if first == ours:
        present = subprocess.run(
            [str(python), "-c", "import importlib.util as u, sys; "
             "print(' '.join(m for m in sys.argv[1:] if u.find_spec(m)))", *NOT_IN_QUICKSTART],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        assert present == [], f"the quickstart install brought {present}"
    pip(python, "install", "--quiet", second)
    pip(python, "check")

    log = tmp_path / "serve.log"
    with serving(venv / BIN / "modelport", tiny_onnx, log) as (_, http_url, grpc_url):
        client = subprocess.run(
            [str(python), "-c", CLIENT, http_url, grpc_url, json.dumps(X.tolist())],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert client.returncode == 0, client.stderr + log.read_text()
    y = np.array(json.loads(client.stdout), dtype=np.float32)
    np.testing.assert_allclose(y, mlp_reference(X, mlp_weights([4, 16, 3])), rtol=1e-5)
    assert [r for r in log_records(log) if r["level"] != "info"] == []
