"""``python -m bench.hf_embeddings``: sentence embeddings, in-process against served.

One model: a sentence-transformers directory around a randomly initialised BERT the size of
all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads, mean pooling, Normalize), with a WordPiece
tokenizer trained here; texts of mixed lengths (4 to 160 words, cut at 128 tokens). Measured
on the same CPU and thread count, one run each:

- **encode**: in-process ``SentenceTransformer.encode(texts, batch_size=32)``, the reference
  every ratio divides;
- **served**: ``modelport serve`` on that directory, PyTorch and then ONNX (the directory
  after ``modelport export onnx``), loaded by 64 concurrent clients, each sending one text a
  request, over ``/v1/embeddings`` (the ``openai`` wire format), V2 REST (JSON, BYTES) and V2
  gRPC. The clients run in another process, pinned to other CPUs.

Every served answer is checked against ``encode`` before it is timed. Results go to
``bench/results/hf-embeddings-<date>.md`` and ``.json``. This is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# fmt: off
WORDS = (
    "the", "a", "model", "server", "request", "batch", "text", "token", "embedding", "vector",
    "search", "query", "document", "answer", "question", "paris", "berlin", "london", "river",
    "mountain", "city", "country", "people", "work", "time", "year", "day", "night", "light",
    "water", "fire", "earth", "wind", "music", "art", "science", "history", "language", "number",
    "system", "network", "data", "learning", "training", "inference", "latency", "throughput",
    "memory", "processor", "thread", "client", "protocol", "message", "queue", "worker",
    "cluster", "container", "image", "library", "function", "value",
)
# fmt: on
PROTOCOLS = ("v1", "v2", "grpc")
NAMES = {"v1": "/v1/embeddings", "v2": "V2 REST", "grpc": "V2 gRPC"}


# -- the model and the texts ------------------------------------------------------------------


def build(directory: Path, max_length: int = 128) -> Path:
    """The sentence-transformers directory (deterministic): a random BERT the size of
    all-MiniLM-L6-v2 under mean pooling and normalisation, its WordPiece tokenizer trained here."""
    import torch
    from tests.builders import hf_sentence_transformer, hf_tokenizer
    from transformers import BertConfig, BertModel

    fast = hf_tokenizer(max_length, corpus=texts(2000, seed=99), vocab_size=4000)
    config = BertConfig(
        vocab_size=len(fast),
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    base = directory / "bert"
    BertModel(config).eval().save_pretrained(base)  # type: ignore[no-untyped-call]
    fast.save_pretrained(base)
    target = hf_sentence_transformer(directory / "minilm", base, max_seq_length=max_length)
    (target / "modelport.yaml").write_text("name: minilm\n")
    return target


def texts(count: int, seed: int = 0) -> list[str]:
    """``count`` texts of 4 to 160 words, lengths spread evenly."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, 161, count)
    return [" ".join(rng.choice(WORDS, int(n))) for n in lengths]


# -- in-process ---------------------------------------------------------------------------------


