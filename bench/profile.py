"""Where a server spends its time under load: py-spy samples it while a load generator runs.

The collapsed stacks (``py-spy record --format raw``) are summarised three ways: by package
(of the leaf frame), by function where the CPU was (self), and modelport's own functions on
the stack (inclusive). Idle threads are not sampled (py-spy's default).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .load import HarnessError, Sample, pinned

__all__ = ["profile_during", "summarize"]

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def profile_during(
    pid: int,
    sample: Callable[[int, float], Sample],
    *,
    concurrency: int,
    seconds: int,
    cpus: str | None,
    output: Path,
) -> dict[str, Any]:
    """Record ``pid`` (and its children) with py-spy while ``sample`` loads it."""
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if exe is None:
        raise HarnessError('py-spy is not installed: pip install -e ".[bench]"')
    cmd = [exe, "record", "--pid", str(pid), "--subprocesses", "--nonblocking", "--rate", "250"]
    cmd += ["--full-filenames"]
    cmd += ["--duration", str(seconds + 1), "--format", "raw", "--output", str(output)]
    spy = subprocess.Popen(pinned(cmd, cpus), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(0.5)
    load = sample(concurrency, seconds)
    out, _ = spy.communicate(timeout=seconds + 60)
    if spy.returncode != 0 or not output.exists():
        raise HarnessError(
            f"py-spy failed ({spy.returncode}): {out.decode(errors='replace')[-800:]}"
        )
    summary = summarize(output.read_text())
    summary["load"] = {"concurrency": concurrency, "rps": load.rps, "p99_ms": load.p99_ms}
    summary["raw"] = str(output)
    return summary


def summarize(collapsed: str, top: int = 15) -> dict[str, Any]:
    """Shares of samples by package, by leaf function (self) and by function on the stack."""
    by_package: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        total += count
        self_time[_name(frames[-1])] += count
        by_package[_package(frames[-1])] += count
        for name in {_name(f) for f in frames if _is_own(f)}:
            inclusive[name] += count

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return (
            [(k, round(100 * v / total, 1)) for k, v in counter.most_common(top)] if total else []
        )

    return {
        "samples": total,
        "by_package": shares(by_package),
        "self": shares(self_time),
        "inclusive": shares(inclusive),
    }


def _is_own(frame: str) -> bool:
    """A frame of modelport's serving code (not the CLI or start-up frames below the loop)."""
    match = _FRAME.match(frame)
    path = match["file"] if match else ""
    return "modelport/" in path and not any(p in path for p in _ENTRY)


_ENTRY = ("modelport/cli/", "modelport/server/serve.py")


def _name(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    return f"{match['func']} ({_short(match['file'])}:{match['line'] or '?'})"


def _package(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return "native"
    path = match["file"]
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/src/modelport/" in path:
        parts = path.split("/src/modelport/", 1)[1].split("/")
        return "modelport." + (parts[0].removesuffix(".py") if len(parts) > 1 else "core")
    stdlib = re.match(r"^.*/lib/python3\.\d+/([^/]+)", path)
    if stdlib:
        return "stdlib." + stdlib[1].removesuffix(".py")
    return _short(path)


def _short(path: str) -> str:
    return re.sub(r"^.*?(site-packages/|/src/|/lib/python3\.\d+/)", "", path)
