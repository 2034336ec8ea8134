"""The benchmark harness itself: workloads, load generators, ratios, report, and a smoke run.

These check that the harness measures correctly (counts match what the servers answered,
errors are counted, ratios are computed right); they assert nothing about speed.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bench import servers
from bench.__main__ import parse
from bench.harness import BINARY, C2, C2G, GRPC, JSON, B, Settings, run
from bench.load import HarnessError, Point, grpc_sample, wrk_sample
from bench.report import checks, write
from bench.workloads import W1, W2, Workload, build

from tests.builders import mlp_reference, mlp_weights
from tests.conftest import skip_unless

needs_wrk = skip_unless(shutil.which("wrk") is not None, "wrk", "the HTTP load generator (apt)")
# A small stand-in for W2, with the same key, so a smoke run stays quick.
HEAVY = Workload("w2", "heavy (test size)", (64, 128, 128, 8), seed=2, max_batch_size=8)


def _count(port: int) -> int:
    conn = http.client.HTTPConnection(servers.HOST, port, timeout=5)
    try:
        conn.request("GET", "/count")
        return int(conn.getresponse().read())
    finally:
        conn.close()


def test_workloads_are_deterministic_and_carry_the_same_row(tmp_path: Path) -> None:
    import onnxruntime as ort

    from modelport.protocol._grpc import grpc_predict_v2_pb2 as pb

    first, second = build(W1, tmp_path / "a"), build(W1, tmp_path / "b")
    assert first.model.read_bytes() == second.model.read_bytes()
    assert sorted(p.name for p in first.directory.iterdir()) == ["model.onnx", "modelport.yaml"]
    row = W1.row()
    assert row.shape == (1, 4) and row.dtype == np.float32
    np.testing.assert_array_equal(row, W1.row())

    session = ort.InferenceSession(str(first.model), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": row})
    np.testing.assert_allclose(y, mlp_reference(row, mlp_weights(W1.sizes, W1.seed)), rtol=1e-5)
    np.testing.assert_allclose(y, W1.expected(), rtol=1e-5)

    sent = json.loads(first.json_request.read_bytes())["inputs"][0]
    assert sent["shape"] == [1, 4] and np.allclose(sent["data"], row.ravel())
    binary = first.binary_request.read_bytes()
    header = json.loads(binary[: first.binary_header_length])
    assert header["inputs"][0]["parameters"]["binary_data_size"] == 16
    np.testing.assert_array_equal(
        np.frombuffer(binary[first.binary_header_length :], "<f4"), row.ravel()
    )
    request = pb.ModelInferRequest.FromString(first.grpc_request.read_bytes())
    assert request.model_name == "w1" and list(request.inputs[0].shape) == [1, 4]
    np.testing.assert_array_equal(np.frombuffer(request.raw_input_contents[0], "<f4"), row.ravel())
    answer = json.loads(first.json_response.read_bytes())["outputs"][0]
    np.testing.assert_allclose(answer["data"], W1.expected().ravel(), rtol=1e-6)


def test_the_heavy_workload_is_the_issue_s_shape() -> None:
    assert W2.sizes == (1024, 4096, 4096, 16) and W2.row().shape == (1, 1024)
    assert W1.sizes == (4, 16, 3)


@pytest.fixture
def bare_asgi(tmp_path: Path) -> Iterator[tuple[int, Any]]:
    bodies = build(W1, tmp_path)
    port = servers.free_port()
    with servers.bare_asgi(bodies, port, cpus=None, log=tmp_path / "c2.log") as server:
        server.wait_until(lambda: _count(port) >= 0)
        yield port, bodies


@needs_wrk
def test_wrk_counts_what_the_server_answered(bare_asgi: tuple[int, Any]) -> None:
    port, bodies = bare_asgi
    servers.verify_json(port, "w1", bodies, W1.expected())
    before = _count(port)
    url = f"http://{servers.HOST}:{port}/v2/models/w1/infer"
    sample = wrk_sample(url, bodies.json_request, connections=4, seconds=1, cpus=None)
    served = _count(port) - before
    assert sample.errors == 0
    assert 0 < sample.requests <= served <= sample.requests + 4
    assert 0 < sample.p50_ms <= sample.p99_ms
    assert sample.rps == pytest.approx(sample.requests / sample.seconds)


@needs_wrk
def test_wrk_counts_failed_requests_and_the_baseline_keeps_working(tmp_path: Path) -> None:
    bodies = build(W1, tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP32", "data": [1]}]}')
    port = servers.free_port()
    with servers.flask_baseline(bodies, port, workers=1, cpus=None, log=tmp_path / "b.log") as s:
        s.wait_until(lambda: servers.post(port, "/", b"", {})[0] == 404)
        servers.verify_json(port, "w1", bodies, W1.expected())
        url = f"http://{servers.HOST}:{port}/v2/models/w1/infer"
        sample = wrk_sample(url, bad, connections=2, seconds=1, cpus=None)
        assert sample.requests > 0 and sample.errors == sample.requests
        servers.verify_json(port, "w1", bodies, W1.expected())


def test_verify_rejects_a_wrong_answer(bare_asgi: tuple[int, Any]) -> None:
    port, bodies = bare_asgi
    with pytest.raises(HarnessError, match="expected"):
        servers.verify_json(port, "w1", bodies, W1.expected() + 1)


class _Infer:
    """A raw gRPC ModelInfer handler that answers fixed bytes (or fails) and counts calls."""

    def __init__(self, fail: bool) -> None:
        self.fail, self.calls, self.lock = fail, 0, threading.Lock()

    def __call__(self, request: bytes, context: Any) -> bytes:
        import grpc

        with self.lock:
            self.calls += 1
        if self.fail:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad input")
        return b""


@pytest.mark.parametrize("fail", [False, True])
def test_grpc_load_generator_counts_answers_and_errors(tmp_path: Path, fail: bool) -> None:
    import grpc

    handler = _Infer(fail)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "inference.GRPCInferenceService",
                {"ModelInfer": grpc.unary_unary_rpc_method_handler(handler)},
            )
        ]
    )
    port = server.add_insecure_port(f"{servers.HOST}:0")
    server.start()
    try:
        sample = grpc_sample(
            f"{servers.HOST}:{port}",
            build(W1, tmp_path).grpc_request,
            connections=3,
            seconds=0.5,
            cpus=None,
        )
    finally:
        server.stop(None)
    if fail:
        assert sample.requests == 0 and sample.errors > 0
        assert sample.errors <= handler.calls
    else:
        assert sample.errors == 0
        assert 0 < sample.requests <= handler.calls <= sample.requests + 3
        assert 0 < sample.p50_ms <= sample.p99_ms


def _results(**over: Any) -> dict[str, Any]:
    def point(c: int, rps: float, p50: float = 1.0) -> dict[str, Any]:
        return Point(c, rps, rps, p50, 2 * p50, errors=0, requests=100, repeats=1).to_dict()

    results: dict[str, Any] = {
        "settings": {"concurrency": [1, 64]},
        "c1": {
            "w2": [
                {"batch": 1, "p50_ms": 2.0, "mean_ms": 2.2, "rows_per_s": 450.0},
                {"batch": 64, "p50_ms": 20.0, "mean_ms": 21.0, "rows_per_s": 3000.0},
            ]
        },
        "points": {
            "w1": {
                C2: [point(1, 9000), point(64, 40000)],
                B: [point(1, 1000), point(64, 3000)],
                JSON: [point(1, 5000), point(64, 20000)],
            },
            "w2": {
                JSON: [point(1, 400, p50=2.5), point(64, 2700)],
                BINARY: [point(1, 400, p50=3.5), point(64, 2400)],
            },
        },
        "cold_start_s": 1.5,
        "import_ms": 160.0,
    }
    results.update(over)
    return results


def test_checks_compute_each_target_from_the_figures() -> None:
    found = {c.name: c for c in checks(_results())}
    assert (found["W1@64 HTTP JSON vs C2"].measured, found["W1@64 HTTP JSON vs C2"].holds) == (
        "50 %",
        True,
    )
    assert found["W1@64 HTTP JSON vs B"].measured == "6.7x" and found["W1@64 HTTP JSON vs B"].holds
    assert found["W2@64 HTTP JSON vs C1 batch 64"].measured == "90 %"
    assert found["W2@64 HTTP JSON vs C1 batch 64"].holds is True
    assert found["W2@64 HTTP binary vs C1 batch 64"].holds is False  # 80 %
    assert found["W2@64 HTTP binary vs C1 batch 64"].goal == ">= 90 % of C1 rows/s"
    assert found["W2@64 gRPC vs C1 batch 64"].holds is None  # not measured
    assert found["W1@64 gRPC vs C2 gRPC"].holds is None  # not measured
    assert found["W2@1 HTTP JSON p50 vs C1 batch 1"].holds is True  # +0.5 ms
    assert found["W2@1 HTTP binary p50 vs C1 batch 1"].holds is False  # +1.5 ms
    assert found["cold start (serve -> first inference)"].holds is True
    assert found["import modelport"].holds is False


def test_report_writes_markdown_json_and_a_png(tmp_path: Path) -> None:
    results = _results(
        started="2026-01-02 03:04:05 UTC",
        seconds=1.0,
        machine={"commit": "abc", "cpu": "cpu", "cpus": 2, "memory_gib": 1, "os": "os",
                 "python": "3", "load_average": [0, 0, 0], "wrk": "wrk 4", "packages": {}},
        settings={"concurrency": [1, 64], "server_cpus": "0", "client_cpus": "1", "threads": 1,
                  "gunicorn_workers": 3, "warmup": 1, "repeats": 1, "seconds": 1,
                  "c1_seconds": 1},
        failures={"modelport w2": "gRPC front door missing"},
        contract=[{"framework": "onnx", "batch": 1, "direct_us": 4.0, "predict_us": 5.0,
                   "predict_batch_us": 5.5, "predict_overhead_us": 1.0,
                   "predict_batch_overhead_us": 1.5}],
    )  # fmt: skip
    md, png = write(results, tmp_path, "run")
    text = md.read_text()
    assert "| W1@64 HTTP JSON vs C2 | >= 50 % of C2 | 50 % | holds |" in text
    assert "| W2@1 HTTP binary p50 vs C1 batch 1 | within 1 ms |" in text and "**fails**" in text
    assert "![throughput and p99 latency against concurrency](run.png)" in text
    assert "| onnx | 1 | 4.00 | 5.00 (+1.00) | 5.50 (+1.50) |" in text
    assert "modelport w2: gRPC front door missing" in text
    assert json.loads((tmp_path / "run.json").read_text())["import_ms"] == 160.0
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(png).shape[0] > 100


def test_bad_arguments_name_what_was_wrong(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["--targets", "c2,nope"])
    assert "nope" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="'97'"):
        parse(["--server-cpus", "97"])
    with pytest.raises(SystemExit, match="'one' is not a taskset list"):
        parse(["--client-cpus", "one"])
    settings, _ = parse(["--quick", "--no-pin", "--targets", "c2,json"])
    assert settings.server_cpus is None and settings.targets == ("c2", "json")
    assert (settings.seconds, settings.repeats) == (2, 1)


@needs_wrk
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_smoke_run_measures_every_target_and_writes_the_report(tmp_path: Path) -> None:
    two = len(os.sched_getaffinity(0)) >= 2
    settings = Settings(
        work_dir=tmp_path / "work",
        workloads=(W1, HEAVY),
        concurrency=(1, 4),
        seconds=1,
        warmup=0,
        repeats=1,
        batches=(1, 8, 64),
        c1_seconds=0.05,
        server_cpus="0" if two else None,
        client_cpus="1" if two else None,
        cold_starts=1,
        import_runs=1,
        contract_rounds=1,
        profile_seconds=1,
    )
    results = run(settings, log=lambda line: None).to_dict()
    assert results["failures"] == {}
    assert set(results["points"]["w1"]) == {C2, C2G, B, JSON, BINARY, GRPC}
    assert set(results["points"]["w2"]) == {B, JSON, BINARY, GRPC}
    for curves in results["points"].values():
        for target, points in curves.items():
            assert [p["concurrency"] for p in points] == [1, 4], target
            for p in points:
                assert p["errors"] == 0 and p["requests"] > 0, target
                assert 0 < p["p50_ms"] <= p["p99_ms"], target
    assert [r["batch"] for r in results["c1"]["w2"]] == [1, 8, 64]
    assert all(r["rows_per_s"] > 0 for r in results["c1"]["w1"])
    assert {(r["framework"], r["batch"]) for r in results["contract"]} == {
        ("onnx", 1), ("onnx", 64), ("torch", 1), ("torch", 64),
    }  # fmt: skip
    assert results["cold_start_s"] > 0 and results["import_ms"] > 0
    assert results["profile"]["samples"] > 0 and results["profile"]["by_package"]
    md, png = write(results, tmp_path / "out", "smoke")
    assert png is not None and png.exists()
    assert "| W1@4 HTTP JSON vs C2 |" in md.read_text()
    assert all(c.holds is not None for c in checks(results))


def test_profile_summary_shares_samples_by_package_and_function() -> None:
    from bench.profile import summarize

    root = 'process 7:"modelport serve";<module> (/v/bin/modelport:6)'
    loop = "run (/v/lib/python3.11/site-packages/uvloop/__init__.py:92)"
    infer = "infer (/w/src/modelport/runtime/runner.py:156)"
    collapsed = "\n".join(
        [
            f"{root};{loop};{infer};run (/v/lib/python3.11/site-packages/onnxruntime/s.py:10) 30",
            f"{root};{loop};{infer};submit (/usr/lib/python3.11/concurrent/futures/thread.py:1) 50",
            f"{root};{loop};decode (/w/src/modelport/protocol/codec.py:9) 20",
            "garbage line",
        ]
    )
    summary = summarize(collapsed)
    assert summary["samples"] == 100
    assert summary["by_package"] == [
        ("stdlib.concurrent", 50.0),
        ("onnxruntime", 30.0),
        ("modelport.protocol", 20.0),
    ]
    assert summary["self"][0] == ("submit (concurrent/futures/thread.py:1)", 50.0)
    assert dict(summary["inclusive"]) == {
        "infer (modelport/runtime/runner.py:156)": 80.0,
        "decode (modelport/protocol/codec.py:9)": 20.0,
    }


def test_load_generators_fail_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bodies = build(W1, tmp_path)
    closed = f"{servers.HOST}:{servers.free_port()}"
    with pytest.raises(HarnessError, match=f"cannot connect to {closed}"):
        grpc_sample(
            closed, bodies.grpc_request, connections=1, seconds=1, cpus=None, connect_timeout=0.5
        )
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(HarnessError, match="wrk is not installed"):
        wrk_sample(f"http://{closed}/", bodies.json_request, connections=1, seconds=1, cpus=None)


def test_log_neighbour_logs_every_record_it_counts(tmp_path: Path) -> None:
    """The prediction-log benchmark's control: it logs what it says it logged."""
    import subprocess
    import sys

    from modelport.store.db import Database

    url = f"sqlite:///{tmp_path / 'n.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "bench.log_neighbour", "4000", "0.5", url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("logging ")
    counted = int(done.stderr.split("neighbour: ")[1].split()[0])
    db = Database(url)
    try:
        assert counted > 0 and db.count("neighbour") == counted
    finally:
        db.dispose()