def encode(model_dir: Path, data: list[str], threads: int) -> dict[str, Any]:
    """``SentenceTransformer.encode`` at batch 32: texts per second (after a warm-up)."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(str(model_dir), device="cpu")
    model.encode(data[:64], batch_size=32)
    started, cpu = time.perf_counter(), time.process_time()
    vectors = model.encode(data, batch_size=32)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    np.save(model_dir.parent / "reference.npy", vectors)
    return {"texts_per_s": len(data) / seconds, "texts_per_cpu_s": len(data) / cpu}


# -- the clients (a separate process) -----------------------------------------------------------


async def _drive(protocol: str, target: str, data: list[str], concurrency: int) -> list[Any]:
    """Send every text of ``data`` once, ``concurrency`` at a time; the embeddings back."""
    results: list[Any] = [None] * len(data)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(data)):
        queue.put_nowait(i)
    if protocol == "grpc":
        import grpc

        from modelport.protocol._grpc import grpc_predict_v2_pb2 as pb

        channels = [grpc.aio.insecure_channel(target) for _ in range(max(1, concurrency // 16))]
        calls = [c.unary_unary("/inference.GRPCInferenceService/ModelInfer") for c in channels]

        async def one(i: int, worker: int) -> Any:
            request = pb.ModelInferRequest(model_name="minilm")
            tensor = request.inputs.add(name="text", datatype="BYTES", shape=[1])
            tensor.contents.bytes_contents.append(data[i].encode())
            request.outputs.add(name="embedding")
            raw = await calls[worker % len(calls)](request.SerializeToString())
            reply = pb.ModelInferResponse.FromString(raw)
            if reply.raw_output_contents:
                return np.frombuffer(reply.raw_output_contents[0], np.float32)
            return np.asarray(reply.outputs[0].contents.fp32_contents, np.float32)

    else:
        import httpx

        client = httpx.AsyncClient(
            base_url=target,
            timeout=120,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )

        async def one(i: int, worker: int) -> Any:
            if protocol == "v1":  # base64, as the openai client asks by default
                ask = {"model": "minilm", "input": data[i], "encoding_format": "base64"}
                response = await client.post("/v1/embeddings", json=ask)
                response.raise_for_status()
                encoded = response.json()["data"][0]["embedding"]
                return np.frombuffer(base64.b64decode(encoded), np.float32)
            body = {
                "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [data[i]]}],
                "outputs": [{"name": "embedding"}],
            }
            response = await client.post("/v2/models/minilm/infer", json=body)
            response.raise_for_status()
            return response.json()["outputs"][0]["data"]

    async def worker(number: int) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            results[i] = await one(i, number)

    try:
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    finally:
        if protocol == "grpc":
            for channel in channels:
                await channel.close()
        else:
            await client.aclose()
    return results


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_main(protocol: str, target: str, data_file: Path, concurrency: int, server: int) -> None:
    data = json.loads(data_file.read_text())
    asyncio.run(_drive(protocol, target, data[:128], concurrency))  # warm-up, not timed
    started, cpu = time.perf_counter(), cpu_seconds(server)
    results = asyncio.run(_drive(protocol, target, data, concurrency))
    seconds, cpu = time.perf_counter() - started, cpu_seconds(server) - cpu
    np.save(data_file.with_suffix(f".{protocol}.npy"), np.asarray(results, np.float32))
    print(json.dumps({"texts_per_s": len(data) / seconds, "texts_per_cpu_s": len(data) / cpu}))


# -- the driver ---------------------------------------------------------------------------------


def _pinned(cmd: list[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *cmd] if cpus and shutil.which("taskset") else cmd


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _ready(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> None:
    import httpx

    began = time.perf_counter()
    while time.perf_counter() - began < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"server not ready after {timeout} s: {log.read_text()[-2000:]}")


class Served:
    """``modelport serve`` on a model directory, pinned to the server CPUs."""

    def __init__(self, model_dir: Path, work: Path, args: argparse.Namespace) -> None:
        self.http, self.grpc = _free_port(), _free_port()
        exe = str(Path(sys.executable).parent / "modelport")
        cmd = [exe, "serve", str(model_dir), "--host", "127.0.0.1"]
        cmd += ["--http-port", str(self.http), "--grpc-port", str(self.grpc)]
        cmd += ["--threads", str(args.threads), "--no-console", "--log-level", "info"]
        self.log = work / f"serve-{model_dir.parent.parent.name}-{model_dir.parent.name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                _pinned(cmd, args.server_cpus), stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )
        _ready(self.http, self.proc, self.log)
        self.batching = "modelport.yaml's"
        settings = model_dir / "modelport.yaml"
        if settings.is_file() and "batching" in settings.read_text():
            self.batching = f"{settings.read_text().split('batching: ', 1)[1].strip()}, set"
        for line in self.log.read_text(errors="replace").splitlines():
            if "batching chosen" in line and line.startswith("{"):
                entry = json.loads(line)
                self.batching = (
                    f"{entry.get('max_batch_size')} rows, {entry.get('max_queue_delay_ms')} ms "
                    "(chosen at start from the model's timings)"
                )

    def target(self, protocol: str) -> str:
        return f"127.0.0.1:{self.grpc}" if protocol == "grpc" else f"http://127.0.0.1:{self.http}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def drive(server: Served, protocol: str, data_file: Path, args: argparse.Namespace) -> Any:
    """One measured pass of the clients (another process, on the client CPUs)."""
    command = [sys.executable, "-m", "bench.hf_embeddings", "--client", protocol]
    command += ["--target", server.target(protocol), "--data", str(data_file)]
    command += ["--concurrency", str(args.concurrency), "--server-pid", str(server.proc.pid)]
    done = subprocess.run(
        _pinned(command, args.client_cpus), capture_output=True, text=True, cwd=ROOT, timeout=1800
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": done.stderr.strip()[-500:]}
    result: dict[str, Any] = json.loads(lines[-1])
    got = np.load(data_file.with_suffix(f".{protocol}.npy"))
    result["max_abs_diff"] = float(np.abs(got - np.load(data_file.parent / "reference.npy")).max())
    return result


def run_encode(model_dir: Path, data_file: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.hf_embeddings", "--encode", str(model_dir)]
    command += ["--data", str(data_file), "--threads", str(args.threads)]
    done = subprocess.run(
        _pinned(command, args.server_cpus), capture_output=True, text=True, cwd=ROOT
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def _best(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The best round by each measure (the rounds' figures kept)."""
    good = [s for s in samples if "error" not in s]
    if not good:
        return samples[-1]
    return {
        "texts_per_s": max(s["texts_per_s"] for s in good),
        "texts_per_cpu_s": max(s["texts_per_cpu_s"] for s in good),
        "rounds": [round(s["texts_per_s"], 1) for s in good],
        "cpu_rounds": [round(s["texts_per_cpu_s"], 1) for s in good],
        "max_abs_diff": max(s.get("max_abs_diff", 0.0) for s in good),
    }


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    ref = results["encode"]
    lines = [
        f"# Sentence embeddings: in-process encode vs modelport served ({date.today()})",
        "",
        "Model: sentence-transformers around a random BERT of all-MiniLM-L6-v2's size (6 "
        "layers, hidden 384, 12 heads; mean pooling, Normalize), texts of 4 to 160 words cut at "
        f"128 tokens, {args.texts} texts. {args.threads} intra-op thread(s) everywhere; server "
        f"and `encode` on CPU {args.server_cpus}, the {args.concurrency} concurrent clients "
        f"(one text a request) on CPU {args.client_cpus}. Each server's batching is in its "
        "row: `auto` is a directory without settings (modelport picks the batch size at "
        "start from a few timed calls against a 50 ms p99 budget), a number is "
        "`batching: {max_batch_size: N}` in its modelport.yaml. One run of "
        f"{args.rounds} rounds, each target once a round in turn, the best round kept.",
        "",
        "The machine is shared with other jobs, so wall-clock throughput drifts with their "
        "load. The CPU measure does not: texts per second of CPU time the server process "
        "used (every thread: HTTP, batching, tokenising, the model), or `encode`'s process; "
        "with one thread pinned to one CPU that is the throughput of an otherwise idle CPU. "
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, load average "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())} at the end.",
        "",
        "| target | texts/CPU-s | ratio | texts/s (wall) | ratio | rounds, texts/CPU-s | "
        "rounds, texts/s | max abs diff |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- | ---: |",
        f"| `SentenceTransformer.encode`, batch 32 (PyTorch) | {ref['texts_per_cpu_s']:,.1f} | "
        f"1.00 | {ref['texts_per_s']:,.1f} | 1.00 | {', '.join(map(str, ref['cpu_rounds']))} | "
        f"{', '.join(map(str, ref['rounds']))} | - |",
    ]
    servers = [k for k in results if k != "encode"]
    for server in servers:
        mode, backend = server.split()
        for protocol in PROTOCOLS:
            r = results[server][protocol]
            name = f"modelport {backend}, batching {mode}, {NAMES[protocol]}"
            if "error" in r:
                lines.append(f"| {name} | - | - | - | - | {r['error'][:120]} | - | - |")
                continue
            lines.append(
                f"| {name} | {r['texts_per_cpu_s']:,.1f} | "
                f"{r['texts_per_cpu_s'] / ref['texts_per_cpu_s']:.2f} | "
                f"{r['texts_per_s']:,.1f} | {r['texts_per_s'] / ref['texts_per_s']:.2f} | "
                f"{', '.join(map(str, r['cpu_rounds']))} | {', '.join(map(str, r['rounds']))} | "
                f"{r['max_abs_diff']:.2g} |"
            )
    lines += [""] + [
        f"- batching {server.split()[0]}, {server.split()[1]}: {results[server]['batching']}"
        for server in servers
    ]
    lines += [
        "",
        "Goal: served at least 0.9 of `encode`, ONNX at least 1.3x. `encode` sorts all its "
        "texts by length before it batches them; the server sees them in arrival order, joins "
        "the requests that arrive together, and runs each batch sorted by length in groups of "
        "at least 8 that each pad to their own longest text. Every served answer is compared "
        "with `encode`'s (max abs diff). Method: `bench/hf_embeddings.py`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hf_embeddings", description=__doc__)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument(
        "--batching",
        default="auto,64",
        help="comma list: auto (no batching settings: chosen at start from the model's "
        "timings) and/or N (modelport.yaml sets batching: {max_batch_size: N})",
    )
    parser.add_argument("--server-cpus", default="0")
    parser.add_argument("--client-cpus", default="1")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--client", choices=PROTOCOLS, help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--encode", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        client_main(args.client, args.target, args.data, args.concurrency, args.server_pid)
        return
    if args.encode:
        data = json.loads(args.data.read_text())
        print(json.dumps(encode(args.encode, data, args.threads)))
        return
    with tempfile.TemporaryDirectory(prefix="modelport-hf-bench-") as tmp:
        work = Path(tmp)
        model_dir = build(work)
        onnx_dir = work / "onnx" / "minilm"
        shutil.copytree(model_dir, onnx_dir)
        from modelport.export import to_onnx

        print(to_onnx(onnx_dir), file=sys.stderr)
        data = texts(args.texts, seed=1)
        data_file = work / "texts.json"
        data_file.write_text(json.dumps(data))
        samples: dict[str, list[dict[str, Any]]] = {"encode": []}
        servers: dict[str, Served] = {}
        try:
            for mode in args.batching.split(","):
                for backend, source in (("pytorch", model_dir), ("onnx", onnx_dir)):
                    copy = work / f"batching-{mode}" / backend / "minilm"
                    shutil.copytree(source, copy)
                    if mode != "auto":
                        (copy / "modelport.yaml").write_text(
                            f"name: minilm\nbatching: {{max_batch_size: {int(mode)}}}\n"
                        )
                    servers[f"{mode} {backend}"] = Served(copy, work, args)
            for round_ in range(args.rounds):
                samples["encode"].append(run_encode(model_dir, data_file, args))
                print(f"round {round_}: encode {samples['encode'][-1]}", file=sys.stderr)
                for name, server in servers.items():
                    for protocol in PROTOCOLS:
                        key = f"{name} {protocol}"
                        samples.setdefault(key, []).append(drive(server, protocol, data_file, args))
                        print(f"round {round_}: {key} {samples[key][-1]}", file=sys.stderr)
        finally:
            for server in servers.values():
                server.stop()
    results: dict[str, Any] = {"encode": _best(samples["encode"])}
    for name, server in servers.items():
        results[name] = {p: _best(samples[f"{name} {p}"]) for p in PROTOCOLS}
        results[name]["batching"] = server.batching
    args.results.mkdir(parents=True, exist_ok=True)
    stem = args.results / f"hf-embeddings-{date.today().isoformat()}"
    stem.with_suffix(".md").write_text(report(results, args))
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2))
    print(stem.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
