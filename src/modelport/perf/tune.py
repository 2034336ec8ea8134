"""``modelport tune``: sweep a model's serving settings with the perf loop, report the frontier
(throughput against p99) and write the best setting within a latency budget.

The search goes one knob at a time, keeping the best value of each before the next, as Triton's
Model Analyzer's quick search does: intra-op threads, then ``max_batch_size``, then
``max_queue_delay_ms``, then server workers (threads shared among them). Each setting is served
by a real ``modelport serve`` process (``mode="serve"``: a shadow copy of the model folder,
linked, with the setting in its ``modelport.yaml``) or a runner in this process
(``mode="local"``: no transport, no start-up cost), and measured at each load level. A
setting's score is its best throughput at a level whose p99 stays within the budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import CONFIG_FILE
from ..errors import ConfigError, ModelportError
from .loop import new_loop
from .profile import BatchTiming
from .session import LocalTarget, RemoteTarget, Step, http_get, run_steps

__all__ = [
    "Plan",
    "Point",
    "Setting",
    "TuneResult",
    "config_file",
    "measure_setting",
    "note",
    "shadow",
    "tune",
    "update_yaml",
    "write",
]


@dataclass(frozen=True)
class Setting:
    """One configuration of the server for the model."""

    threads: int
    max_batch_size: int
    max_queue_delay_ms: float
    workers: int = 1

    @property
    def label(self) -> str:
        return (
            f"threads {self.threads}, batch {self.max_batch_size}, "
            f"delay {self.max_queue_delay_ms:g} ms, workers {self.workers}"
        )

    def batching(self) -> dict[str, Any]:
        return {
            "max_batch_size": self.max_batch_size,
            "max_queue_delay_ms": self.max_queue_delay_ms,
        }

    def runtime(self) -> dict[str, Any]:
        return {"intra_op_threads": self.threads}

    def to_dict(self) -> dict[str, Any]:
        return {**self.batching(), **self.runtime(), "workers": self.workers}


@dataclass
class Point:
    """A setting measured at one load level."""

    setting: Setting
    step: Step
    round: int = 1
    """1 for the sweep, 2 for the leaders measured again."""
    frontier: bool = False
    """No other point has both more throughput and a lower p99."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "setting": self.setting.to_dict(),
            "round": self.round,
            "frontier": self.frontier,
            **self.step.to_dict(),
        }


@dataclass
class TuneResult:
    """What a tune measured and chose."""

    model: str
    path: str
    mode: str
    protocol: str
    budget_ms: float
    cpus: float
    points: list[Point] = field(default_factory=list)
    chosen: Point | None = None
    within_budget: bool = True
    """False when no point kept p99 within the budget (the lowest p99 was chosen)."""
    timings: list[BatchTiming] = field(default_factory=list)
    """The model's call time at each batch size, timed here before the sweep (local mode)."""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "path": self.path,
            "mode": self.mode,
            "protocol": self.protocol,
            "latency_budget_ms": self.budget_ms,
            "cpus": self.cpus,
            "seconds": round(self.seconds, 2),
            "within_budget": self.within_budget,
            "chosen": self.chosen.to_dict() if self.chosen is not None else None,
            "points": [p.to_dict() for p in self.points],
            "batch_timings_ms": {t.size: round(t.seconds * 1000, 4) for t in self.timings},
        }


def _powers(limit: int) -> list[int]:
    out, n = [], 1
    while n <= limit:
        out.append(n)
        n *= 2
    return sorted({*out, limit})


def thread_candidates(cpus: int) -> list[int]:
    """Intra-op threads worth trying on ``cpus`` CPUs: powers of two up to it, and it."""
    return _powers(max(1, cpus))


def worker_candidates(cpus: int) -> list[int]:
    """Server processes worth trying: powers of two from 2 up to the CPUs."""
    return [w for w in _powers(max(1, cpus)) if w > 1]


def frontier(points: Sequence[Point]) -> None:
    """Mark the error-free points no other error-free point beats on both throughput and p99."""
    clean = [p for p in points if p.step.requests > 0 and p.step.errors == 0]
    for p in points:
        p.frontier = p in clean and not any(
            q.step.throughput >= p.step.throughput
            and q.step.p99_ms <= p.step.p99_ms
            and (q.step.throughput > p.step.throughput or q.step.p99_ms < p.step.p99_ms)
            for q in clean
            if q is not p
        )


def _usable(step: Step, budget_ms: float) -> bool:
    return step.requests > 0 and step.errors == 0 and step.p99_ms <= budget_ms


def score(points: Sequence[Point], budget_ms: float) -> tuple[float, float]:
    """A setting's rank from its points: (best throughput within the budget, -its p99)."""
    good = [p.step for p in points if _usable(p.step, budget_ms)]
    if not good:
        return (0.0, -min((p.step.p99_ms for p in points if p.step.requests), default=1e18))
    best = max(good, key=lambda s: (s.throughput, -s.p99_ms))
    return (best.throughput, -best.p99_ms)


