"""Load for ``bench.text``: ``python -m bench.text_load DOOR HOST:PORT TEXTS.json``.

``--concurrency`` workers each send one text per request, walking the texts in turn, for
``--seconds`` after ``--warmup``: ``predict`` (``/v2/models/NAME/predict`` with
``{"text": ...}``) and ``v2`` (V2 JSON ``/infer``) over keep-alive HTTP/1.1 connections written
with asyncio streams (requests pre-encoded, responses only framed, so the client's CPU goes to
the transport); ``grpc`` over grpc.aio with pre-serialized ``ModelInferRequest`` bytes.
Every answer's status is checked. Prints ``BENCH_RESULT {json}`` like ``bench.grpc_load``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

MODEL = "encoder"
METHOD = "/inference.GRPCInferenceService/ModelInfer"
STREAMS_PER_CHANNEL = 16


def http_requests(door: str, host: str, model: str, corpus: list[str]) -> list[bytes]:
    out = []
    for text in corpus:
        body: dict[str, Any]
        if door == "predict":
            path, body = f"/v2/models/{model}/predict", {"text": text}
        else:
            tensor = {"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}
            path, body = f"/v2/models/{model}/infer", {"inputs": [tensor]}
        data = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        )
        out.append(head.encode() + data)
    return out


def grpc_requests(model: str, corpus: list[str]) -> list[bytes]:
    from modelport.protocol._grpc import grpc_predict_v2_pb2 as pb

    out = []
    for text in corpus:
        request = pb.ModelInferRequest(model_name=model)
        tensor = request.inputs.add(name="text", datatype="BYTES", shape=[1])
        tensor.contents.bytes_contents.append(text.encode())
        out.append(request.SerializeToString())
    return out


class Tally:
    def __init__(self) -> None:
        self.measuring = False
        self.latencies: list[int] = []
        self.errors = 0

    def done(self, began: int, ok: bool) -> None:
        if self.measuring:
            if ok:
                self.latencies.append(time.perf_counter_ns() - began)
            else:
                self.errors += 1


async def http_worker(
    host: str, port: int, requests: list[bytes], start: int, tally: Tally, stop: asyncio.Event
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    i = start
    while not stop.is_set():
        began = time.perf_counter_ns()
        writer.write(requests[i % len(requests)])
        i += 1
        status = await reader.readline()
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await reader.readexactly(length)
        tally.done(began, status.split(b" ", 2)[1] == b"200")
    writer.close()


async def grpc_worker(
    call: object, requests: list[bytes], start: int, tally: Tally, stop: asyncio.Event
) -> None:
    import grpc

    i = start
    while not stop.is_set():
        began = time.perf_counter_ns()
        try:
            await call(requests[i % len(requests)])  # type: ignore[operator]
            ok = True
        except grpc.aio.AioRpcError:
            ok = False
        i += 1
        tally.done(began, ok)


async def run(args: argparse.Namespace) -> dict[str, float | int]:
    corpus = json.loads(Path(args.texts).read_text())
    host, port = args.target.rsplit(":", 1)
    tally, stop = Tally(), asyncio.Event()
    step = max(1, len(corpus) // args.concurrency)
    if args.door == "grpc":
        import grpc

        requests = grpc_requests(args.model, corpus)
        channels = [
            grpc.aio.insecure_channel(args.target, options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(max(1, -(-args.concurrency // STREAMS_PER_CHANNEL)))
        ]
        calls = [ch.unary_unary(METHOD) for ch in channels]
        tasks = [
            asyncio.create_task(grpc_worker(calls[k % len(calls)], requests, k * step, tally, stop))
            for k in range(args.concurrency)
        ]
    else:
        requests = http_requests(args.door, args.target, args.model, corpus)
        tasks = [
            asyncio.create_task(http_worker(host, int(port), requests, k * step, tally, stop))
            for k in range(args.concurrency)
        ]
    await asyncio.sleep(args.warmup)
    tally.measuring = True
    began = time.perf_counter()
    await asyncio.sleep(args.seconds)
    tally.measuring = False
    seconds = time.perf_counter() - began
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    lat = np.array(tally.latencies or [0]) / 1e6
    return {
        "requests": len(tally.latencies),
        "seconds": seconds,
        "errors": tally.errors,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.text_load")
    parser.add_argument("door", choices=["predict", "v2", "grpc"])
    parser.add_argument("target", help="HOST:PORT")
    parser.add_argument("texts", help="a JSON file: a list of texts")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print("BENCH_RESULT " + json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
