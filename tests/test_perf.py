"""``modelport perf`` against a real ``modelport serve`` on loopback ports (HTTP JSON, binary,
gRPC) and against models in-process: the steps it reports, the server's own counts of the same
requests, refusals counted as errors, inputs from files, the table and the plot.

Short steps (a fraction of a second): these check what is counted, never how fast.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelport.cli import main
from modelport.perf.scrape import snapshot
from tests.builders import onnx_mlp
from tests.test_extras import CLI, assert_names_extra, free_port, run_without

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo" / "iris"
SHORT = ["--seconds", "0.3", "--warmup", "0.1"]

SLOW_MODEL = '''
import time

from modelport import Model, Signature, TensorSpec


class Slow(Model):
    """y = x, 50 ms a call, one request at a time, one waiting: the rest are refused."""

    signature = Signature(
        inputs=(TensorSpec("x", "FP32", (-1, 2)),), outputs=(TensorSpec("y", "FP32", (-1, 2)),)
    )

    def predict(self, inputs):
        time.sleep(0.05)
        return {"y": inputs["x"]}
'''


class Served:
    def __init__(self, url: str, grpc: str) -> None:
        self.url, self.grpc = url, grpc

    def counted(self, model: str) -> dict[str, float]:
        """The server's request counter of ``model`` now, by ``protocol/status``."""
        return snapshot(httpx.get(f"{self.url}/metrics").text, model).requests


