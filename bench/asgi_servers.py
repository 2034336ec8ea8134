"""Which ASGI server gives the higher ceiling on one CPU: ``python -m bench.asgi_servers``.

The C2 app of ``python -m bench`` (:mod:`bench.bare_asgi`: drains the body, answers a fixed
V2 response) under uvicorn (httptools, uvloop: what modelport runs) and under granian (Rust
HTTP, one worker, uvloop), each pinned to ``--server-cpus``, loaded by wrk from
``--client-cpus`` with W1's JSON request at ``--connections``; the two alternate for
``--rounds`` and the medians are compared. Issue 21 asked whether a faster HTTP server raises
the ceiling; ``granian`` is in the ``bench`` extra for this.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

from .load import HarnessError, wrk_sample
from .servers import HOST, Server, free_port, post
from .workloads import W1, build

HERE = Path(__file__).resolve().parent


def commands(port: int) -> dict[str, list[str]]:
    granian = shutil.which("granian", path=str(Path(sys.executable).parent))
    if granian is None:
        raise HarnessError('granian is not installed: pip install -e ".[bench]"')
    app = "bench.bare_asgi:app"
    return {
        "uvicorn": [sys.executable, "-m", "uvicorn", app, "--host", HOST, "--port", str(port),
                    "--http", "httptools", "--loop", "uvloop", "--no-access-log",
                    "--log-level", "warning"],
        "granian": [granian, "--interface", "asgi", "--host", HOST, "--port", str(port),
                    "--workers", "1", "--loop", "uvloop", "--no-ws", "--log-level", "warning",
                    app],
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.asgi_servers", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--server-cpus", default="0")
    parser.add_argument("--client-cpus", default="1")
    parser.add_argument("--work-dir", type=Path, default=HERE / "_work")
    args = parser.parse_args(argv)
    bodies = build(W1, args.work_dir)
    env = {"BENCH_RESPONSE": str(bodies.json_response), "PYTHONPATH": str(HERE.parent)}
    path = "/v2/models/w1/infer"
    rates: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name in ("uvicorn", "granian"):
            port = free_port()
            log = args.work_dir / "logs" / f"asgi-{name}.log"
            with Server(name, commands(port)[name], cpus=args.server_cpus, env=env, log=log):
                deadline = time.monotonic() + 30
                while True:
                    try:
                        post(port, path, bodies.json_request.read_bytes(), {})
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise HarnessError(f"{name} did not start: see {log}") from None
                        time.sleep(0.1)
                url = f"http://{HOST}:{port}{path}"
                options = {"connections": args.connections, "cpus": args.client_cpus}
                wrk_sample(url, bodies.json_request, seconds=1, **options)  # warm-up
                sample = wrk_sample(url, bodies.json_request, seconds=args.seconds, **options)
                rates.setdefault(name, []).append(sample.rps)
                print(
                    f"{name:8} {sample.rps:9,.0f} req/s  p50 {sample.p50_ms:.2f} ms  "
                    f"p99 {sample.p99_ms:.2f} ms  errors {sample.errors}",
                    flush=True,
                )
    base = statistics.median(rates["uvicorn"])
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"median {name:8} {median:9,.0f} req/s  {median / base:.2f} of uvicorn")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
