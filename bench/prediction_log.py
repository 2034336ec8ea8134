"""``python -m bench.prediction_log``: what the prediction log costs a served model.

Serves the W1 (tiny MLP) workload with ``modelport serve`` and measures throughput with wrk at
one concurrency, and the CPU per request of the server and of its writer process, in modes
that alternate (so a noisy neighbour hurts all alike; medians are kept):

- ``off``: no prediction log;
- ``thread``: ``--log-writer thread``, the writer a thread of the server;
- ``process``: ``--log-writer process``, the writer process on the server's CPUs;
- ``process-split``: the same, the writer process moved to the load generator's CPUs;
- ``off-neighbour``: no log, but :mod:`bench.log_neighbour` doing the same logging work at
  the rate ``process-split`` logged, on the load generator's CPUs: the control that tells what
  the writer's work costs the server through the machine (shared caches and memory, a VM's
  vCPUs) rather than through modelport.

``--pairs N`` instead switches one server's log on and off under one wrk run (see
:func:`toggled`); with ``--control neighbour`` or ``--control spin`` the server logs nothing and
:mod:`bench.log_neighbour` or :mod:`bench.spin` is resumed and paused in its place, to tell
what the same work, or bare CPU time, on the writer's vCPUs costs the server.

Then checks that every answered request was logged (rows >= requests wrk counted) and none was
lost. Also times the log in-process: ``record()`` on the caller's side, the drain rate, and the
caller's CPU per record.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

from .load import pinned, wrk_sample
from .servers import HOST, Server, free_port, modelport_serve
from .workloads import W1, build

HERE = Path(__file__).resolve().parent


def in_process(records: int, per_call: int = 32) -> dict[str, dict[str, float]]:
    """Per writer: µs per ``record()`` call, per record written (drain), and this process's
    CPU per record over both (the writer thread's included, a writer process's not); then the
    same per record for ``record_call()`` with ``per_call`` requests per model call, the
    server's path."""
    from modelport.store import PredictionLog, PredictionRecord

    x, y = W1.row(), W1.expected().astype(np.float32)
    result = {}
    for writer in ("thread", "process"):
        with tempfile.TemporaryDirectory() as tmp:
            log = PredictionLog.open(
                f"sqlite:///{tmp}/log.db", spool_dir=f"{tmp}/spool", writer=writer
            )
            log.flush()  # a writer process is started and ready
            batch = [
                PredictionRecord(f"r{i}", "w1", "1", {"x": x}, {"y": y}, latency_ms=1.0)
                for i in range(records)
            ]
            cpu = time.process_time()
            started = time.perf_counter()
            for record in batch:
                log.record(record)
            queued = time.perf_counter()
            log.flush()
            drained = time.perf_counter()
            cpu = time.process_time() - cpu
            log.close()
        result[writer] = {
            "record_us": round((queued - started) / records * 1e6, 2),
            "drain_us_per_record": round((drained - started) / records * 1e6, 2),
            "this_process_cpu_us_per_record": round(cpu / records * 1e6, 2),
        }
        result[f"{writer}, record_call"] = _in_process_calls(writer, records, per_call)
    return result


def _in_process_calls(writer: str, records: int, per_call: int) -> dict[str, float]:
    from modelport.store import PredictionLog

    xs = np.repeat(W1.row(), per_call, axis=0)
    ys = np.repeat(W1.expected().astype(np.float32), per_call, axis=0)
    calls = records // per_call
    with tempfile.TemporaryDirectory() as tmp:
        log = PredictionLog.open(f"sqlite:///{tmp}/log.db", spool_dir=f"{tmp}/spool", writer=writer)
        log.flush()
        contexts = [[(f"c{c}-{k}", 1.0, None) for k in range(per_call)] for c in range(calls)]
        rows = [1] * per_call
        cpu = time.process_time()
        started = time.perf_counter()
        for c in range(calls):
            log.record_call("w1", "1", 2.0, contexts[c], rows, {"x": xs}, {"y": ys})
        queued = time.perf_counter()
        log.flush()
        drained = time.perf_counter()
        cpu = time.process_time() - cpu
        log.close()
    n = calls * per_call
    return {
        "record_us": round((queued - started) / n * 1e6, 2),
        "drain_us_per_record": round((drained - started) / n * 1e6, 2),
        "this_process_cpu_us_per_record": round(cpu / n * 1e6, 2),
    }


