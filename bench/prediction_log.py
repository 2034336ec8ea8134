"""``python -m bench.prediction_log``: what the prediction log costs a served model.

Serves the W1 (tiny MLP) workload with ``modelport serve``, with and without ``--log-db``,
and measures throughput with wrk at one concurrency, and the server's CPU per request; the two
configurations alternate, so a noisy neighbour hurts both alike, and the median of each is
kept. Then checks that every
answered request was logged (rows >= requests wrk counted) and none was lost. Also times the
log in-process: ``record()`` on the caller's side and the writer's drain rate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import urllib.request
from functools import partial
from pathlib import Path

import numpy as np

from .load import pinned, wrk_sample
from .servers import HOST, Server, free_port, modelport_serve
from .workloads import W1, build

HERE = Path(__file__).resolve().parent


def in_process(records: int) -> dict[str, float]:
    """µs per ``record()`` call and per record written (drain), into a fresh SQLite file."""
    from modelport.store import PredictionLog, PredictionRecord

    x, y = W1.row(), W1.expected().astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        log = PredictionLog.open(f"sqlite:///{tmp}/log.db", spool_dir=f"{tmp}/spool")
        batch = [
            PredictionRecord(f"r{i}", "w1", "1", {"x": x}, {"y": y}, latency_ms=1.0)
            for i in range(records)
        ]
        started = time.perf_counter()
        for record in batch:
            log.record(record)
        queued = time.perf_counter()
        log.flush()
        drained = time.perf_counter()
        log.close()
    return {
        "record_us": (queued - started) / records * 1e6,
        "drain_us_per_record": (drained - started) / records * 1e6,
    }


def _serve(log_db: str | None, work: Path, cpus: str | None) -> tuple[Server, int]:
    bodies = build(W1, work)
    port = free_port()
    server = modelport_serve(bodies, port, free_port(), cpus=None, log=work / "serve.log")
    if log_db is not None:
        server.cmd += ["--log-db", log_db]
    server.cmd = pinned(server.cmd, cpus)
    return server, port


def _ready(port: int) -> bool:
    with urllib.request.urlopen(f"http://{HOST}:{port}/v2/health/ready", timeout=1) as r:
        return bool(r.status == 200)


def _lost(port: int) -> float:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith('modelport_prediction_log_records_total{outcome="lost"}'):
                return float(line.split()[-1])
    return float("nan")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` and all its threads so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def served(args: argparse.Namespace, work: Path) -> dict[str, object]:
    """Requests/s, and the server's CPU per request, without and with the log, alternating
    ``repeats`` times. CPU per request moves less than requests/s when neighbours take CPU."""
    from modelport.store.db import Database

    body = build(W1, work).json_request
    rps: dict[str, list[float]] = {"off": [], "on": []}
    cpu_us: dict[str, list[float]] = {"off": [], "on": []}
    answered = 0
    lost = 0.0
    db_url = args.log_db or f"sqlite:///{work / 'bench-log.db'}"
    for _ in range(args.repeats):
        for mode in ("off", "on"):
            server, port = _serve(db_url if mode == "on" else None, work, args.server_cpus)
            with server:
                server.wait_until(partial(_ready, port))
                url = f"http://{HOST}:{port}/v2/models/{W1.key}/infer"
                wrk_sample(
                    url, body, connections=args.concurrency, seconds=1, cpus=args.client_cpus
                )
                assert server.proc is not None
                before = _cpu_seconds(server.proc.pid)
                sample = wrk_sample(
                    url, body, connections=args.concurrency, seconds=args.seconds,
                    cpus=args.client_cpus,
                )  # fmt: skip
                used = _cpu_seconds(server.proc.pid) - before
                rps[mode].append(sample.rps)
                cpu_us[mode].append(used / max(sample.requests, 1) * 1e6)
                if mode == "on":
                    answered += sample.requests
                    lost += _lost(port)
    db = Database(db_url)
    logged = db.count(W1.key)
    db.dispose()
    off, on = statistics.median(rps["off"]), statistics.median(rps["on"])
    cpu_off, cpu_on = statistics.median(cpu_us["off"]), statistics.median(cpu_us["on"])
    return {
        "rps_off": off,
        "rps_on": on,
        "loss_percent": (off - on) / off * 100,
        "samples_off": rps["off"],
        "samples_on": rps["on"],
        "server_cpu_us_per_request_off": cpu_off,
        "server_cpu_us_per_request_on": cpu_on,
        "cpu_cost_percent": (cpu_on - cpu_off) / cpu_off * 100,
        "cpu_samples_off": cpu_us["off"],
        "cpu_samples_on": cpu_us["on"],
        "logged_rows": logged,
        "wrk_requests_with_log": answered,
        "lost": lost,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.prediction_log", description=__doc__)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--records", type=int, default=20_000, help="in-process records")
    parser.add_argument("--log-db", help="database to log to (default: a fresh SQLite file)")
    parser.add_argument("--server-cpus", default="0", help="taskset CPU list for the server")
    parser.add_argument("--client-cpus", default="1", help="taskset CPU list for wrk")
    parser.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    args = parser.parse_args(argv)
    if args.no_pin:
        args.server_cpus = args.client_cpus = None
    print("in-process:", in_process(args.records))
    (HERE / "_work").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=HERE / "_work") as tmp:
        result = served(args, Path(tmp))
    for key, value in result.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
