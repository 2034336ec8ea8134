"""``modelport serve`` as a real subprocess: settings sources, auth, SIGTERM drain."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelport.errors import ConfigError
from modelport.settings import Settings
from tests.builders import onnx_mlp
from tests.server.conftest import TINY, free_socket, tiny_reference, write

MODELPORT = [sys.executable, "-c", "from modelport.cli import main; main()"]


def free_port() -> int:
    with free_socket() as sock:
        return int(sock.getsockname()[1])


@contextmanager
def serving(
    args: list[str], env: dict[str, str] | None = None, port: int | None = None
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``modelport serve ARGS`` in a subprocess; yields it once it is ready."""
    port = port or free_port()
    full_env = {**os.environ, "MODELPORT_HTTP_PORT": str(port), "MODELPORT_GRPC_PORT": "0"}
    full_env.update(env or {})
    proc = subprocess.Popen(
        [*MODELPORT, "serve", *args],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: worker processes included
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url) as client:
            for _ in range(400):
                if proc.poll() is not None:
                    raise AssertionError(f"serve exited early: {proc.communicate()[1]}")
                try:
                    if client.get("/v2/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                threading.Event().wait(0.05)
            else:
                raise AssertionError("serve did not become ready")
        yield proc, url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)


GATED = '''
import time
from pathlib import Path

from modelport import Model


class Gated(Model):
    """The ONNX MLP beside this file; each call waits until a file named 'open' exists."""

    def predict(self, inputs):
        gate = Path(__file__).with_name("open")
        for _ in range(6000):  # at most 60 s
            if gate.exists():
                break
            time.sleep(0.01)
        return super().predict(inputs)
'''


def test_sigterm_answers_in_flight_requests_then_exits_0(tmp_path: Path) -> None:
    model = tmp_path / "gated"
    model.mkdir()
    onnx_mlp(model / "model.onnx", TINY, seed=0)
    write(model / "model.py", GATED)
    write(model / "modelport.yaml", "batching: {max_batch_size: 1}\nwarmup: {enabled: false}\n")
    xs = [np.full((1, 4), i, np.float32) for i in range(5)]
    results: list[Any] = [None] * len(xs)

    def call(i: int, url: str) -> None:
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                            "data": xs[i].ravel().tolist()}]}  # fmt: skip
        try:
            results[i] = httpx.post(f"{url}/v2/models/gated/infer", json=body, timeout=60)
        except httpx.HTTPError as exc:
            results[i] = exc

    with serving([str(model)]) as (proc, url):
        threads = [threading.Thread(target=call, args=(i, url)) for i in range(len(xs))]
        for t in threads:
            t.start()
        with httpx.Client(base_url=url) as client:
            # Wait until all five are inside the server: one held at the gate, four queued.
            for _ in range(1500):
                text = client.get("/metrics").text
                match = re.search(r'modelport_requests_in_flight{protocol="rest"} (\S+)', text)
                if match and float(match.group(1)) >= len(xs) + 1:  # + this scrape
                    break
                threading.Event().wait(0.02)
            else:
                raise AssertionError("requests never got in flight")
        proc.send_signal(signal.SIGTERM)
        # The server stops listening first; only then is the model let through.
        port = int(url.rsplit(":", 1)[1])
        for _ in range(1500):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                break
            threading.Event().wait(0.02)
        else:
            raise AssertionError("the server kept listening after SIGTERM")
        (model / "open").touch()
        for t in threads:
            t.join(60)
        returncode = proc.wait(timeout=60)
        stderr = proc.stderr.read() if proc.stderr else ""
    assert returncode == 0, stderr
    for x, r in zip(xs, results):
        assert isinstance(r, httpx.Response) and r.status_code == 200, r
        y = np.asarray(r.json()["outputs"][0]["data"], np.float32).reshape(1, 3)
        np.testing.assert_allclose(y, tiny_reference(x, 0), rtol=1e-5, atol=1e-5)
    assert "shutting down" in stderr


def test_env_config_file_auth_and_single_artifact_name(tmp_path: Path, tiny_onnx: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("auth_token: s3cret\nlog_format: json\naccess_log: true\n")
    with serving([str(tiny_onnx)], env={"MODELPORT_CONFIG": str(config)}) as (proc, url):
        with httpx.Client(base_url=url) as client:
            body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                                "data": [1, 2, 3, 4]}], "id": "logged-id"}  # fmt: skip
            denied = client.post("/v2/models/tiny/infer", json=body)
            assert denied.status_code == 401 and "bearer token" in denied.json()["error"]
            assert denied.headers["www-authenticate"] == "Bearer"
            wrong = client.get("/v2", headers={"authorization": "Bearer s3cre"})
            assert wrong.status_code == 401
            auth = {"authorization": "Bearer s3cret"}
            ok = client.post("/v2/models/tiny/infer", json=body, headers=auth)
            assert ok.status_code == 200 and ok.json()["model_name"] == "tiny"
            assert client.get("/v2/health/ready").status_code == 200  # probes stay open
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        stderr = proc.stderr.read() if proc.stderr else ""
    import json

    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    access = [entry for entry in lines if entry.get("logger") == "modelport.access"]
    assert any(e.get("request_id") == "logged-id" and e["status"] == 200 for e in access)


