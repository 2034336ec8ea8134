"""A gRPC load generator: ``python -m bench.grpc_load HOST:PORT REQUEST_FILE``.

Sends one pre-serialized ``ModelInferRequest`` over and over from ``--concurrency`` coroutines
spread over several channels (separate HTTP/2 connections), for ``--seconds`` after a
``--warmup``. Requests and responses stay bytes (no protobuf work on the client), so the client
spends its CPU on the transport. Prints ``BENCH_RESULT {json}`` like ``wrk_v2.lua``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import numpy as np

METHOD = "/inference.GRPCInferenceService/ModelInfer"
STREAMS_PER_CHANNEL = 16


async def _load(
    target: str,
    request: bytes,
    concurrency: int,
    seconds: float,
    warmup: float,
    connect_timeout: float,
) -> dict[str, int]:
    import grpc

    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(max(1, -(-concurrency // STREAMS_PER_CHANNEL)))
    ]
    calls = [ch.unary_unary(METHOD) for ch in channels]
    latencies: list[int] = []
    errors = 0
    measuring = False

    async def worker(call: grpc.aio.UnaryUnaryMultiCallable, stop: float) -> None:
        nonlocal errors
        while True:
            start = time.perf_counter_ns()
            if start >= stop:
                return
            try:
                await call(request)
            except grpc.aio.AioRpcError:
                if measuring:
                    errors += 1
                continue
            if measuring:
                latencies.append(time.perf_counter_ns() - start)

    try:
        for ch in channels:
            try:
                await asyncio.wait_for(ch.channel_ready(), connect_timeout)
            except asyncio.TimeoutError:
                raise SystemExit(f"cannot connect to {target} in {connect_timeout:g} s") from None
        if warmup > 0:
            stop = time.perf_counter_ns() + int(warmup * 1e9)
            await asyncio.gather(*(worker(calls[i % len(calls)], stop) for i in range(concurrency)))
        measuring = True
        began = time.perf_counter_ns()
        stop = began + int(seconds * 1e9)
        await asyncio.gather(*(worker(calls[i % len(calls)], stop) for i in range(concurrency)))
        elapsed = time.perf_counter_ns() - began
    finally:
        for ch in channels:
            await ch.close()
    lat = np.asarray(latencies or [0], dtype=np.int64) // 1000
    p50, p90, p99 = (int(v) for v in np.percentile(lat, [50, 90, 99]))
    return {
        "requests": len(latencies),
        "duration_us": elapsed // 1000,
        "errors": errors,
        "status_errors": errors,
        "socket_errors": 0,
        "p50_us": p50,
        "p90_us": p90,
        "p99_us": p99,
        "max_us": int(lat.max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", help="host:port of the gRPC server")
    parser.add_argument("request", type=Path, help="file holding a serialized ModelInferRequest")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=0.0)
    parser.add_argument("--connect-timeout", type=float, default=10.0)
    args = parser.parse_args()
    result = asyncio.run(
        _load(
            args.target,
            args.request.read_bytes(),
            args.concurrency,
            args.seconds,
            args.warmup,
            args.connect_timeout,
        )
    )
    print("BENCH_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
