"""``modelport serve`` as a subprocess, called over gRPC by tritonclient, then SIGTERM."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from tests.builders import mlp_reference, mlp_weights, onnx_mlp

HANG_GUARD = 60.0

SLOW_MODEL = '''
import pathlib
import time

from modelport import Model, Signature, TensorSpec


class Slow(Model):
    """y = 2 x; the input 7 announces itself in a file, then takes a while."""

    signature = Signature(
        inputs=(TensorSpec("x", "FP32", (-1, 1)),), outputs=(TensorSpec("y", "FP32", (-1, 1)),)
    )

    def predict(self, inputs):
        if (inputs["x"] == 7).any():
            pathlib.Path(__file__).with_name("started").touch()
            time.sleep(1.0)
        return {"y": inputs["x"] * 2}
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "tiny" / "1").mkdir(parents=True)
    onnx_mlp(root / "tiny" / "1" / "model.onnx", [4, 16, 3], seed=0)
    (root / "slow").mkdir()
    (root / "slow" / "model.py").write_text(textwrap.dedent(SLOW_MODEL))
    return root


@pytest.fixture
def served(repo: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    grpc_port = free_port()
    exe = shutil.which("modelport", path=str(Path(sys.executable).parent)) or "modelport"
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [exe, "serve", str(repo), "--http-port", str(free_port()), "--grpc-port",
             str(grpc_port), "--trust", "--log-format", "text"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"127.0.0.1:{grpc_port}"
    try:
        _wait_ready(proc, url, log)
        yield proc, url, repo
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(HANG_GUARD)


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    give_up = time.monotonic() + HANG_GUARD
    with triton.InferenceServerClient(url) as client:
        while time.monotonic() < give_up:
            if proc.poll() is not None:
                pytest.fail(f"modelport serve exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if client.is_server_ready():
                    return
            except InferenceServerException:
                pass
            time.sleep(0.05)
    pytest.fail(f"modelport serve was not ready over gRPC:\n{log.read_text()}")


def test_serve_answers_tritonclient_grpc_and_drains_on_sigterm(
    served: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    proc, url, repo = served
    x = np.random.default_rng(3).standard_normal((4, 4)).astype(np.float32)
    with triton.InferenceServerClient(url) as client:
        assert client.is_model_ready("tiny") and client.is_model_ready("slow")
        meta = client.get_model_metadata("tiny")
        assert (meta.platform, list(meta.versions)) == ("onnx", ["1"])
        inp = triton.InferInput("x", [4, 4], "FP32").set_data_from_numpy(x)
        y = client.infer("tiny", [inp], model_version="1").as_numpy("y")
        np.testing.assert_allclose(
            y, mlp_reference(x, mlp_weights([4, 16, 3])), rtol=1e-5, atol=1e-6
        )
        bad = triton.InferInput("x", [4, 3], "FP32").set_data_from_numpy(x[:, :3].copy())
        with pytest.raises(InferenceServerException) as info:
            client.infer("tiny", [bad])
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT"

        # A call in flight when SIGTERM arrives is still answered, then the server exits 0.
        answer: dict[str, np.ndarray] = {}

        def slow_call() -> None:
            seven = np.full((1, 1), 7, np.float32)
            inp = triton.InferInput("x", [1, 1], "FP32").set_data_from_numpy(seven)
            answer["y"] = client.infer("slow", [inp]).as_numpy("y")

        caller = threading.Thread(target=slow_call)
        caller.start()
        give_up = time.monotonic() + HANG_GUARD
        while not (repo / "slow" / "started").exists() and time.monotonic() < give_up:
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        caller.join(HANG_GUARD)
    np.testing.assert_array_equal(answer["y"], [[14.0]])
    assert proc.wait(HANG_GUARD) == 0
