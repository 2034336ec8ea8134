"""A text workload through the contract's batch hooks (issue 16): served against in-process.

``python -m bench.text`` builds a small transformer encoder (a word-level tokenizer trained
here; an ONNX encoder of ``--layers`` attention + feed-forward blocks of width ``--dim``)
whose ``model.py`` tokenises in ``preprocess_batch`` and mean-pools in ``postprocess_batch``,
and texts of mixed lengths (4 to 60 words). In one run, pinned as the other benchmarks are
(server and in-process on ``--server-cpus``, load on ``--client-cpus``):

- **in-process**: ``model.predict_batch`` on the texts sorted by length, in batches of 32,
  with the thread count the server picks for that CPU set (1 on one CPU);
- **served**: ``modelport serve DIR`` with **no flags and no batching settings** (the
  defaults), under ``--concurrency`` clients each sending one text per request, over
  ``/predict`` (plain JSON), V2 REST JSON and gRPC; the load comes from ``bench.text_load``.

Prints texts/s for each, the ratio to in-process and the mean rows per model call read from
the server's own batch counters; ``--json`` prints ``BENCH_RESULT {json}`` too.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from .load import _MARK, HarnessError, pinned
from .servers import HOST, Server, free_port

HERE = Path(__file__).resolve().parent
DOORS = ("predict", "v2", "grpc")
BUCKET = 8
TUNED = "{max_batch_size: 64}"
"""The hand-set batching of the tuned rows (the defaults: chosen from the model's timings)."""
"""The ``bucket_size`` the model's class declares (a sequence model says so in ``model.py``)."""


def texts(count: int) -> list[str]:
    """``count`` texts of 4 to 60 words from the tokenizer's corpus (some words unknown)."""
    sys.path.insert(0, str(HERE.parent))
    from tests.builders import CORPUS

    words = [*" ".join(CORPUS).split(), "unseen", "vocabulary"]
    out = []
    for i in range(count):
        n = 4 + (i * 37) % 57
        out.append(" ".join(words[(i + k * 3) % len(words)] for k in range(n)))
    return out


def build(directory: Path, dim: int, layers: int) -> Path:
    sys.path.insert(0, str(HERE.parent))
    from tests.builders import text_model

    if not (directory / "model.onnx").exists():
        text_model(directory, batching=None, dim=dim, layers=layers, ffn=4 * dim, bucket=BUCKET)
    return directory


def in_process(directory: Path, corpus: list[str], seconds: float, batch: int) -> dict[str, Any]:
    """Texts per second of ``predict_batch`` on length-sorted batches (runs in this process)."""
    import numpy as np

    import modelport

    model = modelport.load(directory, trust=True)
    model.ensure_loaded()
    ordered = sorted(corpus, key=lambda t: len(t.split()))
    batches = [
        {"text": np.array([t.encode() for t in ordered[i : i + batch]], dtype=object)}
        for i in range(0, len(ordered), batch)
    ]
    return {"texts_per_s": rows_per_s(model, batches, seconds)}


def rows_per_s(model: Any, batches: list[dict[str, Any]], seconds: float) -> float:
    """Rows a second of ``model.predict_batch`` over ``batches`` in turn, for ``seconds``."""
    for inputs in batches[:2]:
        model.predict_batch(inputs)
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        for inputs in batches:
            model.predict_batch(inputs)
            done += len(next(iter(inputs.values())))
    return done / (time.perf_counter() - began)


def batch_counters(port: int) -> tuple[float, float]:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    found = []
    for kind in ("count", "sum"):
        pattern = rf"^modelport_batch_size_{kind}\{{[^}}]*\}} (\S+)$"
        found.append(sum(float(v) for v in re.findall(pattern, text, re.MULTILINE)))
    return found[0], found[1]


def served(
    directory: Path, corpus: list[str], args: argparse.Namespace, work: Path
) -> dict[str, dict[str, Any]]:
    http, grpc = free_port(), free_port()
    exe = Path(sys.executable).with_name("modelport")
    cmd = [str(exe), "serve", str(directory), "--host", HOST]
    cmd += ["--http-port", str(http), "--grpc-port", str(grpc), "--trust"]
    bodies = work / "texts.json"
    bodies.write_text(json.dumps(corpus))
    results: dict[str, dict[str, Any]] = {}
    with Server("modelport", cmd, cpus=args.server_cpus, env={}, log=work / "serve.log") as server:
        server.wait_until(lambda: _ready(http), timeout=120)
        for door in DOORS:
            calls0, rows0 = batch_counters(http)
            target = f"{HOST}:{grpc}" if door == "grpc" else f"{HOST}:{http}"
            load = [sys.executable, "-m", "bench.text_load", door, target, str(bodies)]
            load += ["--concurrency", str(args.concurrency), "--seconds", str(args.seconds)]
            load += ["--warmup", str(args.warmup), "--model", directory.name]
            done = subprocess.run(
                pinned(load, args.client_cpus),
                capture_output=True,
                text=True,
                timeout=args.seconds + args.warmup + 120,
                cwd=HERE.parent,
                env=os.environ,
            )
            line = next((x for x in done.stdout.splitlines() if x.startswith(_MARK)), None)
            if line is None:
                raise HarnessError(f"text load ({door}) failed: {done.stderr[-2000:]}")
            result = json.loads(line[len(_MARK) :])
            calls, rows = batch_counters(http)
            result["rows_per_call"] = (rows - rows0) / max(1.0, calls - calls0)
            results[door] = result
    return results


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/v2/health/ready", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.text", description=__doc__)
    parser.add_argument("--dim", type=int, default=256, help="encoder width (default 256)")
    parser.add_argument("--layers", type=int, default=4, help="encoder blocks (default 4)")
    parser.add_argument("--texts", type=int, default=512, help="distinct texts (default 512)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--server-cpus", default="0", help="taskset CPUs: server, in-process")
    parser.add_argument("--client-cpus", default="1", help="taskset CPUs: load generator")
    parser.add_argument("--work-dir", type=Path, default=HERE / "_work" / "text")
    parser.add_argument("--json", action="store_true", help="also print BENCH_RESULT {json}")
    parser.add_argument(
        "--tuned", action="store_true", help=f"also serve with batching: {TUNED} (labelled tuned)"
    )
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    args.work_dir.mkdir(parents=True, exist_ok=True)
    name = f"encoder-{args.dim}x{args.layers}-b{BUCKET}"
    directory = build(args.work_dir / name, args.dim, args.layers)
    corpus = texts(args.texts)
    if args.in_process:  # the child run under taskset
        print(_MARK + json.dumps(in_process(directory, corpus, args.seconds, 32)), flush=True)
        return 0
    child = [sys.executable, "-m", "bench.text", "--in-process", "--dim", str(args.dim)]
    child += ["--layers", str(args.layers), "--texts", str(args.texts)]
    child += ["--seconds", str(args.seconds), "--work-dir", str(args.work_dir)]
    done = subprocess.run(
        pinned(child, args.server_cpus), capture_output=True, text=True, cwd=HERE.parent
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith(_MARK)), None)
    if line is None:
        raise HarnessError(f"in-process run failed: {done.stderr[-2000:]}")
    base = json.loads(line[len(_MARK) :])["texts_per_s"]
    runs = {"defaults": served(directory, corpus, args, args.work_dir)}
    if args.tuned:
        # The same model and server with batching set by hand: a copy whose modelport.yaml
        # says {TUNED}.
        tuned = args.work_dir / f"{name}-tuned"
        if tuned.exists():
            shutil.rmtree(tuned)
        shutil.copytree(directory, tuned, ignore=shutil.ignore_patterns("__pycache__"))
        (tuned / "modelport.yaml").write_text(f"name: {tuned.name}\nbatching: {TUNED}\n")
        runs["tuned"] = served(tuned, corpus, args, args.work_dir)
    print(
        f"text encoder {args.dim}x{args.layers}, {args.texts} texts of 4-60 words, "
        f"c={args.concurrency}, server CPUs {args.server_cpus}, client CPUs {args.client_cpus}"
    )
    print(f"{'':40} {'texts/s':>9} {'ratio':>6} {'rows/call':>9} {'p50 ms':>7} {'p99 ms':>7}")
    print(f"{'in-process, sorted batches of 32':40} {base:9.0f} {1:6.2f}")
    names = {"predict": "/predict", "v2": "V2 JSON", "grpc": "gRPC"}
    for run, doors in runs.items():
        for door, r in doors.items():
            rate = r["requests"] / r["seconds"]
            label = f"served {names[door]} ({run})"
            print(
                f"{label:40} {rate:9.0f} {rate / base:6.2f} {r['rows_per_call']:9.1f} "
                f"{r['p50_ms']:7.1f} {r['p99_ms']:7.1f}"
                + (f"  errors {r['errors']}" if r["errors"] else "")
            )
    if args.tuned:
        print(f"tuned: batching: {TUNED}")
    if args.json:
        print(_MARK + json.dumps({"in_process": base, "served": runs}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