def start_server(root: Path, log: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Served]:
    http_port, grpc_port = free_port(), free_port()
    exe = shutil.which("modelport", path=str(Path(sys.executable).parent)) or "modelport"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [exe, "serve", str(root), "--http-port", http_port, "--grpc-port", grpc_port,
             "--log-format", "text", "--log-level", "warning", "--no-watch", "--drain-period",
             "0", *extra],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{http_port}"
    for _ in range(1200):
        if proc.poll() is not None:
            raise AssertionError(f"server exited:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                break
        except httpx.TransportError:
            pass
        threading.Event().wait(0.05)
    else:
        proc.kill()
        raise AssertionError(f"server not ready:\n{log.read_text()}")
    return proc, Served(url, f"127.0.0.1:{grpc_port}")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny`` (ONNX MLP 4 -> 8 -> 3) and ``slow`` (50 ms a call, a queue of one)."""
    root = tmp_path_factory.mktemp("perf-repo")
    (root / "tiny").mkdir()
    onnx_mlp(root / "tiny" / "model.onnx", [4, 8, 3])
    (root / "tiny" / "modelport.yaml").write_text(
        "batching: {max_batch_size: 16, max_queue_delay_ms: 1}\n"
    )
    (root / "slow").mkdir()
    (root / "slow" / "model.py").write_text(textwrap.dedent(SLOW_MODEL).lstrip())
    (root / "slow" / "modelport.yaml").write_text(
        "batching: {max_batch_size: 1, max_queue_size: 1}\n"
    )
    return root


@pytest.fixture(scope="module")
def served(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    proc, served = start_server(repo, tmp_path_factory.mktemp("serve") / "serve.log")
    try:
        yield served
    finally:
        proc.terminate()
        proc.wait(60)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[str, str]:
    """``modelport ARGV`` in this process: (stdout, stderr); it must succeed."""
    code = 0
    try:
        main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert code == 0, err
    return out, err


def perf_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(run(capsys, "perf", *argv, "--json")[0])
    return report


STEP_FIELDS = {
    "protocol", "concurrency", "rate", "requests", "errors", "error_codes", "seconds",
    "throughput", "rows_per_s", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms", "server",
    "warmup_requests", "client_cpu",
}  # fmt: skip


def test_every_door_is_counted_as_the_server_counts_it(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    before = served.counted("tiny")
    report = perf_json(
        capsys, "--url", served.url, "--grpc-url", served.grpc, "--model", "tiny",
        "--protocol", "json,binary,grpc", "--concurrency", "1,4", *SHORT,
    )  # fmt: skip
    after = served.counted("tiny")
    assert report["model"] == "tiny" and report["rows_per_request"] == 1
    steps = report["steps"]
    assert [(s["protocol"], s["concurrency"]) for s in steps] == [
        (p, c) for p in ("json", "binary", "grpc") for c in (1, 4)
    ]
    for step in steps:
        assert set(step) == STEP_FIELDS
        assert step["requests"] > 0 and step["errors"] == 0
        assert step["p50_ms"] <= step["p90_ms"] <= step["p99_ms"] <= step["max_ms"]
        server = step["server"]
        # What the server counted in the step's interval is exactly what the loop sent.
        assert server["requests"] == step["requests"]
        status = "grpc/OK" if step["protocol"] == "grpc" else "rest/200"
        assert server["statuses"] == {status: step["requests"]}
        assert server["rows"] == step["requests"]  # one row a request
        assert 1 <= server["batches"] <= server["rows"]
        assert sum(server["histogram"].values()) == server["batches"]
    # And over the whole run, warm-ups included, nothing went uncounted on either side.
    sent = sum(s["requests"] + s["errors"] + s["warmup_requests"] for s in steps)
    assert sum(after.values()) - sum(before.values()) == sent


def test_refusals_are_errors_with_their_status(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    report = perf_json(capsys, "--url", served.url, "--model", "slow", "--concurrency", "6", *SHORT)
    (step,) = report["steps"]
    # One request runs, one waits: the batcher refuses the rest at once with 503.
    assert step["errors"] > 0 and step["error_codes"] == {"503": step["errors"]}
    assert step["requests"] > 0
    assert step["server"]["statuses"] == {"rest/200": step["requests"], "rest/503": step["errors"]}


def test_a_fixed_rate_sends_what_was_scheduled(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    report = perf_json(
        capsys, "--url", served.url, "--model", "tiny", "--rate", "200", "--seconds", "0.5",
        "--warmup", "0",
    )  # fmt: skip
    (step,) = report["steps"]
    assert step["rate"] == 200 and step["concurrency"] is None
    assert step["requests"] + step["errors"] == 100  # one every 5 ms for 0.5 s
    assert step["server"]["requests"] == 100


def test_inputs_from_a_file(
    served: Served, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    np.savez(tmp_path / "rows.npz", x=np.ones((3, 4)))  # float64: sent as the model's FP32
    report = perf_json(
        capsys, "--url", served.url, "--model", "tiny", "--input", str(tmp_path / "rows.npz"),
        "--protocol", "binary", "--concurrency", "2", *SHORT,
    )  # fmt: skip
    (step,) = report["steps"]
    assert report["rows_per_request"] == 3 and step["errors"] == 0
    assert step["server"]["rows"] == 3 * step["requests"]
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "data": [0.5] * 8}]}
    (tmp_path / "bodies.json").write_text(json.dumps([body, body]))
    report = perf_json(
        capsys, "--url", served.url, "--input", str(tmp_path / "bodies.json"), "--model",
        "tiny", "--concurrency", "1", *SHORT,
    )  # fmt: skip
    assert report["rows_per_request"] == 2 and report["steps"][0]["errors"] == 0


def test_the_demo_in_process_with_its_batch_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    report = perf_json(capsys, str(DEMO), "--concurrency", "1,8", "--batch-size", "2", *SHORT)
    assert report["model"] == "iris" and report["rows_per_request"] == 2
    for step in report["steps"]:
        assert step["protocol"] == "local" and step["errors"] == 0
        server = step["server"]
        assert server["requests"] == step["requests"]
        assert server["rows"] == 2 * step["requests"]
        assert 1 <= server["batches"] <= step["requests"]
    # With one caller every batch is that caller's request alone.
    assert report["steps"][0]["server"]["batches"] == report["steps"][0]["requests"]


def test_table_and_plot(served: Served, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out, err = run(
        capsys, "perf", "--url", served.url, "--model", "tiny", "--concurrency", "2",
        "--plot", str(tmp_path / "perf.png"), *SHORT,
    )  # fmt: skip
    for column in ("door", "req/s", "p99 ms", "errors", "served", "rows/batch", "client CPU"):
        assert column in out, out
    assert "c=2" in out and "json" in out
    assert (tmp_path / "perf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "load loop:" in err


def test_a_model_or_a_url_not_both(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["perf", str(DEMO), "--url", "http://127.0.0.1:1"])
    assert exit_info.value.code == 1
    assert "give a MODEL to measure in-process or the --url" in capsys.readouterr().err


def test_an_unreachable_server_is_one_error_line(tmp_path: Path) -> None:
    result = run_without([], CLI, "perf", "--url", f"http://127.0.0.1:{free_port()}", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot reach http://127.0.0.1:"), result.stderr
    assert "Traceback" not in result.stderr


GRPC_ARGS = ["--url", "http://127.0.0.1:{port}", "--input", "{root}/in.npz", "--model", "m"]
EXTRA_CASES = [
    (["matplotlib"], [str(DEMO), "--plot", "{root}/p.png"], "store"),
    (["grpc"], [*GRPC_ARGS, "--protocol", "grpc"], "serve"),
]


@pytest.mark.parametrize(
    ("blocked", "args", "extra"), EXTRA_CASES, ids=["plot-without-matplotlib", "grpc-without-grpc"]
)
def test_perf_names_the_extra(
    blocked: list[str], args: list[str], extra: str, tmp_path: Path, served: Served
) -> None:
    np.savez(tmp_path / "in.npz", x=np.ones((1, 4), dtype=np.float32))
    port = served.url.rsplit(":", 1)[1]
    args = [a.replace("{root}", str(tmp_path)).replace("{port}", port) for a in args]
    result = run_without(blocked, CLI, "perf", *args, cwd=tmp_path)
    assert_names_extra(result, f'pip install "modelport[{extra}]"')


class Peer:
    """A bare HTTP/1.1 server on a loopback port (in a thread) that answers each POST with
    ``ok``: in two pieces split inside a header, or closing the connection after each answer."""

    def __init__(self, mode: str) -> None:
        import asyncio

        self.mode, self.posts = mode, 0
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.port = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = next(
                        (int(h[15:]) for h in head.split(b"\r\n") if h.lower().startswith(
                            b"content-length:")), 0,
                    )  # fmt: skip
                    await reader.readexactly(length)
                    self.posts += head.startswith(b"POST")
                    if self.mode == "close":
                        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n")
                        writer.write(b"Connection: close\r\n\r\nok")
                        await writer.drain()
                        writer.close()
                        return
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Le")
                    await writer.drain()
                    await asyncio.sleep(0.001)
                    writer.write(b"ngth: 2\r\n\r\nok")
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()

        async def start() -> None:
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            await server.serve_forever()

        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(start(),))
        self.thread.daemon = True
        self.thread.start()
        ready.wait(10)


@pytest.mark.parametrize("mode", ["close", "split"])
def test_the_loop_frames_pieces_and_reconnects(mode: str, tmp_path: Path) -> None:
    from modelport.perf.session import RemoteTarget, measure

    peer = Peer(mode)
    np.savez(tmp_path / "x.npz", x=np.ones((1, 4), dtype=np.float32))
    target = RemoteTarget(f"http://127.0.0.1:{peer.port}", model="m", input_file=tmp_path / "x.npz")
    report = measure(target, ["json"], concurrency=[4], seconds=0.3, warmup=0.1, timeout=5)
    (step,) = report.steps
    assert step.errors == 0 and step.requests > 0 and step.server is None
    assert step.requests + step.warmup_requests == peer.posts
