"""The image recipe, without a Docker engine: the bundle's pinned requirements installed into
a fresh virtual environment, and the Dockerfile's exact ENTRYPOINT run from the bundle (the
image's WORKDIR), then called over HTTP and gRPC and stopped with SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

import modelport
from modelport.deploy import Bundle

from .test_docker import instructions

HANG_GUARD = 120  # seconds before a broken server fails the test instead of hanging CI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def image_venv(docker_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding exactly the bundle's requirements.txt, as the build stage does."""
    venv = tmp_path_factory.mktemp("image") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    install = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-r", "requirements.txt"],
        cwd=docker_bundle.directory,  # the build stage's WORKDIR, where ./wheels/ resolves
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-4000:]
    return venv


def test_entrypoint_serves_the_model_from_a_fresh_environment(
    docker_bundle: Bundle, image_venv: Path, iris_dir: Path
) -> None:
    freeze = subprocess.run(
        [str(image_venv / "bin" / "python"), "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    pins = (docker_bundle.directory / "requirements.txt").read_text().splitlines()
    for pin in pins:
        if "==" in pin:  # every pin is exactly what got installed; nothing floated
            assert pin.lower().replace("_", "-") in freeze.replace("_", "-"), pin

    steps = instructions(docker_bundle.directory / "Dockerfile")
    entrypoint = json.loads(next(args for kw, args in reversed(steps) if kw == "ENTRYPOINT"))
    http_port, grpc_port = free_port(), free_port()
    # `docker run IMAGE --http-port ...` appends to the ENTRYPOINT just like this.
    argv = [*entrypoint, "--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    env = {
        "PATH": f"{image_venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",  # the image's ENV PATH
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "HOME": str(image_venv.parent),
    }
    server = subprocess.Popen(
        argv,
        cwd=docker_bundle.directory,  # the runtime stage's WORKDIR holds models/ the same way
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + HANG_GUARD
        with httpx.Client(base_url=base, timeout=10) as client:
            while True:
                assert server.poll() is None, server.communicate()[0]
                try:
                    if client.get("/v2/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "server never became ready"
                time.sleep(0.2)
            assert client.get("/v2/health/live").json() == {"live": True}
            x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
            tensor = {"name": "x", "datatype": "FP32", "shape": [3, 4], "data": x.ravel().tolist()}
            reply = client.post("/v2/models/iris_mlp/infer", json={"inputs": [tensor]})
            assert reply.status_code == 200, reply.text
            (out,) = reply.json()["outputs"]
            expected = modelport.load(iris_dir).predict_batch({"x": x})["y"]
            np.testing.assert_allclose(np.reshape(out["data"], out["shape"]), expected, rtol=1e-6)
            bad = client.post("/v2/models/iris_mlp/infer", content=b"{oops")
            assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]
            assert client.get("/v2/health/ready").status_code == 200

        import tritonclient.grpc as grpcclient

        grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        try:
            assert grpc.is_server_ready()
            assert grpc.get_model_metadata("iris_mlp").name == "iris_mlp"
        finally:
            grpc.close()

        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=HANG_GUARD)
        assert server.returncode == 0, output
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()


def test_bundle_names_no_path_outside_itself(docker_bundle: Bundle) -> None:
    for line in (docker_bundle.directory / "requirements.txt").read_text().splitlines():
        assert not line.startswith(("/", "file:")), line
        if line.startswith("./"):
            assert (docker_bundle.directory / line).is_file()


def test_lambda_requirements_are_enough_for_the_handler(lambda_bundle: Bundle) -> None:
    """The Lambda image's `pip install --target`, then the handler imported the way Lambda's
    runtime does (the task root on sys.path, no other site-packages) and invoked."""
    root = lambda_bundle.directory
    target = root.parent / "task-root"
    pip = [sys.executable, "-m", "pip", "install", "-q", "-r", "requirements.txt"]
    install = subprocess.run(
        [*pip, "--target", str(target)],  # as the Lambda Dockerfile's RUN does
        cwd=root,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-4000:]
    env_line = dict(instructions(root / "Dockerfile"))["ENV"]
    name, _, value = env_line.partition("=")
    script = f"""
import json, sys
sys.path.insert(0, {str(target)!r})
import modelport.aws_lambda as fn
assert fn.__file__.startswith({str(target)!r}), fn.__file__
event = {{"version": "2.0", "rawPath": "/v2/models/iris_mlp/infer", "body": sys.argv[1],
         "requestContext": {{"http": {{"method": "POST"}}}}, "isBase64Encoded": False}}
print(json.dumps(fn.handler(event, None)))
"""
    body = json.dumps(
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0, 1, 2, 3]}]}
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script, body],  # -S: no site-packages but the task's
        env={name: value.replace("${LAMBDA_TASK_ROOT}", str(root)), "LAMBDA_TASK_ROOT": str(root)},
        capture_output=True,
        text=True,
        timeout=HANG_GUARD,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout)
    assert result["statusCode"] == 200, result
    assert json.loads(result["body"])["outputs"][0]["shape"] == [1, 3]
    installed = {p.name.split("-")[0].lower() for p in target.glob("*.dist-info")}
    assert "uvicorn" not in installed and "starlette" not in installed  # no HTTP server
