"""``python -m bench.overload``: goodput while shedding, and recovery, of one server process.

Serves the W1 workload (tiny MLP, ``max_batch_size`` 32, the default ``max_queue_size`` 1024)
with ``modelport serve`` on the server CPUs and loads it from the client CPUs with
:mod:`bench.http_load` (which keeps the latencies of 200s and 503s apart; wrk cannot), in three
phases:

1. **capacity**: 64 connections for ``--capacity-seconds``: req/s, all 200;
2. **overload**: ``--connections`` (2048) for ``--seconds`` (20): answers per second by status,
   p50/p99 of each, the server's resident memory before, at its peak and after;
3. **recovery**: capacity again.

With ``--baseline DIR`` (another tree's ``src``, say ``git archive HEAD src`` unpacked in
a folder BEFORE) that tree's server runs the same phases in the same run, before this one, and
``--rounds N`` alternates them N times. Each phase also records the server's CPU seconds, so
figures can be read per CPU-second where a shared machine lends the server's core to others.

Checks (issue 18): goodput while shedding >= 80 % of capacity; 503 p99 <= 50 ms; admitted p99
<= the queue's bound, ``(max_queue_size + max_batch_size) / capacity``; resident memory grows
by at most 100 MiB; capacity after >= 95 % of before. Writes
``bench/results/overload-<date>.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .load import HarnessError, _run, pinned
from .machine import describe
from .servers import HOST, answers, free_port, modelport_serve, verify_json
from .workloads import W1, build

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MAX_QUEUE_SIZE = 1024
"""The batching default the W1 model keeps (its modelport.yaml does not set one)."""
RSS_GROWTH_MIB = 100.0


@dataclass
class Phase:
    """One load-generator run against the server."""

    connections: int
    seconds: float
    answers: dict[str, int]
    latency: dict[str, dict[str, float]]
    per_second: dict[str, list[int]]
    errors: dict[str, int]
    unanswered: int
    server_cpu_s: float
    client_cpu_s: float

    def rate(self, status: str = "200") -> float:
        return self.answers.get(status, 0) / self.seconds if self.seconds else 0.0

    def p(self, status: str, q: str) -> float | None:
        return self.latency.get(status, {}).get(f"{q}_ms")


@dataclass
class Round:
    """The three phases against one tree's server."""

    tree: str
    capacity: Phase
    overload: Phase
    recovery: Phase
    rss_mib: dict[str, float] = field(default_factory=dict)

    def checks(self) -> list[tuple[str, str, str, bool]]:
        """(goal, measured, target, met) for each goal."""
        capacity = self.capacity.rate()
        goodput = self.overload.rate()
        bound_ms = (MAX_QUEUE_SIZE + W1.max_batch_size) / capacity * 1000 if capacity else 0.0
        refused_p99 = self.overload.p("503", "p99")
        admitted_p99 = self.overload.p("200", "p99")
        growth = self.rss_mib.get("peak", 0.0) - self.rss_mib.get("before", 0.0)
        after = self.recovery.rate()
        return [
            (
                "goodput while shedding",
                f"{goodput:,.0f} req/s = {goodput / capacity:.0%} of capacity",
                ">= 80 %",
                goodput >= 0.8 * capacity,
            ),
            (
                "503 p99",
                "no 503" if refused_p99 is None else f"{refused_p99:.1f} ms",
                "<= 50 ms",
                refused_p99 is not None and refused_p99 <= 50,
            ),
            (
                "admitted (200) p99",
                f"{admitted_p99 or 0:.1f} ms",
                f"<= {bound_ms:.1f} ms (queue bound)",
                admitted_p99 is not None and admitted_p99 <= bound_ms,
            ),
            (
                "resident memory growth",
                f"{growth:+.1f} MiB (peak {self.rss_mib.get('peak', 0):.0f} MiB)",
                f"<= {RSS_GROWTH_MIB:.0f} MiB",
                growth <= RSS_GROWTH_MIB,
            ),
            (
                "capacity after",
                f"{after:,.0f} req/s = {after / capacity:.0%} of before",
                ">= 95 %",
                after >= 0.95 * capacity,
            ),
        ]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _phase(
    port: int, body: Path, connections: int, seconds: float, cpus: str | None, pid: int
) -> Phase:
    cmd = [sys.executable, "-m", "bench.http_load", f"{HOST}:{port}", "/v2/models/w1/infer"]
    cmd += [str(body), "--connections", str(connections), "--seconds", str(seconds)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.getenv("PYTHONPATH")])),
    }
    cpu = _cpu_seconds(pid)
    result = _run(pinned(cmd, cpus), env=env, limit=seconds + 60)
    return Phase(
        connections=connections,
        seconds=result["seconds"],
        answers=result["answers"],
        latency=result["latency"],
        per_second=result["per_second"],
        errors=result["errors"],
        unanswered=result["unanswered"],
        server_cpu_s=_cpu_seconds(pid) - cpu,
        client_cpu_s=result["client_cpu_s"],
    )