def test_cpu_lists_parse_as_taskset_reads_them() -> None:
    from bench.prediction_log import _cpu_set

    assert _cpu_set("1") == {1}
    assert _cpu_set("0,2-4") == {0, 2, 3, 4}


def test_the_median_interval_brackets_the_median_and_repeats() -> None:
    from bench.prediction_log import _median_ci

    losses = [4.0, -2.0, 7.5, 5.0, 12.0, 3.0, 6.0, -8.0, 9.0, 1.0]
    low, high = _median_ci(losses)
    assert low < float(np.median(losses)) < high
    assert (low, high) == _median_ci(losses)  # a fixed seed: the same data, the same interval
    assert _median_ci([5.0] * 8) == (5.0, 5.0)


@needs_wrk
def test_toggled_pairs_run_end_to_end(tmp_path: Path) -> None:
    """``--pairs``: one server under one wrk run, its log switched off and on over the admin
    API; every request answered, none of the logged ones lost."""
    import ast
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "bench.prediction_log", "--pairs", "2", "--window", "0.5",
         "--settle", "0.2", "--no-pin", "--log-db", f"sqlite:///{tmp_path / 'log.db'}"],
        capture_output=True, text=True, timeout=180, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    losses = ast.literal_eval(result["losses"])
    log = ast.literal_eval(result["log"])
    assert len(losses) == 2 and int(result["wrk_errors"]) == 0
    assert log["lost"] == 0 and log["written"] > 0 and log["sampled_out"] > 0
    low, high = ast.literal_eval(result["loss_percent_median_ci95"])
    assert low <= float(result["loss_percent_median"]) <= high