def choose(points: Sequence[Point], budget_ms: float) -> tuple[Point | None, bool]:
    """The point with the most throughput within the budget (and no errors); else the one
    with the lowest p99. The flag says whether the budget held."""
    good = [p for p in points if _usable(p.step, budget_ms)]
    if good:
        return max(good, key=lambda p: (p.step.throughput, -p.step.p99_ms)), True
    answered = [p for p in points if p.step.requests]
    return (min(answered, key=lambda p: p.step.p99_ms) if answered else None), False


# -- where the settings go ------------------------------------------------------------------


def config_file(path: Path) -> Path:
    """The ``modelport.yaml`` that applies to the model at ``path`` (which may not exist)."""
    return (path if path.is_dir() else path.parent) / CONFIG_FILE


_TOP_KEY = re.compile(r"^([A-Za-z_][\w-]*)\s*:")
NOTE = "# modelport tune"


def update_yaml(text: str, values: Mapping[str, Mapping[str, Any]], note: str = "") -> str:
    """``text`` (a ``modelport.yaml``) with each top-level key of ``values`` (``batching``,
    ``runtime``) set to its old mapping updated with the new entries, written in flow style
    where the old block stood (or at the end); other keys, comments and order are kept. A
    ``note`` comment goes above the first key written, replacing an earlier tune note."""
    import yaml

    data = yaml.safe_load(text) if text.strip() else {}
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{CONFIG_FILE}: expected a mapping at the top level")
    lines = text.splitlines()
    blocks = _blocks(lines)
    written = False
    out: list[str] = []
    pending = {k: v for k, v in values.items()}
    i = 0
    while i < len(lines):
        key = _top_key(lines[i])
        if key in pending:
            end = blocks[i]
            if note and not written:
                while out and out[-1].startswith(NOTE):
                    out.pop()
                out.append(note)
            out.append(_flow(key, data.get(key), pending.pop(key)))
            written = True
            i = end
            continue
        out.append(lines[i])
        i += 1
    if pending:
        while out and not out[-1].strip():
            out.pop()
        if note and not written:
            out.append(note)
        out.extend(_flow(key, data.get(key), new) for key, new in pending.items())
    return "\n".join(out) + "\n"


def _top_key(line: str) -> str | None:
    match = _TOP_KEY.match(line)
    return match.group(1) if match else None


def _blocks(lines: list[str]) -> dict[int, int]:
    """For each top-level key's line, the index just past its block (its indented lines,
    not the blank or comment lines that lead to the next key)."""
    ends: dict[int, int] = {}
    starts = [i for i, line in enumerate(lines) if _top_key(line)]
    for n, start in enumerate(starts):
        stop = starts[n + 1] if n + 1 < len(starts) else len(lines)
        while stop > start + 1 and (not lines[stop - 1].strip() or lines[stop - 1].startswith("#")):
            stop -= 1
        ends[start] = stop
    return ends


def _flow(key: str, old: Any, new: Mapping[str, Any]) -> str:
    import yaml

    merged = {**(old if isinstance(old, dict) else {}), **new}
    body = yaml.safe_dump(merged, default_flow_style=True, sort_keys=False, width=10_000).strip()
    return f"{key}: {body}"


# -- measuring one setting ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config_text(path: Path) -> str:
    """The ``modelport.yaml`` text that applies to the model at ``path`` ("" for none)."""
    import yaml

    file = config_file(path)
    if not file.is_file():
        return ""
    text = file.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    artifact = data.get("artifact") if isinstance(data, dict) else None
    if path.is_file() and artifact and artifact != path.name:
        raise ConfigError(
            f"{file} configures artifact {artifact!r}, not {path.name!r}: give {path.name} a "
            "folder of its own to tune it"
        )
    return text


def _with_settings(path: Path, text: str, setting: Setting, comment: str = "") -> str:
    import yaml

    updated = update_yaml(
        text, {"batching": setting.batching(), "runtime": setting.runtime()}, comment
    )
    if path.is_file() and "artifact" not in (yaml.safe_load(updated) or {}):
        updated += f"artifact: {path.name}\n"
    return updated


@contextlib.contextmanager
def shadow(path: Path, name: str, setting: Setting) -> Iterator[Path]:
    """A temporary model folder named ``name`` that links to the files of the model at
    ``path`` and holds a ``modelport.yaml`` with ``setting``."""
    source = path if path.is_dir() else path.parent
    updated = _with_settings(path, _config_text(path), setting)
    if path.is_dir():
        entries = sorted(source.iterdir())
    else:
        entries = [path, *[source / "model.py"] * (source / "model.py").is_file()]
    with tempfile.TemporaryDirectory(prefix="modelport-tune-") as tmp:
        folder = Path(tmp) / name
        folder.mkdir()
        for entry in entries:
            if entry.name not in (CONFIG_FILE, "__pycache__"):
                (folder / entry.name).symlink_to(entry.resolve())
        (folder / CONFIG_FILE).write_text(updated, encoding="utf-8")
        yield folder