def one_round(tree: str, src: Path | None, args: argparse.Namespace, log: Any = print) -> Round:
    """Start the server of ``src`` (None: this tree), run the three phases, stop it."""
    bodies = build(W1, args.work_dir, threads=1)
    port = free_port()
    env = {"PYTHONPATH": str(src)} if src is not None else {}
    server = modelport_serve(
        bodies,
        port,
        free_port(),
        cpus=args.server_cpus,
        log=args.work_dir / "logs" / f"overload-{tree}.log",
    )
    server.env.update(env)
    server.cmd += ["--log-level", "warning", *args.server_arg]
    expected = W1.expected()
    with server:
        server.wait_until(lambda: answers(lambda: verify_json(port, W1.key, bodies, expected)))
        assert server.proc is not None
        pid = server.proc.pid
        rss: dict[str, float] = {"before": _rss_mib(pid)}
        capacity = _phase(
            port, bodies.json_request, 64, args.capacity_seconds, args.client_cpus, pid
        )
        log(f"[overload] {tree}: capacity {capacity.rate():,.0f} req/s")
        peak = [rss["before"]]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.wait(0.25):
                peak.append(_rss_mib(pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        overload = _phase(
            port, bodies.json_request, args.connections, args.seconds, args.client_cpus, pid
        )
        sampling.set()
        sampler.join()
        rss["peak"] = max(peak)
        time.sleep(1.0)  # the refused connections close
        recovery = _phase(
            port, bodies.json_request, 64, args.capacity_seconds, args.client_cpus, pid
        )
        rss["after"] = _rss_mib(pid)
    result = Round(tree, capacity, overload, recovery, rss)
    log(
        f"[overload] {tree}: shedding {overload.rate():,.0f} x 200/s, {overload.rate('503'):,.0f}"
        f" x 503/s; 200 p99 {overload.p('200', 'p99') or 0:.0f} ms, 503 p99 "
        f"{overload.p('503', 'p99') or 0:.0f} ms; after {recovery.rate():,.0f} req/s"
    )
    return result


def _shown(argv: list[str]) -> list[str]:
    """The command line, less ``--note`` and its text (printed below it)."""
    shown, skip = [], False
    for arg in argv:
        if skip or arg == "--note":
            skip = not skip
            continue
        if not arg.startswith("--note="):
            shown.append(arg)
    return shown


def report(rounds: list[Round], args: argparse.Namespace, machine: dict[str, Any]) -> str:
    """The results as markdown."""
    lines = [
        f"# Overload: goodput while shedding ({time.strftime('%Y-%m-%d')})",
        "",
        f"`python -m bench.overload {' '.join(_shown(args.argv))}`: W1 (tiny MLP), one server "
        f"process on "
        f"CPU {args.server_cpus}, `bench.http_load` on CPU {args.client_cpus}; capacity at 64 "
        f"connections for {args.capacity_seconds:g} s, then {args.connections} connections for "
        f"{args.seconds:g} s, then capacity again. Machine: {machine.get('cpu', '?')}, "
        f"load average at start {machine.get('load_average', '?')}.",
        "",
    ]
    if args.note:
        lines += [f"> {args.note}", ""]
    lines += [
        "| tree | capacity req/s | shedding: 200/s | 503/s | 200 p50 / p99 ms | 503 p50 / p99 ms "
        "| errors | server CPU s (capacity, shedding) | RSS MiB before / peak / after "
        "| capacity after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rounds:
        o = r.overload
        lines.append(
            f"| {r.tree} | {r.capacity.rate():,.0f} | {o.rate():,.0f} "
            f"({o.rate() / r.capacity.rate():.0%}) | {o.rate('503'):,.0f} "
            f"| {o.p('200', 'p50') or 0:.1f} / {o.p('200', 'p99') or 0:.1f} "
            f"| {o.p('503', 'p50') or 0:.1f} / {o.p('503', 'p99') or 0:.1f} "
            f"| {sum(o.errors.values())} | {r.capacity.server_cpu_s:.1f}, {o.server_cpu_s:.1f} "
            f"| {r.rss_mib['before']:.0f} / {r.rss_mib['peak']:.0f} / {r.rss_mib['after']:.0f} "
            f"| {r.recovery.rate():,.0f} ({r.recovery.rate() / r.capacity.rate():.0%}) |"
        )
    lines += ["", "Per CPU-second of the server (where the machine lent its core to others):", ""]
    lines += [
        "| tree | capacity 200 per CPU-s | shedding 200 per CPU-s | ratio |",
        "|---|---|---|---|",
    ]
    for r in rounds:
        cap = r.capacity.answers.get("200", 0) / max(r.capacity.server_cpu_s, 1e-9)
        shed = r.overload.answers.get("200", 0) / max(r.overload.server_cpu_s, 1e-9)
        lines.append(f"| {r.tree} | {cap:,.0f} | {shed:,.0f} | {shed / cap:.0%} |")
    for r in rounds:
        lines += [
            "",
            f"## Goals: {r.tree}",
            "",
            "| goal | measured | target | met |",
            "|---|---|---|---|",
        ]
        lines += [f"| {g} | {m} | {t} | {'yes' if ok else 'NO'} |" for g, m, t, ok in r.checks()]
    lines += [
        "",
        "Answers per second during the overload (200 / 503), second by second:",
        "",
    ]
    for r in rounds:
        ok = r.overload.per_second.get("200", [])
        no = r.overload.per_second.get("503", [])
        pairs = " ".join(
            f"{a}/{b}"
            for a, b in zip(ok + [0] * (len(no) - len(ok)), no + [0] * (len(ok) - len(no)))
        )
        lines.append(f"- {r.tree}: {pairs}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.overload", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="overload phase (default 20)")
    parser.add_argument("--capacity-seconds", type=float, default=5.0, help="capacity phases")
    parser.add_argument("--connections", type=int, default=2048)
    parser.add_argument("--baseline", type=Path, help="another tree's src to measure too")
    parser.add_argument("--rounds", type=int, default=1, help="alternations (with --baseline)")
    parser.add_argument("--server-cpus", default="0")
    parser.add_argument("--client-cpus", default="1")
    parser.add_argument("--server-arg", action="append", default=[], help="extra serve argument")
    parser.add_argument("--work-dir", type=Path, default=HERE / "_work")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--name", help="results file stem (default overload-<date>)")
    parser.add_argument("--note", default="")
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    machine = describe()
    rounds: list[Round] = []
    try:
        for _ in range(args.rounds):
            if args.baseline is not None:
                rounds.append(one_round("baseline", args.baseline.resolve(), args))
            rounds.append(one_round("this tree", None, args))
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    stem = args.name or f"overload-{time.strftime('%Y-%m-%d')}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(
        json.dumps({"machine": machine, "rounds": [asdict(r) for r in rounds]}, indent=1)
    )
    text = report(rounds, args, machine)
    (args.out / f"{stem}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
