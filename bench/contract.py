"""What the model contract costs over calling the framework directly (issue 2, item 10).

``python -m bench.contract`` times, for ONNX (onnxruntime) and PyTorch (TorchScript), each on
W1's MLP at batch 1 and 64:

- **direct**: the framework call a user would write, numpy in and numpy out
  (``session.run(names, {"x": x})``; ``module(torch.from_numpy(x)).numpy()`` under
  ``torch.inference_mode()``), on the very session/module modelport loaded;
- ``Model.predict(x)`` with one bare array, and ``Model.predict_batch({"x": x})``.

Each variant's output is first checked equal to the direct call's. Each time is the best of
several rounds of many calls (the least disturbed by other processes), the rounds of the
variants interleaved. Prints a table, or ``BENCH_RESULT {json}`` with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .workloads import W1, Workload, build

__all__ = ["measure"]

Call = Callable[[], Any]


def _per_call(fns: dict[str, Call], rounds: int, round_seconds: float) -> dict[str, float]:
    """Best seconds per call of each function over ``rounds`` interleaved rounds."""
    counts = {}
    for name, fn in fns.items():
        n, began = 0, time.perf_counter()
        while time.perf_counter() - began < round_seconds / 4:
            fn()
            n += 1
        counts[name] = max(10, 4 * n)
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            n = counts[name]
            began = time.perf_counter_ns()
            for _ in range(n):
                fn()
            best[name] = min(best[name], (time.perf_counter_ns() - began) / n / 1e9)
    return best


def _check_same(name: str, got: Any, want: np.ndarray) -> None:
    if isinstance(got, dict):
        got = next(iter(got.values()))
    if not np.array_equal(np.asarray(got), want):
        raise AssertionError(f"{name} returned a different output from the direct call")


def _cases(
    framework: str, workload: Workload, root: Path
) -> tuple[Any, Callable[[np.ndarray], Any]]:
    """``(modelport model, direct call factory)`` for one framework."""
    import modelport

    if framework == "onnx":
        model: Any = modelport.load(build(workload, root).directory)
        names = [o.name for o in model.session.get_outputs()]
        return model, lambda x: model.session.run(names, {"x": x})[0]
    import torch

    torch.manual_seed(workload.seed)
    layers: list[torch.nn.Module] = []
    for i, o in zip(workload.sizes, workload.sizes[1:]):
        layers += [torch.nn.Linear(i, o), torch.nn.ReLU()]
    module = torch.nn.Sequential(*layers[:-1]).eval()
    path = root / f"{workload.key}.pt"
    jit: Any = torch.jit
    jit.save(jit.trace(module, torch.zeros(1, workload.features)), str(path))
    model = modelport.load(path, intra_op_threads=1)
    scripted = model.module

    def direct(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out: np.ndarray = scripted(torch.from_numpy(x)).numpy()
            return out

    return model, direct


def _variants(model: Any, direct: Callable[[np.ndarray], Any], x: np.ndarray) -> dict[str, Call]:
    key = model.single_input_name()
    return {
        "direct": lambda: direct(x),
        "predict": lambda: model.predict(x),
        "predict_batch": lambda: model.predict_batch({key: x}),
    }


def measure(
    frameworks: tuple[str, ...] = ("onnx", "torch"),
    batches: tuple[int, ...] = (1, 64),
    rounds: int = 15,
    round_seconds: float = 0.1,
    workload: Workload = W1,
) -> list[dict[str, Any]]:
    """Per-call µs of the direct call and the two contract calls, and the overheads."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for framework in frameworks:
            model, direct = _cases(framework, workload, Path(tmp))
            for batch in batches:
                x = np.repeat(workload.row(), batch, axis=0)
                want = direct(x)
                fns = _variants(model, direct, x)
                for name in ("predict", "predict_batch"):
                    _check_same(name, fns[name](), want)
                best = _per_call(fns, rounds, round_seconds)
                us = {k: v * 1e6 for k, v in best.items()}
                rows.append(
                    {
                        "framework": framework,
                        "batch": batch,
                        "direct_us": us["direct"],
                        "predict_us": us["predict"],
                        "predict_batch_us": us["predict_batch"],
                        "predict_overhead_us": us["predict"] - us["direct"],
                        "predict_batch_overhead_us": us["predict_batch"] - us["direct"],
                    }
                )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| framework | batch | direct µs | predict µs (+overhead) | predict_batch µs (+overhead) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['framework']} | {r['batch']} | {r['direct_us']:.2f} "
            f"| {r['predict_us']:.2f} ({r['predict_overhead_us']:+.2f}) "
            f"| {r['predict_batch_us']:.2f} ({r['predict_batch_overhead_us']:+.2f}) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.contract", description=__doc__)
    parser.add_argument("--frameworks", default="onnx,torch")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--round-seconds", type=float, default=0.1)
    parser.add_argument("--json", action="store_true", help="print BENCH_RESULT {json}")
    args = parser.parse_args()
    rows = measure(
        tuple(args.frameworks.split(",")), rounds=args.rounds, round_seconds=args.round_seconds
    )
    print("BENCH_RESULT " + json.dumps(rows) if args.json else table(rows), flush=True)


if __name__ == "__main__":
    main()