class Server:
    """``modelport serve`` in a child process on free loopback ports."""

    def __init__(self, folder: Path, setting: Setting, *, grpc: bool, trust: bool, log: Path):
        self.http_port = _free_port()
        self.grpc_port = _free_port() if grpc else 0
        self.log = log
        self.cmd = [
            sys.executable, "-m", "modelport.cli", "serve", str(folder),
            "--host", "127.0.0.1", "--http-port", str(self.http_port),
            "--grpc-port", str(self.grpc_port), "--workers", str(setting.workers),
            "--drain-period", "0", "--shutdown-timeout", "10", "--no-watch", "--no-console",
            "--log-level", "warning", "--log-format", "text",
        ]  # fmt: skip
        if trust:
            self.cmd.append("--trust")
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self, timeout: float = 120.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPORT_")}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ModelportError(
                    f"modelport serve exited with {self.proc.returncode}: {self.tail()}"
                )
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                status, _ = await http_get(
                    "127.0.0.1", self.http_port, "/v2/health/ready", timeout=2
                )
                if status == 200:
                    return
            if time.monotonic() > deadline:
                raise ModelportError(
                    f"modelport serve not ready after {timeout:.0f} s: {self.tail()}"
                )
            await asyncio.sleep(0.05)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: the workers too
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@dataclass
class Plan:
    """How each setting is measured."""

    path: Path
    name: str
    mode: str
    protocol: str
    concurrency: Sequence[int]
    seconds: float
    warmup: float
    trust: bool
    token: str | None = None


async def measure_setting(plan: Plan, setting: Setting) -> list[Step]:
    """The steps of one setting, at every load level."""
    if plan.mode == "local":
        target = LocalTarget(
            plan.path, model=plan.name, trust=plan.trust, threads=setting.threads,
            batching=setting.batching(),
        )  # fmt: skip
        await target.start()
        try:
            return await run_steps(
                target, ["local"], concurrency=plan.concurrency, seconds=plan.seconds,
                warmup=plan.warmup,
            )  # fmt: skip
        finally:
            await target.stop()
    with shadow(plan.path, plan.name, setting) as folder:
        server = Server(
            folder, setting, grpc=plan.protocol == "grpc", trust=plan.trust,
            log=folder.parent / "serve.log",
        )  # fmt: skip
        try:
            await server.start()
            remote = RemoteTarget(
                f"http://127.0.0.1:{server.http_port}", model=plan.name,
                grpc_url=f"127.0.0.1:{server.grpc_port}",
            )  # fmt: skip
            await remote.start()
            return await run_steps(
                remote, [plan.protocol], concurrency=plan.concurrency, seconds=plan.seconds,
                warmup=plan.warmup,
            )  # fmt: skip
        finally:
            server.stop()


# -- the search -----------------------------------------------------------------------------

OnPoint = Callable[[Point], None]


