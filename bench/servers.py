"""The servers under test, each a separate process pinned to the server CPUs, and the checks
that each one answers the workload's request with the right numbers before it is measured."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from .load import HarnessError, pinned
from .workloads import OUTPUT, Bodies, output_of_v2_json

__all__ = [
    "Server",
    "answers",
    "bare_asgi",
    "bare_grpc",
    "flask_baseline",
    "free_port",
    "modelport_serve",
    "post",
    "verify_binary",
    "verify_grpc",
    "verify_json",
]

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """A server process started in its own process group, stopped with it on exit."""

    def __init__(
        self, name: str, cmd: Sequence[str], *, cpus: str | None, env: dict[str, str], log: Path
    ) -> None:
        self.name = name
        self.cmd = pinned(cmd, cpus)
        self.env = {**os.environ, **env}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0

    def start(self) -> Server:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.started = time.perf_counter()
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.cmd,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_until(self, ready: Callable[[], bool], timeout: float = 60.0) -> float:
        """Poll ``ready`` every 5 ms; return the seconds since the process started.

        Fails if the process exits or ``timeout`` passes first.
        """
        assert self.proc is not None
        began = self.started
        while True:
            if self.proc.poll() is not None:
                raise HarnessError(f"{self.name} exited with {self.proc.returncode}: {self.tail()}")
            try:
                if ready():
                    return time.perf_counter() - began
            except OSError:
                pass
            if time.perf_counter() - began > timeout:
                raise HarnessError(f"{self.name} not ready after {timeout:.0f} s: {self.tail()}")
            time.sleep(0.005)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def bare_asgi(bodies: Bodies, port: int, *, cpus: str | None, log: Path) -> Server:
    """C2: ``bench.bare_asgi`` under uvicorn with httptools and uvloop."""
    cmd = [sys.executable, "-m", "uvicorn", "bench.bare_asgi:app", "--host", HOST]
    cmd += ["--port", str(port), "--loop", "uvloop", "--http", "httptools"]
    cmd += ["--lifespan", "off", "--no-access-log", "--log-level", "warning"]
    env = {"BENCH_RESPONSE": str(bodies.json_response)}
    return Server("C2 bare ASGI", cmd, cpus=cpus, env=env, log=log)


def bare_grpc(bodies: Bodies, port: int, *, cpus: str | None, log: Path) -> Server:
    """C2 for gRPC: ``bench.bare_grpc``, a grpc.aio server answering a precomputed response."""
    cmd = [sys.executable, "-m", "bench.bare_grpc", str(port), str(bodies.grpc_response)]
    return Server("C2 bare gRPC", cmd, cpus=cpus, env={}, log=log)


def flask_baseline(
    bodies: Bodies, port: int, *, workers: int, cpus: str | None, log: Path
) -> Server:
    """B: ``bench.baseline_flask`` under gunicorn with ``workers`` sync workers."""
    cmd = [sys.executable, "-m", "gunicorn", "--workers", str(workers)]
    cmd += ["--bind", f"{HOST}:{port}", "--log-level", "warning", "bench.baseline_flask:app"]
    env = {"BENCH_MODEL_DIR": str(bodies.directory)}
    return Server("B Flask+gunicorn", cmd, cpus=cpus, env=env, log=log)


def modelport_serve(
    bodies: Bodies, http_port: int, grpc_port: int, *, cpus: str | None, log: Path
) -> Server:
    """``modelport serve`` on the workload's model directory, HTTP and gRPC."""
    exe = shutil.which("modelport", path=str(Path(sys.executable).parent)) or shutil.which(
        "modelport"
    )
    if exe is None:
        raise HarnessError("the modelport command is not installed: pip install -e .")
    cmd = [exe, "serve", str(bodies.directory), "--host", HOST]
    cmd += ["--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    return Server("modelport", cmd, cpus=cpus, env={}, log=log)


def post(
    port: int, path: str, body: bytes, headers: dict[str, str], timeout: float = 10.0
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP POST on a fresh connection: ``(status, headers, body)``."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def answers(verify: Callable[[], None]) -> bool:
    """Whether ``verify`` passes (for polling a starting server)."""
    try:
        verify()
    except HarnessError:
        return False
    return True


def infer_path(model: str) -> str:
    return f"/v2/models/{model}/infer"


def verify_json(port: int, model: str, bodies: Bodies, expected: np.ndarray) -> None:
    """POST the JSON request once; the answer must be 200 with the expected output."""
    status, _, raw = post(
        port,
        infer_path(model),
        bodies.json_request.read_bytes(),
        {"Content-Type": "application/json"},
    )
    _check(
        f"HTTP JSON on port {port}",
        status,
        raw,
        lambda: output_of_v2_json(json.loads(raw)),
        expected,
    )


def verify_binary(port: int, model: str, bodies: Bodies, expected: np.ndarray) -> None:
    """POST the binary-tensor request once; the answer must carry the expected output."""
    status, headers, raw = post(
        port,
        infer_path(model),
        bodies.binary_request.read_bytes(),
        {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(bodies.binary_header_length),
        },
    )

    def decode() -> np.ndarray:
        length = int(headers.get("inference-header-content-length", len(raw)))
        document = json.loads(raw[:length])
        tensor = next(t for t in document["outputs"] if t["name"] == OUTPUT)
        if "data" in tensor:
            return output_of_v2_json(document)
        size = int(tensor["parameters"]["binary_data_size"])
        data = np.frombuffer(raw[length : length + size], "<f4")
        array: np.ndarray = data.reshape(tensor["shape"])
        return array

    _check(f"HTTP binary on port {port}", status, raw, decode, expected)


def verify_grpc(port: int, bodies: Bodies, expected: np.ndarray) -> None:
    """Send the gRPC request once; the answer must carry the expected output."""
    import grpc

    from modelport.protocol._grpc import grpc_predict_v2_pb2 as pb

    from .grpc_load import METHOD

    try:
        with grpc.insecure_channel(f"{HOST}:{port}") as channel:
            raw = channel.unary_unary(METHOD)(bodies.grpc_request.read_bytes(), timeout=10)
    except grpc.RpcError as exc:
        raise HarnessError(f"gRPC on port {port} failed: {exc.code()} {exc.details()}") from None
    response = pb.ModelInferResponse.FromString(raw)

    def decode() -> np.ndarray:
        index = [o.name for o in response.outputs].index(OUTPUT)
        tensor = response.outputs[index]
        if response.raw_output_contents:
            data = np.frombuffer(response.raw_output_contents[index], "<f4")
        else:
            data = np.asarray(tensor.contents.fp32_contents, dtype=np.float32)
        return data.reshape(list(tensor.shape))

    _check(f"gRPC on port {port}", 200, raw, decode, expected)


def _check(
    what: str, status: int, raw: bytes, decode: Callable[[], np.ndarray], expected: np.ndarray
) -> None:
    if status != 200:
        raise HarnessError(f"{what} answered {status}: {raw[:500]!r}")
    try:
        got = decode()
    except (KeyError, ValueError, StopIteration, IndexError) as exc:
        raise HarnessError(
            f"{what} answered an unreadable response ({exc}): {raw[:500]!r}"
        ) from None
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-4, atol=1e-4):
        raise HarnessError(f"{what} answered {got.ravel()[:8]}, expected {expected.ravel()[:8]}")