@needs_wrk
@pytest.mark.parametrize("control", ["neighbour", "spin"])
def test_toggled_pairs_with_a_control_pause_and_resume_it(tmp_path: Path, control: str) -> None:
    """``--pairs --control``: the server's log stays off; the control process works in the
    "on" phases (its CPU time is measured), is paused in the others, and is gone afterwards."""
    import ast
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "bench.prediction_log", "--pairs", "2", "--window", "0.5",
         "--settle", "0.2", "--no-pin", "--log-db", f"sqlite:///{tmp_path / 'log.db'}",
         "--control", control, "--neighbour-rate", "10000", "--spin-duty", "0.2"],
        capture_output=True, text=True, timeout=180, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    assert result["control"] == control
    assert len(ast.literal_eval(result["losses"])) == 2 and int(result["wrk_errors"]) == 0
    assert float(result["writer_process_cpu_us_per_request"]) > 0  # the control did work
    left = subprocess.run(
        ["pgrep", "-f", f"bench.{'log_neighbour' if control == 'neighbour' else 'spin'}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert left.stdout.strip() == "", f"the control process outlived the run: {left.stdout}"


@pytest.mark.parametrize("duty", ["0", "1.5", "-0.1"])
def test_spin_refuses_a_duty_outside_0_to_1(duty: str) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "bench.spin", duty], capture_output=True, text=True, timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    assert done.returncode != 0 and f"DUTY must be in (0, 1], got {float(duty)}" in done.stderr
    assert "spinning" not in done.stdout
