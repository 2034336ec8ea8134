"""``modelport serve`` starting up: the variables it reads, and the log lines that say where it
listens and what it serves."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import httpx

from modelport.cpus import cpu_budget
from tests.server.conftest import ServerLogs
from tests.server.test_serve import free_port, serving


def wait_for(logs: ServerLogs, message: str, timeout: float = 60) -> None:
    for _ in range(int(timeout / 0.05)):
        if logs.count(message):
            return
        threading.Event().wait(0.05)
    raise AssertionError(f"no log line {message!r} in {logs.lines}")


def stop(proc: Any, logs: ServerLogs) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    logs.reader.join(timeout=30)


def test_deployment_variables_named_like_flags_do_not_act_as_flags(tiny_onnx: Path) -> None:
    """``MODELPORT_VERSION`` and ``MODELPORT_HELP`` are not ``--version`` and ``--help``: the
    server serves, on the ports its documented variables name, and logs each listener."""
    http, grpc = free_port(), free_port()
    env = {"MODELPORT_VERSION": "3", "MODELPORT_HELP": "1", "MODELPORT_GRPC_PORT": str(grpc)}
    with serving([str(tiny_onnx)], env=env, port=http) as (proc, url):
        assert url == f"http://127.0.0.1:{http}"
        logs = ServerLogs(proc)
        with httpx.Client(base_url=url) as client:
            assert client.get("/v2/models/tiny/ready").status_code == 200
        wait_for(logs, "serving tiny v1")
        stop(proc, logs)
    assert logs.count(f"HTTP listening on {url}", url=url) == 1
    address = f"127.0.0.1:{grpc}"
    assert logs.count(f"gRPC listening on {address}", address=address) == 1
    assert logs.count("serving tiny v1", models={"tiny": ["1"]}) == 1
    assert not any("modelport 0" in line["message"] for line in logs.lines)
    budget = cpu_budget()
    threads = budget.threads()
    said = f"{threads} thread(s) per model call by default ({budget.describe()})"
    assert logs.count(said, threads=threads) == 1


def test_a_repository_and_workers_are_announced_once(tmp_path: Path, tiny_onnx: Path) -> None:
    root = tmp_path / "repo"
    for model, version in (("tiny", "1"), ("tiny", "2"), ("other", "1")):
        (root / model / version).mkdir(parents=True)
        (root / model / version / "model.onnx").write_bytes(tiny_onnx.read_bytes())
    http = free_port()
    with serving([str(root), "--workers", "2"], port=http) as (proc, url):
        logs = ServerLogs(proc)
        wait_for(logs, "serving other v1, tiny v1/2")
        stop(proc, logs)
    assert logs.count(f"HTTP listening on {url} (2 worker processes)", url=url) == 1
    served = {"other": ["1"], "tiny": ["1", "2"]}
    assert logs.count("serving other v1, tiny v1/2", models=served) == 1
    assert not any(line["message"].startswith("gRPC listening") for line in logs.lines)
    # The CPU budget is shared among the workers (one thread each at least).
    budget = cpu_budget()
    threads = budget.threads(workers=2)
    where = f"{budget.describe()} (2 worker processes)"
    said = f"{threads} thread(s) per model call by default ({where})"
    assert logs.count(said, threads=threads) == 1
