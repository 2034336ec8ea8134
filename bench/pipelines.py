"""``python -m bench.pipelines``: rows/s of each pipeline engine on one Parquet file.

One model (MLP 16 -> 64 -> 64 -> 8, ONNX, one onnxruntime thread) and one input file
(``--rows`` rows of 16 FP32 feature columns). Measured, best of ``--repeat`` runs:

- **in-process**: ``predict_batch`` over the whole array in slices, at each batch size of
  ``--sweep``; the best is the reference every ratio divides.
- **modelport predict**: the CLI on the file (a subprocess; its wall time includes start-up).
- **each engine** in its own nox virtualenv (``nox -s ENGINE --install-only`` first): read the
  file, predict, and write (or collect) the predictions, on 2 local workers. Engine start-up
  (cluster, session) is reported apart and not counted.

The overhead ratio is in-process rows/s over the target's rows/s (1.0 = no overhead). Results
go to ``bench/results/pipelines-<date>.md`` and ``.json``. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ENGINES = ("dask", "ray", "beam", "spark", "flink")
SIZES = (16, 64, 64, 8)
FEATURES = [f"f{i}" for i in range(SIZES[0])]


def build(directory: Path, rows: int) -> tuple[Path, Path]:
    """The model directory and the input Parquet file, deterministic."""
    import pandas as pd
    from tests.builders import onnx_mlp

    model = directory / "model"
    model.mkdir(parents=True, exist_ok=True)
    onnx_mlp(model / "model.onnx", SIZES, seed=3)
    (model / "modelport.yaml").write_text(
        "runtime: {intra_op_threads: 1, inter_op_threads: 1}\nbatching: {max_batch_size: 1024}\n"
    )
    x = np.random.default_rng(3).standard_normal((rows, SIZES[0])).astype(np.float32)
    frame = pd.DataFrame(x, columns=FEATURES)
    data = directory / "rows.parquet"
    frame.to_parquet(data, index=False)
    return model, data


def _best(repeat: int, run: Callable[[], int]) -> tuple[int, float]:
    best = float("inf")
    rows = 0
    for _ in range(repeat):
        started = time.perf_counter()
        rows = run()
        best = min(best, time.perf_counter() - started)
    return rows, best


# -- the measurements, each run in the engine's own interpreter ------------------------------


def in_process(model: Path, data: Path, sweep: list[int], repeat: int) -> dict[str, Any]:
    import pandas as pd

    import modelport
    from modelport.integrations._common import predict_in_chunks

    loaded = modelport.load(model)
    x = pd.read_parquet(data, columns=FEATURES).to_numpy(np.float32)
    points: dict[int, float] = {}
    for size in sweep:

        def run(size: int = size) -> int:
            return len(predict_in_chunks(loaded, {"x": x}, size)["y"])

        rows, seconds = _best(repeat, run)
        points[size] = rows / seconds
    best = max(points, key=lambda k: points[k])
    return {"rows": len(x), "rows_per_s": points[best], "batch_size": best, "sweep": points}


def cli(model: Path, data: Path, out: Path, batch: int, repeat: int) -> dict[str, Any]:
    command = [str(Path(sys.executable).parent / "modelport"), "predict", str(model), str(data)]
    command += ["-o", str(out / "cli.parquet"), "--batch-size", str(batch)]

    def run() -> int:
        subprocess.run(command, check=True, capture_output=True)
        return 0

    _, seconds = _best(repeat, run)
    return {"seconds": seconds}


def dask(model: Path, data: Path, out: Path, batch: int, repeat: int) -> dict[str, Any]:
    import dask.dataframe as dd
    from distributed import Client, LocalCluster

    from modelport.integrations.dask import predict_frame

    started = time.perf_counter()
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster),
    ):
        startup = time.perf_counter() - started

        def run() -> int:
            frame = dd.read_parquet(data).repartition(npartitions=4)
            predicted = predict_frame(frame, model, columns=FEATURES, keep_columns=False)
            predicted.to_parquet(out / "dask", overwrite=True)
            return len(dd.read_parquet(out / "dask", dtype_backend="pyarrow"))

        rows, seconds = _best(repeat, run)
    return {"rows": rows, "seconds": seconds, "startup_s": startup}


def ray(model: Path, data: Path, out: Path, batch: int, repeat: int) -> dict[str, Any]:
    import ray as ray_
    import ray.data

    from modelport.integrations.ray import predict_dataset

    started = time.perf_counter()
    ray_.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray_.data.DataContext.get_current().enable_progress_bars = False
    startup = time.perf_counter() - started
    try:

        def run() -> int:
            ds = ray_.data.read_parquet(str(data), override_num_blocks=4)
            # Two half-CPU actors leave a CPU free for the read tasks (else they wait forever).
            predicted = predict_dataset(
                ds, model, columns=FEATURES, keep_columns=False, concurrency=2, num_cpus=0.5
            )
            target = str(out / f"ray-{time.monotonic_ns()}")
            predicted.write_parquet(target)
            return int(ray_.data.read_parquet(target).count())

        rows, seconds = _best(repeat, run)
    finally:
        ray_.shutdown()
    return {"rows": rows, "seconds": seconds, "startup_s": startup}


def spark(model: Path, data: Path, out: Path, batch: int, repeat: int) -> dict[str, Any]:
    from pyspark.sql import SparkSession

    from modelport.integrations.spark import with_predictions

    os.environ["PYSPARK_PYTHON"] = sys.executable
    started = time.perf_counter()
    session = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    startup = time.perf_counter() - started
    try:

        def run() -> int:
            df = session.read.parquet(str(data))
            predicted = with_predictions(df, model, columns=FEATURES).select("y")
            predicted.write.mode("overwrite").parquet(str(out / "spark"))
            return int(session.read.parquet(str(out / "spark")).count())

        rows, seconds = _best(repeat, run)
    finally:
        session.stop()
    return {"rows": rows, "seconds": seconds, "startup_s": startup}


def beam(model: Path, data: Path, out: Path, batch: int, repeat: int) -> dict[str, Any]:
    import apache_beam as beam_
    from apache_beam.ml.inference.base import RunInference
    from apache_beam.options.pipeline_options import PipelineOptions

    from modelport.integrations.beam import ModelportModelHandler

    handler = ModelportModelHandler(model, output="y")
    options = PipelineOptions(
        runner="DirectRunner", direct_num_workers=2, direct_running_mode="multi_processing"
    )

    def run() -> int:
        target = out / f"beam-{time.monotonic_ns()}"
        with beam_.Pipeline(options=options) as p:
            _ = (
                p
                | beam_.io.ReadFromParquet(str(data))
                | beam_.Map(lambda r: np.array([r[f] for f in FEATURES], np.float32))
                | RunInference(handler)
                | beam_.Map(lambda result: str(result.inference.tolist()))
                | beam_.io.WriteToText(str(target / "part"))
            )
        return sum(1 for f in target.iterdir() for _ in f.open())

    rows, seconds = _best(repeat, run)
    return {"rows": rows, "seconds": seconds, "startup_s": 0.0}


def flink(model: Path, data: Path, out: Path, batch: int, repeat: int) -> dict[str, Any]:
    import pandas as pd
    from pyflink.table import EnvironmentSettings, TableEnvironment
    from pyflink.table.expressions import col

    from modelport.integrations.flink import predict_table

    # PyFlink ships no Parquet format: the same rows go through a CSV copy (not timed).
    csv = out / "rows.csv"
    pd.read_parquet(data).to_csv(csv, header=False, index=False)
    started = time.perf_counter()
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    t_env.get_config().set("parallelism.default", "2")
    fields = ", ".join(f"{f} FLOAT" for f in FEATURES)
    t_env.execute_sql(
        f"CREATE TABLE src ({fields}) WITH "
        f"('connector' = 'filesystem', 'path' = '{csv}', 'format' = 'csv')"
    )
    t_env.execute_sql("CREATE TABLE sink (y ARRAY<FLOAT>) WITH ('connector' = 'blackhole')")
    startup = time.perf_counter() - started

    def run() -> int:
        predicted = predict_table(t_env.from_path("src"), model, columns=FEATURES)
        predicted.select(col("y")).execute_insert("sink").wait()
        return len(pd.read_parquet(data, columns=["f0"]))

    rows, seconds = _best(repeat, run)
    return {"rows": rows, "seconds": seconds, "startup_s": startup}


MEASURE: dict[str, Callable[[Path, Path, Path, int, int], dict[str, Any]]] = {
    "dask": dask,
    "ray": ray,
    "beam": beam,
    "spark": spark,
    "flink": flink,
}


# -- the driver ------------------------------------------------------------------------------


def run_engine(engine: str, model: Path, data: Path, out: Path, args: Any) -> dict[str, Any]:
    python = ROOT / ".nox" / engine / "bin" / "python"
    if not python.exists():
        return {"error": f"not installed: run `nox -s {engine} --install-only`"}
    command = [str(python), "-m", "bench.pipelines", "--engine", engine, "--model", str(model)]
    command += ["--data", str(data), "--out", str(out), "--batch-size", str(args.batch_size)]
    command += ["--repeat", str(args.repeat)]
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=args.timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.timeout} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def report(results: dict[str, Any], args: Any) -> str:
    ref = results["in-process"]
    lines = [
        f"# Pipeline engines vs in-process predict ({date.today().isoformat()})",
        "",
        f"Model: MLP {' -> '.join(map(str, SIZES))} (ONNX, 1 onnxruntime thread). Input: "
        f"{ref['rows']:,} rows x {SIZES[0]} FP32 columns in one Parquet file. Engines: 2 local "
        f"workers, batch size {args.batch_size}. Best of {args.repeat} runs. Machine: "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, load average "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())} at the end (the machine is shared).",
        "",
        "In-process `predict_batch` by batch size (rows/s): "
        + ", ".join(f"{k}: {v:,.0f}" for k, v in ref["sweep"].items()),
        "",
        "| target | rows/s | overhead ratio: in-process / target | `modelport predict` / "
        "target | start-up s (not counted) |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| in-process, batch {ref['batch_size']} | {ref['rows_per_s']:,.0f} | 1.0 | - | - |",
    ]
    cli_rate = ref["rows"] / results["modelport predict"]["seconds"]
    for name, r in results.items():
        if name == "in-process":
            continue
        if "error" in r:
            lines.append(f"| {name} | - | - | - | {r['error']} |")
            continue
        rate = ref["rows"] / r["seconds"]
        startup = f"{r['startup_s']:.1f}" if "startup_s" in r else "included"
        ratios = f"{ref['rows_per_s'] / rate:,.1f} | {cli_rate / rate:,.2f}"
        lines.append(f"| {name} | {rate:,.0f} | {ratios} | {startup} |")
    lines += [
        "",
        "Each engine reads the file, predicts, and writes its predictions: Dask, Ray and "
        "Spark to Parquet, Beam to text, Flink to a blackhole sink (from a CSV copy of the "
        "rows: PyFlink ships no Parquet format). `modelport predict` runs as a subprocess, "
        "start-up included. Method: `bench/pipelines.py`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pipelines", description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--sweep", default="64,256,1024,4096")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.engine:  # a child, inside the engine's virtualenv
        measured = MEASURE[args.engine](
            args.model, args.data, args.out, args.batch_size, args.repeat
        )
        print(json.dumps(measured))
        return
    with tempfile.TemporaryDirectory(prefix="modelport-pipelines-") as tmp:
        work = Path(tmp)
        model, data = build(work, args.rows)
        sweep = [int(v) for v in args.sweep.split(",")]
        results: dict[str, Any] = {"in-process": in_process(model, data, sweep, args.repeat)}
        print(f"in-process: {results['in-process']['rows_per_s']:,.0f} rows/s", file=sys.stderr)
        results["modelport predict"] = cli(model, data, work, args.batch_size, args.repeat)
        for engine in [e for e in args.engines.split(",") if e]:
            results[engine] = run_engine(engine, model, data, work, args)
            print(f"{engine}: {results[engine]}", file=sys.stderr)
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / f"pipelines-{date.today().isoformat()}"
    stem.with_suffix(".md").write_text(report(results, args))
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str))
    print(stem.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