def test_several_worker_processes_share_the_port(tiny_onnx: Path) -> None:
    with serving([str(tiny_onnx), "--workers", "2", "--log-format", "text"]) as (proc, url):
        x = np.full((1, 4), 0.5, np.float32)
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4],
                            "data": x.ravel().tolist()}]}  # fmt: skip
        answered: dict[str, float] = {}
        deadline = time.monotonic() + 60  # the second worker may still be loading at first
        while len(answered) < 2 and time.monotonic() < deadline:
            with httpx.Client(base_url=url) as client:  # new connections spread over workers
                r = client.post("/v2/models/tiny/infer", json=body)
                assert r.status_code == 200
                y = np.asarray(r.json()["outputs"][0]["data"], np.float32).reshape(1, 3)
                np.testing.assert_allclose(y, tiny_reference(x), rtol=1e-5, atol=1e-5)
            with httpx.Client(base_url=url) as client:  # any worker's scrape counts them all
                text = client.get("/metrics").text
            shares = re.findall(r'modelport_worker_requests\{worker="(\d+)"\} (\S+)', text)
            answered = {pid: float(n) for pid, n in shares if float(n) > 0}
        assert len(answered) == 2, f"requests answered per worker process: {answered}"
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(timeout=60)
        stderr = proc.stderr.read() if proc.stderr else ""
    assert returncode == 0, stderr
    assert "Traceback" not in stderr
    assert stderr.count("Finished server process") == 2, stderr  # both drained and finished
    assert stderr.count("garbage collector tuned for serving") == 2, stderr  # each worker


def test_warns_without_auth_beyond_loopback(tiny_onnx: Path) -> None:
    port = free_port()
    with serving([str(tiny_onnx), "--host", "0.0.0.0", "--log-format", "text"], port=port) as (
        proc,
        url,
    ):
        scrape = httpx.get(f"{url}/metrics").text  # the refusals past max_concurrency, too
        assert "modelport_requests_refused_total 0.0" in scrape
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        stderr = proc.stderr.read() if proc.stderr else ""
    assert "without authentication" in stderr
    assert "garbage collector tuned for serving" in stderr  # see modelport.server.gctune


def test_bad_path_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [*MODELPORT, "serve", str(tmp_path / "missing.onnx")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "no such file or directory" in result.stderr


def test_settings_precedence_and_validation(tmp_path: Path) -> None:
    file = tmp_path / "s.yaml"
    file.write_text("http_port: 9000\ngrpc-port: 9001\nthreads: 2\n")
    env = {"MODELPORT_HTTP_PORT": "9100", "MODELPORT_CONFIG": str(file)}
    s = Settings.load({"host": "0.0.0.0", "threads": None}, environ=env)
    assert (s.host, s.http_port, s.grpc_port, s.threads) == ("0.0.0.0", 9100, 9001, 2)
    assert Settings.load({"http_port": 1}, environ=env).http_port == 1
    assert Settings.load({"grpc_port": 0}).grpc_port is None
    assert not s.loopback_only and Settings().loopback_only
    with pytest.raises(ConfigError, match="http_port: invalid value 'x'"):
        Settings.load(environ={"MODELPORT_HTTP_PORT": "x"})
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        file.write_text("colour: blue\n")
        Settings.load(config_file=file)
    with pytest.raises(ConfigError, match="log_level"):
        Settings.load({"log_level": "loud"})
    assert Settings().log_writer == "process"
    assert Settings.load(environ={"MODELPORT_LOG_WRITER": "Thread"}).log_writer == "thread"
    with pytest.raises(ConfigError, match="log_writer must be 'process' or 'thread', got 'fork'"):
        Settings.load({"log_writer": "fork"})


def test_unknown_log_writer_is_a_clear_cli_error(tiny_onnx: Path) -> None:
    result = subprocess.run(
        [*MODELPORT, "serve", str(tiny_onnx), "--log-predictions", "--log-writer", "fork"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "log_writer must be 'process' or 'thread', got 'fork'" in result.stderr


@pytest.mark.parametrize(
    ("log_db", "says"),
    [
        ("mysql://db/log", "unsupported log database URL scheme 'mysql'"),
        ("/proc/no-such-folder/log.db", "cannot create the log's folder /proc/no-such-folder"),
    ],
)
def test_a_bad_log_db_fails_before_anything_listens(
    tiny_onnx: Path, log_db: str, says: str
) -> None:
    with free_socket() as probe:
        http_port = probe.getsockname()[1]
    with free_socket() as probe:
        grpc_port = probe.getsockname()[1]
    result = subprocess.run(
        [*MODELPORT, "serve", str(tiny_onnx), "--log-db", log_db,
         "--http-port", str(http_port), "--grpc-port", str(grpc_port)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"error: {says}" in result.stderr
    assert "listening" not in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_port_in_use_is_a_clear_error(tiny_onnx: Path) -> None:
    with free_socket() as taken:
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*MODELPORT, "serve", str(tiny_onnx), "--http-port", str(port), "--grpc-port", "0"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"cannot listen for HTTP on 127.0.0.1:{port}" in result.stderr
