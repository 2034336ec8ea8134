"""Served against in-process on one device (issue 20): ``python -m bench.gpu --device cuda``.

Two models, each first run in-process at batch 64 on the device (``modelport.load(DIR,
device=...)``, ``predict_batch`` in a loop, in a child process), then served by ``modelport
serve DIR --device DEVICE`` with **no other flags** (on a GPU the defaults are two instances
and batching timed on sizes up to 512) under ``--concurrency`` clients, one row per request:

- **W2-heavy**: the MLP of ``python -m bench`` (1,024 float inputs), V2 JSON (``bench.http_load``)
  and gRPC (``bench.grpc_load``);
- **text encoder**: the ONNX transformer encoder of ``bench.text`` (tokenised in
  ``preprocess_batch``, mean-pooled in ``postprocess_batch``), one text of 4-60 words per
  request, V2 JSON and gRPC (``bench.text_load``).

The goal is served >= 0.9 of in-process. The device's name (``nvidia-smi``, else the CPU's
model) is printed with the figures. ``--device cpu`` runs the same on the CPU: a rehearsal of
the script where no GPU is, not a GPU figure. ONNX on CUDA needs ``onnxruntime-gpu``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from .load import _MARK, _run, grpc_sample
from .servers import HOST, Server, free_port
from .text import _ready, rows_per_s

HERE = Path(__file__).resolve().parent
GOAL = 0.9


def device_name(device: str) -> str:
    """The GPU's name from ``nvidia-smi``, else the CPU's model."""
    if device != "cpu" and shutil.which("nvidia-smi"):
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip().splitlines()[0]
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def build(work: Path, device: str) -> dict[str, dict[str, Any]]:
    """The two model directories (``device:`` in each ``modelport.yaml``) and their inputs."""
    from . import text
    from .workloads import W2
    from .workloads import build as build_workload

    w2 = build_workload(W2, work / "w2")
    heavy = work / f"heavy-{device.replace(':', '-')}"
    if heavy.exists():
        shutil.rmtree(heavy)
    shutil.copytree(w2.directory, heavy)
    (heavy / "modelport.yaml").write_text(f"name: w2\ndevice: {device}\n")
    encoder = text.build(work / "encoder-src", 256, 4)
    served = work / f"encoder-{device.replace(':', '-')}"
    if served.exists():
        shutil.rmtree(served)
    shutil.copytree(encoder, served, ignore=shutil.ignore_patterns("__pycache__", "*.yaml"))
    (served / "modelport.yaml").write_text(f"name: encoder\ndevice: {device}\n")
    corpus = text.texts(512)
    (work / "texts.json").write_text(json.dumps(corpus))
    return {
        "w2": {"dir": heavy, "json": w2.json_request, "grpc": w2.grpc_request},
        "encoder": {"dir": served, "texts": work / "texts.json"},
    }


def in_process(directory: Path, device: str, kind: str, seconds: float, batch: int) -> float:
    """Rows per second of ``predict_batch`` at ``batch`` rows on ``device`` (this process)."""
    import numpy as np

    import modelport

    model = modelport.load(directory, trust=True, device=device)
    model.ensure_loaded()
    if kind == "encoder":
        from . import text

        ordered = sorted(text.texts(512), key=lambda t: len(t.split()))
        batches = [
            {"text": np.array([t.encode() for t in ordered[i : i + batch]], dtype=object)}
            for i in range(0, len(ordered), batch)
        ]
    else:
        batches = [model.example_inputs(batch)]
    return rows_per_s(model, batches, seconds)


def _child(args: argparse.Namespace, kind: str, directory: Path) -> float:
    cmd = [sys.executable, "-m", "bench.gpu", "--in-process", kind, str(directory)]
    cmd += ["--device", args.device, "--seconds", str(args.seconds)]
    return float(_load(cmd, 30 * args.seconds + 600)["rows_per_s"])


def _load(cmd: list[str], limit: float) -> dict[str, Any]:
    """What a ``python -m bench...`` child prints after ``BENCH_RESULT``."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.getenv("PYTHONPATH")])),
    }
    return _run(cmd, env=env, limit=limit)