def _serve(log_db: str | None, writer: str, work: Path, cpus: str | None) -> tuple[Server, int]:
    bodies = build(W1, work)
    port = free_port()
    server = modelport_serve(bodies, port, free_port(), cpus=None, log=work / "serve.log")
    if log_db is not None:
        server.cmd += ["--log-db", log_db, "--log-writer", writer]
    server.cmd = pinned(server.cmd, cpus)
    return server, port


def _writer_pid(pid: int) -> int | None:
    """The prediction-log writer process among ``pid``'s children, if any."""
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in children.read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"modelport.store.child" in cmdline:
                return int(child)
    return None


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


def _cpu_times(cpus: set[int] | None) -> tuple[float, float, float]:
    """``(busy, steal, total)`` jiffies summed over ``cpus`` (all when None), from
    ``/proc/stat``; steal is the time a hypervisor ran something else on these vCPUs."""
    busy = steal = total = 0.0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        v = [int(x) for x in values[:8]]  # user nice system idle iowait irq softirq steal
        busy += v[0] + v[1] + v[2] + v[5] + v[6]
        steal += v[7]
        total += sum(v)
    return busy, steal, total


MODES = {
    "off": (False, "", False),
    "thread": (True, "thread", False),
    "process": (True, "process", False),
    "process-split": (True, "process", True),
    "off-neighbour": (False, "", True),
}
"""mode → (log on, writer, the logging work on the client's CPUs)."""


def served(args: argparse.Namespace, work: Path) -> dict[str, object]:
    """Requests/s, and the server's (and writer process's) CPU per request, without the log
    and with each writer, the modes alternating ``repeats`` times; medians are kept. CPU per
    request moves less than requests/s when neighbours take CPU."""
    from modelport.store.db import Database

    body = build(W1, work).json_request
    modes = args.modes.split(",")
    rps: dict[str, list[float]] = {m: [] for m in modes}
    cpu_us: dict[str, list[float]] = {m: [] for m in modes}
    writer_us: dict[str, list[float]] = {m: [] for m in modes}
    answered = 0
    lost = 0.0
    db_url = args.log_db or f"sqlite:///{work / 'bench-log.db'}"
    split_rate = 15_000.0  # records/s of the last process-split run, for off-neighbour
    for _ in range(args.repeats):
        for mode in modes:
            log_on, writer, split = MODES[mode]
            server, port = _serve(db_url if log_on else None, writer, work, args.server_cpus)
            neighbour = None
            with server:
                server.wait_until(partial(_ready, port))
                url = f"http://{HOST}:{port}/v2/models/{W1.key}/infer"
                wrk_sample(
                    url, body, connections=args.concurrency, seconds=1, cpus=args.client_cpus
                )
                assert server.proc is not None
                child = _writer_pid(server.proc.pid) if writer == "process" else None
                if writer == "process" and child is None:
                    raise RuntimeError("no writer process found under the server")
                if split and child is not None and args.client_cpus is not None:
                    for task in Path(f"/proc/{child}/task").iterdir():  # every thread
                        os.sched_setaffinity(int(task.name), _cpu_set(args.client_cpus))
                if mode == "off-neighbour":
                    neighbour = _neighbour(split_rate, args, work)
                    child = neighbour.writer_pid  # type: ignore[attr-defined]
                before = _cpu_seconds(server.proc.pid)
                child_before = _cpu_seconds(child) if child else 0.0
                sample = wrk_sample(
                    url, body, connections=args.concurrency, seconds=args.seconds,
                    cpus=args.client_cpus,
                )  # fmt: skip
                used = _cpu_seconds(server.proc.pid) - before
                child_used = (_cpu_seconds(child) - child_before) if child else 0.0
                if neighbour is not None:
                    neighbour.wait(timeout=args.seconds + 60)
                if mode == "process-split":
                    split_rate = sample.rps
                rps[mode].append(sample.rps)
                cpu_us[mode].append(used / max(sample.requests, 1) * 1e6)
                writer_us[mode].append(child_used / max(sample.requests, 1) * 1e6)
                if log_on:
                    answered += sample.requests
                    lost += _lost(port)
    db = Database(db_url)
    logged = db.count(W1.key)
    db.dispose()
    result: dict[str, object] = {}
    base = statistics.median(rps["off"]) if "off" in rps else None
    cpu_base = statistics.median(cpu_us["off"]) if "off" in cpu_us else None
    for mode in modes:
        r, c = statistics.median(rps[mode]), statistics.median(cpu_us[mode])
        result[mode] = {
            "rps": round(r, 1),
            "loss_percent": None if base is None else round((base - r) / base * 100, 1),
            # each repeat's sample against the "off" one taken beside it (the modes alternate):
            # a host whose speed drifts between repeats moves both alike
            "paired_loss_percent": _paired_loss(rps, mode),
            "server_cpu_us_per_request": round(c, 1),
            "server_cpu_cost_percent": (
                None if cpu_base is None else round((c - cpu_base) / cpu_base * 100, 1)
            ),
            # off-neighbour: the neighbour's writer process, per request the server answered
            "writer_process_cpu_us_per_request": round(statistics.median(writer_us[mode]), 1),
            "rps_samples": [round(x, 1) for x in rps[mode]],
            "cpu_samples": [round(x, 1) for x in cpu_us[mode]],
        }
    result["logged_rows"] = logged
    result["wrk_requests_with_log"] = answered
    result["lost"] = lost
    return result


