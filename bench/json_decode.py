"""What decoding a V2 JSON request costs, with and without the simdjson path (issue 21).

``python -m bench.json_decode`` times ``decode_request`` on W2's body (one row of 1,024 FP32
values) and a 64-row body, best of several rounds, simdjson (``modelport.protocol.fastjson``)
against orjson + ``np.asarray`` (the path without pysimdjson), interleaved in one run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np

from modelport.protocol import codec, fastjson


def body(rows: int, width: int = 1024) -> bytes:
    x = np.random.default_rng(0).standard_normal((rows, width)).astype(np.float32)
    item = {"name": "x", "datatype": "FP32", "shape": [rows, width], "data": x.ravel().tolist()}
    return json.dumps({"inputs": [item]}).encode()


def per_call(fn: Callable[[], object], seconds: float = 0.3, rounds: int = 7) -> float:
    best = float("inf")
    for _ in range(rounds):
        n, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            fn()
            n += 1
        best = min(best, (time.perf_counter() - began) / n)
    return best


def _timed(data: bytes, fast: bool) -> float:
    saved = fastjson.simdjson

    def decode() -> object:
        if not fast:
            fastjson.simdjson = None
        try:
            return codec.decode_request(data)
        finally:
            fastjson.simdjson = saved

    return per_call(decode)


def main() -> None:
    if not fastjson.available():
        raise SystemExit("pysimdjson is not installed: pip install -e '.[serve]'")
    print(f"{'body':26} {'orjson µs':>10} {'simdjson µs':>12} {'speed-up':>9}")
    for rows in (1, 64):
        data = body(rows)
        a, b = _timed(data, fast=False), _timed(data, fast=True)
        what = f"{rows} x 1024 FP32 ({len(data) // 1024} KiB)"
        print(f"{what:26} {a * 1e6:10.1f} {b * 1e6:12.1f} {a / b:8.2f}x")


if __name__ == "__main__":
    main()