def served(
    kind: str, model: dict[str, Any], args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    """Rows per second (and p50/p99) over V2 JSON and gRPC, the server's defaults."""
    http, grpc = free_port(), free_port()
    exe = Path(sys.executable).with_name("modelport")
    cmd = [str(exe), "serve", str(model["dir"]), "--host", HOST, "--trust"]
    cmd += ["--http-port", str(http), "--grpc-port", str(grpc), "--device", args.device]
    out: dict[str, Any] = {}
    log = work / f"serve-{kind}.log"
    with Server("modelport", cmd, cpus=None, env={}, log=log) as server:
        server.wait_until(lambda: _ready(http), timeout=300)
        c, s, w = args.concurrency, args.seconds, args.warmup
        if kind == "w2":
            name = "w2"
            load = [sys.executable, "-m", "bench.http_load", f"{HOST}:{http}"]
            load += [f"/v2/models/{name}/infer", str(model["json"])]
            _load([*load, "--connections", str(c), "--seconds", str(w)], w + 120)
            r = _load([*load, "--connections", str(c), "--seconds", str(s)], s + 120)
            ok = r["answers"].get("200", 0)
            lat = r["latency"].get("200", {})
            out["v2"] = {
                "rows_per_s": ok / r["seconds"],
                "p50_ms": lat.get("p50_ms"),
                "p99_ms": lat.get("p99_ms"),
                "errors": sum(v for k, v in r["answers"].items() if k != "200")
                + sum(r["errors"].values()),
            }
            g = grpc_sample(
                f"{HOST}:{grpc}", model["grpc"], connections=c, seconds=s, cpus=None, warmup=w
            )
            out["grpc"] = {
                "rows_per_s": g.rps,
                "p50_ms": g.p50_ms,
                "p99_ms": g.p99_ms,
                "errors": g.errors,
            }
        else:
            for door in ("v2", "grpc"):
                target = f"{HOST}:{grpc}" if door == "grpc" else f"{HOST}:{http}"
                load = [sys.executable, "-m", "bench.text_load", door, target, str(model["texts"])]
                load += ["--concurrency", str(c), "--seconds", str(s), "--warmup", str(w)]
                load += ["--model", "encoder"]
                r = _load(load, s + w + 120)
                out[door] = {
                    "rows_per_s": r["requests"] / r["seconds"],
                    "p50_ms": r["p50_ms"],
                    "p99_ms": r["p99_ms"],
                    "errors": r["errors"],
                }
        out["server_log"] = [
            json.loads(line)
            for line in log.read_text().splitlines()
            if line.startswith("{") and ("instances" in line or "batching chosen" in line)
        ]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (a rehearsal)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--models", default="w2,encoder", help="comma list of: w2, encoder")
    parser.add_argument("--work-dir", type=Path, default=HERE / "_work" / "gpu")
    parser.add_argument("--json", action="store_true", help="also print BENCH_RESULT {json}")
    parser.add_argument("--in-process", nargs=2, metavar=("KIND", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.in_process:
        kind, directory = args.in_process
        rate = in_process(Path(directory), args.device, kind, args.seconds, 64)
        print(_MARK + json.dumps({"rows_per_s": rate}), flush=True)
        return 0
    args.work_dir.mkdir(parents=True, exist_ok=True)
    models = build(args.work_dir, args.device)
    wanted = [k for k in args.models.split(",") if k]
    results: dict[str, Any] = {"device": args.device, "name": device_name(args.device)}
    print(f"device {args.device}: {results['name']}; c={args.concurrency}, {args.seconds:g} s")
    print(f"{'':34} {'rows/s':>9} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7}  goal >= {GOAL}")
    for kind in wanted:
        base = _child(args, kind, models[kind]["dir"])
        doors = served(kind, models[kind], args, args.work_dir)
        results[kind] = {"in_process": base, "served": doors}
        print(f"{kind + ', in-process batch 64':34} {base:9.0f} {1:6.2f}")
        for door in ("v2", "grpc"):
            r = doors[door]
            ratio = r["rows_per_s"] / base if base else 0.0
            r["ratio"] = ratio
            label = f"{kind}, served {'V2 JSON' if door == 'v2' else 'gRPC'} (defaults)"
            print(
                f"{label:34} {r['rows_per_s']:9.0f} {ratio:6.2f} {r['p50_ms'] or 0:7.1f} "
                f"{r['p99_ms'] or 0:7.1f}  {'met' if ratio >= GOAL else 'NOT met'}"
                + (f"  errors {r['errors']}" if r["errors"] else "")
            )
        for entry in doors["server_log"]:
            chosen = {k: v for k, v in entry.items() if k in ("instances", "max_batch_size")}
            print(f"  server: {entry['message']} {chosen}")
    if args.json:
        print(_MARK + json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