def _paired_loss(rps: dict[str, list[float]], mode: str) -> float | None:
    """Median over repeats of ``mode``'s throughput loss against that repeat's ``off``."""
    if "off" not in rps or not rps[mode]:
        return None
    losses = [(off - r) / off * 100 for off, r in zip(rps["off"], rps[mode])]
    return round(statistics.median(losses), 1)


_TOKEN = "bench-admin-token"


def _admin(port: int, method: str, body: dict[str, object] | None = None) -> dict[str, object]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://{HOST}:{port}/admin/log", data=data, method=method,
        headers={"authorization": f"Bearer {_TOKEN}", "content-type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as r:
        answer: dict[str, object] = json.loads(r.read())
    return answer


def _answered(port: int) -> float:
    """Requests the server answered with 200 so far (its Prometheus counter)."""
    request = urllib.request.Request(
        f"http://{HOST}:{port}/metrics", headers={"authorization": f"Bearer {_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        text = r.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("modelport_requests_total{") and 'status="200"' in line
    )


def toggled(args: argparse.Namespace, work: Path) -> dict[str, object]:
    """One server under one continuous wrk run, its log's sample rate switched between 0 and 1
    over the admin API in phases of ``--window`` seconds, in ABBA order; each phase's
    throughput is read off the server's own request counter after ``--settle`` seconds (the
    writer's backlog of the phase before is done by then). Each logged phase has an unlogged
    one beside it on the same process and the same connections, so a host whose speed
    drifts (this one's does, by tens of percent over minutes) moves both alike, and many
    short pairs fit in a run."""
    bodies = build(W1, work)
    body = bodies.json_request
    port = free_port()
    server = modelport_serve(bodies, port, free_port(), cpus=None, log=work / "serve.log")
    db_url = args.log_db or f"sqlite:///{work / 'toggle-log.db'}"
    server.cmd += ["--log-db", db_url, "--log-writer", "process"]
    server.cmd += ["--admin", "--auth-token", _TOKEN]
    server.cmd = pinned(server.cmd, args.server_cpus)
    auth = f"Bearer {_TOKEN}"
    rps: dict[float, list[float]] = {0.0: [], 1.0: []}
    cpu_us: dict[float, list[float]] = {0.0: [], 1.0: []}
    writer_cpu_s, logged_answers = 0.0, 0.0  # over all "on" phases: /proc counts 10 ms ticks
    client_cpus = _cpu_set(args.client_cpus) if args.client_cpus is not None else None
    client_busy: dict[float, list[float]] = {0.0: [], 1.0: []}
    steal: list[float] = []
    with server:
        server.wait_until(partial(_ready, port))
        url = f"http://{HOST}:{port}/v2/models/{W1.key}/infer"
        assert server.proc is not None
        # a first request starts the writer process
        wrk_sample(url, body, connections=8, seconds=1, cpus=args.client_cpus, authorization=auth)
        time.sleep(0.6)
        child = _writer_pid(server.proc.pid)
        if child is None:
            raise RuntimeError("no writer process found under the server")
        neighbour: subprocess.Popen[bytes] | None = None
        if args.control != "none":  # the server logs nothing; other work beside it, or paused
            _admin(port, "POST", {"sample_rate": 0.0})
            neighbour, child = _control(args, work)
        elif args.client_cpus is not None and args.writer_cpus == "client":
            for task in Path(f"/proc/{child}/task").iterdir():
                os.sched_setaffinity(int(task.name), _cpu_set(args.client_cpus))
        seconds = math.ceil(args.pairs * 2 * (args.window + args.settle) + 4)
        with ThreadPoolExecutor(1) as pool:
            load = pool.submit(
                wrk_sample, url, body, connections=args.concurrency, seconds=seconds,
                cpus=args.client_cpus, authorization=auth,
            )  # fmt: skip
            time.sleep(1.5)
            for pair in range(args.pairs):
                for rate in (0.0, 1.0) if pair % 2 == 0 else (1.0, 0.0):
                    if neighbour is not None:
                        os.killpg(neighbour.pid, signal.SIGCONT if rate else signal.SIGSTOP)
                    else:
                        _admin(port, "POST", {"sample_rate": rate})
                    time.sleep(args.settle)
                    n0, t0 = _answered(port), time.perf_counter()
                    cpu0, child0 = _cpu_seconds(server.proc.pid), _cpu_seconds(child)
                    client0, all0 = _cpu_times(client_cpus), _cpu_times(None)
                    time.sleep(args.window)
                    n1, t1 = _answered(port), time.perf_counter()
                    cpu1, child1 = _cpu_seconds(server.proc.pid), _cpu_seconds(child)
                    client1, all1 = _cpu_times(client_cpus), _cpu_times(None)
                    client_busy[rate].append(
                        (client1[0] - client0[0]) / max(client1[2] - client0[2], 1) * 100
                    )
                    steal.append((all1[1] - all0[1]) / max(all1[2] - all0[2], 1) * 100)
                    answered = max(n1 - n0, 1.0)
                    rps[rate].append(answered / (t1 - t0))
                    cpu_us[rate].append((cpu1 - cpu0) / answered * 1e6)
                    if rate:
                        writer_cpu_s += child1 - child0
                        logged_answers += answered
            sample = load.result()
        if neighbour is not None:
            os.killpg(neighbour.pid, signal.SIGKILL)
            neighbour.wait()
        _admin(port, "POST", {"sample_rate": 1.0})
        state = _admin(port, "GET")
    losses = [(off - on) / off * 100 for off, on in zip(rps[0.0], rps[1.0])]
    costs = [(on - off) / off * 100 for off, on in zip(cpu_us[0.0], cpu_us[1.0])]
    quartiles = statistics.quantiles(losses, n=4) if len(losses) > 1 else losses * 3
    return {
        "pairs": args.pairs,
        "control": args.control,
        "window_s": args.window,
        "writer_cpus": args.writer_cpus,
        "loss_percent_median": round(statistics.median(losses), 2),
        "loss_percent_mean": round(statistics.fmean(losses), 2),
        "loss_percent_quartiles": [round(q, 2) for q in (quartiles[0], quartiles[2])],
        "loss_percent_median_ci95": [round(x, 2) for x in _median_ci(losses)],
        "server_cpu_cost_percent_median": round(statistics.median(costs), 2),
        "rps_off_median": round(statistics.median(rps[0.0]), 1),
        "rps_on_median": round(statistics.median(rps[1.0]), 1),
        "writer_process_cpu_us_per_request": round(
            writer_cpu_s / max(logged_answers, 1.0) * 1e6, 2
        ),
        "client_cpus_busy_percent_off_on": [
            round(statistics.median(client_busy[r]), 1) for r in (0.0, 1.0)
        ],
        "steal_percent_median": round(statistics.median(steal), 1),
        "losses": [round(x, 1) for x in losses],
        "wrk_requests": sample.requests,
        "wrk_errors": sample.errors,
        "log": state,
    }


def _median_ci(values: list[float], level: float = 0.95, rounds: int = 4000) -> tuple[float, float]:
    """A bootstrap interval for the median of ``values`` (fixed seed: the same data, the same
    interval)."""
    rng = np.random.default_rng(0)
    data = np.asarray(values, dtype=float)
    medians = np.median(rng.choice(data, size=(rounds, data.size)), axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(medians, [tail, 100 - tail])
    return float(low), float(high)


def _control(args: argparse.Namespace, work: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``--control``'s process, started and stopped (``SIGSTOP``) on the client's CPUs, and
    the process whose CPU time stands for the writer's."""
    if args.control == "spin":
        cmd = [sys.executable, "-m", "bench.spin", str(args.spin_duty)]
        proc, _ = _started(cmd, args, b"spinning")
        worker = proc.pid
    else:
        seconds = args.pairs * 2 * (args.window + args.settle) + 30
        proc = _neighbour(args.neighbour_rate, args, work, seconds, args.neighbour_db)
        worker = proc.writer_pid  # type: ignore[attr-defined]
    os.killpg(proc.pid, signal.SIGSTOP)
    return proc, worker


def _neighbour(
    rate: float,
    args: argparse.Namespace,
    work: Path,
    seconds: float | None = None,
    db: str | None = None,
) -> subprocess.Popen[bytes]:
    """:mod:`bench.log_neighbour` at ``rate`` for the next sample (or ``seconds``) into
    ``db`` (a fresh SQLite file), once it is logging; in a process group of its own with its
    writer process."""
    cmd = [sys.executable, "-m", "bench.log_neighbour", str(rate), str(seconds or args.seconds + 1)]
    cmd.append(db or f"sqlite:///{work / 'neighbour.db'}")
    proc, words = _started(cmd, args, b"logging")
    proc.writer_pid = int(words[1])  # type: ignore[attr-defined]
    return proc


def _started(
    cmd: list[str], args: argparse.Namespace, ready: bytes
) -> tuple[subprocess.Popen[bytes], list[bytes]]:
    """``cmd`` on the client's CPUs in a process group of its own, once the first line it
    prints starts with ``ready``; the process and that line's words."""
    proc = subprocess.Popen(
        pinned(cmd, args.client_cpus), cwd=HERE.parent, stdout=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    words = proc.stdout.readline().split()
    if not words or words[0] != ready:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{cmd[2]} did not start: {words!r}")
    return proc, words


def _cpu_set(spec: str) -> set[int]:
    """A taskset CPU list (``"1"``, ``"0,2"``, ``"1-3"``) as a set."""
    cpus: set[int] = set()
    for part in spec.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


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
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help="comma-separated: off (no log), thread, process (the writer process on the "
        "server's CPUs), process-split (the writer process moved to the client's CPUs)",
    )
    parser.add_argument(
        "--pairs", type=int, default=0,
        help="instead of the modes: this many ABBA pairs of phases on one server under one "
        "wrk run, its log's sample rate switched between 0 and 1 (see toggled())",
    )  # fmt: skip
    parser.add_argument("--window", type=float, default=2.0, help="seconds per phase (--pairs)")
    parser.add_argument(
        "--settle", type=float, default=0.4,
        help="--pairs: seconds after each switch before the phase is measured",
    )  # fmt: skip
    parser.add_argument(
        "--writer-cpus", choices=("server", "client"), default="client",
        help="--pairs: the writer process on the server's CPUs or on the client's",
    )  # fmt: skip
    parser.add_argument(
        "--control", choices=("none", "neighbour", "spin"), default="none",
        help="--pairs: instead of switching the server's log, keep it off and pause and resume "
        "on the client's CPUs bench.log_neighbour (the same logging work, not coupled to the "
        "server) or bench.spin (CPU time alone)",
    )  # fmt: skip
    parser.add_argument(
        "--neighbour-rate", type=float, default=13_000.0,
        help="--control neighbour: records per second it logs (match the server's rate)",
    )  # fmt: skip
    parser.add_argument(
        "--neighbour-db", help="--control neighbour: its database (default: a fresh SQLite file)"
    )
    parser.add_argument(
        "--spin-duty", type=float, default=0.1,
        help="--control spin: the fraction of the time it spins (match the writer's CPU)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.no_pin:
        args.server_cpus = args.client_cpus = None
    if args.pairs:
        (HERE / "_work").mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=HERE / "_work") as tmp:
            for key, value in toggled(args, Path(tmp)).items():
                print(f"{key}: {value}")
        return
    print("in-process:", in_process(args.records))
    (HERE / "_work").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=HERE / "_work") as tmp:
        result = served(args, Path(tmp))
    for key, value in result.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