def tune(
    path: Path,
    *,
    mode: str = "serve",
    protocol: str = "json",
    budget_ms: float = 50.0,
    concurrency: Sequence[int] = (16, 64),
    threads: Sequence[int] | None = None,
    batch_sizes: Sequence[int] = (1, 8, 32, 64, 128),
    delays: Sequence[float] = (0.0, 0.5, 1.0, 2.0, 5.0),
    workers: Sequence[int] | None = None,
    seconds: float = 1.0,
    warmup: float = 0.3,
    trust: bool = False,
    confirm: int = 2,
    on_point: OnPoint | None = None,
) -> TuneResult:
    """Sweep the settings of the model at ``path`` one knob at a time (see the module), then
    measure the ``confirm`` best settings once more and choose by their average."""
    from ..cpus import cpu_budget
    from .profile import time_batches

    if mode not in ("serve", "local"):
        raise ConfigError(f"mode must be 'serve' or 'local', got {mode!r}")
    started = time.perf_counter()
    budget = cpu_budget()
    cpus = max(1, int(budget.cpus))
    probe = LocalTarget(path, trust=trust)
    model = probe.resolve()  # one model, or a clear error
    if model.path is None or not Path(model.path).exists():
        raise ConfigError(f"{path}: tune needs a model artifact or a model directory")
    result = TuneResult(model.name, str(path), mode, protocol if mode == "serve" else "local",
                        budget_ms, budget.cpus)  # fmt: skip
    with contextlib.suppress(Exception):  # a model without a signature is still measured
        result.timings = time_batches(model, tuple(sorted(set(batch_sizes))), budget_ms=budget_ms)
    if result.timings:  # sizes whose single call already overruns half the budget are out
        slow = {t.size for t in result.timings if 2 * t.seconds * 1000 > budget_ms}
        batch_sizes = [b for b in batch_sizes if b not in slow] or [min(batch_sizes)]
    plan = Plan(path, model.name, mode, protocol, concurrency, seconds, warmup, trust)
    rounds: dict[Setting, list[list[Point]]] = {}
    loop, _ = new_loop()

    def measure(setting: Setting) -> None:
        steps = loop.run_until_complete(measure_setting(plan, setting))
        points = [Point(setting, s, round=len(rounds.get(setting, [])) + 1) for s in steps]
        rounds.setdefault(setting, []).append(points)
        for point in points:
            result.points.append(point)
            if on_point is not None:
                on_point(point)

    def best(options: list[Setting]) -> Setting:
        for setting in options:
            if setting not in rounds:
                measure(setting)
        return max(options, key=lambda s: score(rounds[s][0], budget_ms))

    try:
        b = model.batching
        current = Setting(
            int(model.options.get("intra_op_threads") or budget.threads()),
            b.max_batch_size, b.max_queue_delay_ms,
        )  # fmt: skip
        thread_options = sorted(set(threads or thread_candidates(cpus)))
        current = best([_with(current, threads=t) for t in thread_options])
        current = best([_with(current, max_batch_size=n) for n in batch_sizes])
        current = best([_with(current, max_queue_delay_ms=float(d)) for d in delays])
        if mode == "serve":
            options = [current]
            for w in workers if workers is not None else worker_candidates(cpus):
                if w > 1:
                    options.append(_with(current, workers=w, threads=max(1, cpus // w)))
            best(options)
        # One more measurement of the leaders: a lucky run on a busy machine must not win alone.
        leaders = sorted(rounds, key=lambda s: score(rounds[s][0], budget_ms), reverse=True)
        for setting in leaders[:confirm] if len(leaders) > 1 else []:
            measure(setting)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    frontier(result.points)
    result.chosen, result.within_budget = _decide(rounds, result.points, budget_ms)
    result.seconds = time.perf_counter() - started
    return result


def _decide(
    rounds: Mapping[Setting, list[list[Point]]], points: Sequence[Point], budget_ms: float
) -> tuple[Point | None, bool]:
    """Among the settings measured again (all, where none was), the one whose rounds average
    the best score, and its best point in its last round; where no setting kept the budget,
    the point with the lowest p99."""

    def rank(setting: Setting) -> tuple[float, float]:
        scores = [score(r, budget_ms) for r in rounds[setting]]
        return (sum(s[0] for s in scores) / len(scores), sum(s[1] for s in scores) / len(scores))

    confirmed = [s for s in rounds if len(rounds[s]) > 1] or list(rounds)
    within = [s for s in confirmed if any(_usable(p.step, budget_ms) for r in rounds[s] for p in r)]
    if not within:
        return choose(points, budget_ms)
    setting = max(within, key=rank)
    for latest in reversed(rounds[setting]):
        point, ok = choose(latest, budget_ms)
        if ok:
            return point, True
    return choose(points, budget_ms)  # pragma: no cover  (within says one round held)


def _with(setting: Setting, **changes: Any) -> Setting:
    from dataclasses import replace

    return replace(setting, **changes)


def note(result: TuneResult) -> str:
    """The comment written above the settings."""
    chosen = result.chosen
    assert chosen is not None
    step = chosen.step
    day = datetime.date.today().isoformat()
    workers = (
        f"serve with --workers {chosen.setting.workers}; " if chosen.setting.workers > 1 else ""
    )
    how = "in-process" if result.mode == "local" else f"modelport serve, {result.protocol}"
    return (
        f"{NOTE} {day} ({how}): {workers}{step.throughput:,.0f} req/s, "
        f"p99 {step.p99_ms:.1f} ms at {step.load} (budget {result.budget_ms:g} ms)"
    )


def write(result: TuneResult, path: Path, *, dry_run: bool = False) -> tuple[Path, str]:
    """The chosen settings in the model's ``modelport.yaml``: ``(file, new text)``; written
    unless ``dry_run``, and read back to check that it loads with them."""
    from ..config import load_config

    if result.chosen is None:
        raise ModelportError("no setting answered any request: nothing to write")
    file = config_file(path)
    setting = result.chosen.setting
    updated = _with_settings(path, _config_text(path), setting, note(result))
    if not dry_run:
        file.write_text(updated, encoding="utf-8")
        config = load_config(file)
        if (config.batching.max_batch_size, config.batching.max_queue_delay_ms) != (
            setting.max_batch_size,
            setting.max_queue_delay_ms,
        ):
            raise ModelportError(f"{file}: the settings written did not read back")
    return file, updated
