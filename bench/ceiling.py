"""C1, the compute ceiling: onnxruntime called in-process, no server, no copies.

``python -m bench.ceiling MODEL_DIR --batches 1,8,32,64,128 --seconds 2`` (run by the harness
pinned to the server CPUs) prints ``BENCH_RESULT {json}``: for each batch size the median and
mean latency per call and the rows/s (batch size / median latency). The session gets the
thread settings of the directory's ``modelport.yaml``, exactly as the server's ONNX runtime
applies them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np


def session(directory: Path) -> Any:
    """An onnxruntime session configured as modelport's ONNX runtime configures it."""
    import onnxruntime as ort
    import yaml

    runtime = yaml.safe_load((directory / "modelport.yaml").read_text()).get("runtime", {})
    options = ort.SessionOptions()
    if "intra_op_threads" in runtime:
        options.intra_op_num_threads = int(runtime["intra_op_threads"])
    else:  # what the server picks by default: the CPUs this (pinned) process may use
        from modelport.cpus import cpu_budget

        options.intra_op_num_threads = cpu_budget().threads(1)
    options.inter_op_num_threads = int(runtime.get("inter_op_threads", 0))
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(directory / "model.onnx"), options, ["CPUExecutionProvider"])


def measure(
    directory: Path, row: np.ndarray, expected: np.ndarray, batches: list[int], seconds: float
) -> list[dict[str, float]]:
    """Time ``session.run`` on ``row`` repeated to each batch size for about ``seconds``.

    Each batch's output is first checked against ``expected`` (the output for one row).
    """
    sess = session(directory)
    name = sess.get_inputs()[0].name
    results = []
    for batch in batches:
        x = np.ascontiguousarray(np.repeat(row, batch, axis=0))
        (y,) = sess.run(None, {name: x})
        if not np.allclose(y, np.repeat(expected, batch, axis=0), rtol=1e-4, atol=1e-4):
            raise ValueError(f"{directory}: batch {batch} does not give the expected output")
        for _ in range(2):
            sess.run(None, {name: x})
        times: list[int] = []
        stop = time.perf_counter_ns() + int(seconds * 1e9)
        while len(times) < 5 or time.perf_counter_ns() < stop:
            began = time.perf_counter_ns()
            sess.run(None, {name: x})
            times.append(time.perf_counter_ns() - began)
        median_s = statistics.median(times) / 1e9
        results.append(
            {
                "batch": batch,
                "calls": len(times),
                "p50_ms": median_s * 1e3,
                "mean_ms": sum(times) / len(times) / 1e6,
                # From the median call: the mean is at the mercy of other processes' bursts.
                "rows_per_s": batch / median_s,
            }
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="a workload directory built by the harness")
    parser.add_argument(
        "--data", type=Path, required=True, help=".npz file with one input row and its output"
    )
    parser.add_argument("--batches", default="1,8,32,64,128")
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    data = np.load(args.data)
    result = measure(args.directory, data["row"], data["expected"], batches, args.seconds)
    print("BENCH_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
