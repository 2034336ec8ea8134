"""``python -m bench.cli_startup``: how long the ``modelport`` command takes to start.

For each case, the median wall time of ``--runs`` runs of the installed ``modelport``
executable (the console script, as a user runs it), then ``python -X importtime`` runs (the
least self time of each module over three) to show where the import time goes: the top modules,
and the top-level packages. Import times are inflated by ``-X importtime`` itself; compare them
with each other, and the wall times with the ``python -c pass`` row. Python may write bytecode
caches (``__pycache__``, ignored by git) whatever ``PYTHONDONTWRITEBYTECODE`` says: an installed
package has them.

``--baseline DIR`` measures another tree of the package too (say ``git archive HEAD src``
unpacked in a folder BEFORE: ``--baseline BEFORE/src``), its runs interleaved with this
tree's so that a busy machine slows both alike.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo" / "iris"
REQUEST_ID = "bench-cli-startup"


@dataclass
class Case:
    label: str
    argv: list[str]
    """Arguments after ``modelport``; with ``python`` set, ``python -c pass`` runs instead."""
    python: bool = False


@dataclass
class Tree:
    label: str
    env: dict[str, str]


@dataclass
class Result:
    case: Case
    tree: str
    median_ms: float
    min_ms: float
    import_ms: float
    top_modules: list[tuple[str, float]]
    top_packages: list[tuple[str, float]]


def _executable() -> str:
    beside = Path(sys.executable).with_name("modelport")
    found = str(beside) if beside.exists() else shutil.which("modelport")
    if not found:
        raise SystemExit("no modelport executable beside this python or on PATH")
    return found


def _env(src: Path | None = None) -> dict[str, str]:
    skip = ("MODELPORT_", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    env["COLUMNS"] = "100"
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH")) if p)
    return env


def _modelport_source(env: dict[str, str]) -> str:
    code = "import modelport; print(modelport.__file__)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return str(Path(done.stdout.strip()).parent)


def _time_run(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, check=False)
    elapsed = (time.perf_counter() - started) * 1000
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr.decode()}")
    return elapsed


def import_times(argv: list[str], env: dict[str, str], runs: int = 3) -> dict[str, float]:
    """Self time in ms of each module ``modelport ARGV`` imports (``-X importtime``), the least
    of ``runs`` runs."""
    code = "import sys; from modelport.cli import main; sys.exit(main())"
    command = [sys.executable, "-X", "importtime", "-c", code, *argv]
    selfs: dict[str, float] = {}
    for _ in range(runs):
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        for line in done.stderr.splitlines():
            if not line.startswith("import time:") or "self [us]" in line:
                continue
            own, _cumulative, name = line.removeprefix("import time:").split("|", 2)
            ms = int(own) / 1000
            selfs[name.strip()] = min(ms, selfs.get(name.strip(), ms))
    return selfs


def measure(case: Case, trees: list[Tree], runs: int, top: int, executable: str) -> list[Result]:
    command = [sys.executable, "-c", "pass"] if case.python else [executable, *case.argv]
    times: dict[str, list[float]] = {tree.label: [] for tree in trees}
    for tree in trees:
        _time_run(command, tree.env)  # warm the page cache and write the .pyc files
    for _ in range(runs):
        for tree in trees:
            times[tree.label].append(_time_run(command, tree.env))
    results = []
    for tree in trees:
        selfs = {} if case.python else import_times(case.argv, tree.env)
        packages: dict[str, float] = defaultdict(float)
        for name, ms in selfs.items():
            packages[name.split(".")[0]] += ms
        results.append(
            Result(
                case,
                tree.label,
                statistics.median(times[tree.label]),
                min(times[tree.label]),
                sum(selfs.values()),
                sorted(selfs.items(), key=lambda kv: -kv[1])[:top],
                sorted(packages.items(), key=lambda kv: -kv[1])[:top],
            )
        )
        if case.python:
            break  # the same interpreter whatever the tree
    return results


@contextmanager
def feedback_db() -> Iterator[str | None]:
    """A SQLite prediction log holding one logged request, or None without the store extra."""
    try:
        import numpy as np

        from modelport.store import PredictionLog, PredictionRecord
    except ImportError:
        yield None
        return
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'log.db'}"
        with PredictionLog.open(url, spool_dir=Path(tmp) / "spool", writer="thread") as log:
            x = np.zeros((1, 4), dtype=np.float32)
            log.record(PredictionRecord(REQUEST_ID, "iris", "1", {"x": x}, {"y": x}))
            if not log.flush(timeout=30):
                raise SystemExit("could not write the prediction log for the feedback case")
        yield url


def _fmt(pairs: list[tuple[str, float]]) -> str:
    return ", ".join(f"{name} {ms:.0f}" for name, ms in pairs)


def table(results: list[Result]) -> str:
    lines = [
        "| command | tree | median ms | min ms | imports ms (importtime) | top packages, ms |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        lines.append(
            f"| `{r.case.label}` | {r.tree} | {r.median_ms:.0f} | {r.min_ms:.0f} | "
            f"{r.import_ms:.0f} | {_fmt(r.top_packages)} |"
        )
    lines += ["", "| command | tree | top modules by self time, ms |", "| --- | --- | --- |"]
    lines += [
        f"| `{r.case.label}` | {r.tree} | {_fmt(r.top_modules)} |" for r in results if r.top_modules
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cli_startup", description=__doc__)
    parser.add_argument("--runs", type=int, default=15, help="timed runs per command and tree")
    parser.add_argument("--top", type=int, default=6, help="modules and packages listed")
    parser.add_argument("--baseline", type=Path, help="another src/ tree, measured alongside")
    args = parser.parse_args(argv)
    executable = _executable()
    trees = [Tree("this", _env())]
    if args.baseline is not None:
        trees.append(Tree("baseline", _env(args.baseline.resolve())))
    cases = [
        Case("python -c pass", [], python=True),
        Case("modelport --help", ["--help"]),
        Case("modelport info demo/iris", ["info", str(DEMO)]),
        Case("modelport feedback --help", ["feedback", "--help"]),
    ]
    with feedback_db() as url:
        if url is not None:
            feedback = ["feedback", "--log-db", url, REQUEST_ID, "1"]
            cases.append(Case(f"modelport feedback {REQUEST_ID} 1", feedback))
        results = [r for c in cases for r in measure(c, trees, args.runs, args.top, executable)]
    print(f"{args.runs} runs each; {executable}; load average {os.getloadavg()[0]:.2f}")
    for tree in trees:
        print(f"{tree.label}: modelport from {_modelport_source(tree.env)}")
    print()
    print(table(results))


if __name__ == "__main__":
    main()
