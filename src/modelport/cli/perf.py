"""``modelport perf``: throughput and latency of a running server or of a model in-process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from ._options import TRUST


def register(app: typer.Typer) -> None:
    app.command()(perf)


def numbers(text: str, what: str, kind: type[int] | type[float] = int) -> list[Any]:
    """``"1,4,16"`` as a list of positive numbers (``--concurrency``, ``--rate``)."""
    from ..errors import ConfigError

    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{what}: expected numbers separated by commas, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise ConfigError(f"{what}: expected positive numbers, got {text!r}")
    return values


def perf(
    model: Path | None = typer.Argument(
        None,
        help="Measure this model in-process (artifact, model directory or repository); "
        "without it, measure the server at --url.",
        show_default=False,
    ),
    url: str | None = typer.Option(
        None,
        "--url",
        envvar="MODELPORT_URL",
        help="A running server's HTTP address, e.g. http://127.0.0.1:8080.",
        show_default=False,
    ),
    name: str | None = typer.Option(
        None, "--model", help="The model's name, where the target serves several."
    ),
    version: str | None = typer.Option(None, "--version", help="The model version to load."),
    protocol: str = typer.Option(
        "json",
        "--protocol",
        "-p",
        help="Doors to load, comma-separated: json (V2 HTTP JSON), binary (V2 HTTP binary "
        "tensors), grpc. In-process, the model is called directly.",
    ),
    grpc_url: str | None = typer.Option(
        None, "--grpc-url", help="The server's gRPC address (default: --url's host, port 8081)."
    ),
    concurrency: str = typer.Option(
        "1,4,16,64", "--concurrency", "-c", help="Requests in flight, one step each."
    ),
    rate: str | None = typer.Option(
        None,
        "--rate",
        "-r",
        help="Requests started a second (open loop), one step each; replaces --concurrency.",
        show_default=False,
    ),
    seconds: float = typer.Option(5.0, "--seconds", "-s", min=0.1, help="Measured per step."),
    warmup: float = typer.Option(1.0, "--warmup", min=0.0, help="Unmeasured, before each step."),
    batch_size: int = typer.Option(1, "--batch-size", "-b", min=1, help="Rows in a request."),
    input: Path | None = typer.Option(
        None,
        "--input",
        "-i",
        help="Requests to send: a .json V2 infer body (or a list of them) or a .npz of arrays; "
        "default: generated from the model's signature.",
        show_default=False,
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="MODELPORT_AUTH_TOKEN",
        help="The server's auth token (its --auth-token).",
        show_default=False,
    ),
    threads: int | None = typer.Option(
        None,
        "--threads",
        min=1,
        help="In-process: intra-op threads per model call (default: the CPUs this process may "
        "use).",
        show_default=False,
    ),
    max_inflight: int = typer.Option(
        256, "--max-inflight", min=1, help="With --rate: requests in flight at most."
    ),
    timeout: float = typer.Option(
        30.0, "--timeout", min=0.1, help="Seconds a request may take before it counts as failed."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    plot: Path | None = typer.Option(
        None, "--plot", help="Write a plot of throughput and p99 (PNG).", show_default=False
    ),
    trust: bool = TRUST,
) -> None:
    """Measure throughput, latency (p50/p90/p99), errors and batch sizes, step by step.

    Against a running server (--url): V2 HTTP JSON, binary tensors or gRPC, with the batch
    sizes the server's own /metrics counted. With a MODEL: the model behind its dynamic
    batcher in this process, no transport.
    """
    from rich.console import Console

    from ..errors import ConfigError
    from ..perf.session import PROTOCOLS, LocalTarget, RemoteTarget, Step, Target, measure

    if (model is None) == (url is None):
        raise ConfigError("give a MODEL to measure in-process or the --url of a running server")
    rates = numbers(rate, "--rate", float) if rate else []
    levels = [] if rates else numbers(concurrency, "--concurrency")
    if plot is not None:
        from .._deps import require

        require("matplotlib", extra="store")  # before minutes of measuring, not after
    target: Target
    if model is not None:
        protocols = ["local"]
        target = LocalTarget(
            model, model=name, version=version, trust=trust, threads=threads, batch_size=batch_size,
            input_file=input,
        )  # fmt: skip
    else:
        assert url is not None
        protocols = [p.strip() for p in protocol.split(",") if p.strip()]
        unknown = [p for p in protocols if p not in PROTOCOLS]
        if unknown or not protocols:
            raise ConfigError(f"--protocol {protocol!r}: expected some of {', '.join(PROTOCOLS)}")
        target = RemoteTarget(
            url, model=name, version=version, grpc_url=grpc_url, token=token,
            batch_size=batch_size, input_file=input,
        )  # fmt: skip
    console = Console(stderr=True)

    def progress(step: Step) -> None:
        console.print(
            f"{step.protocol} {step.load}: {step.throughput:,.0f} req/s, "
            f"p99 {step.p99_ms:.2f} ms, {step.errors} errors",
            highlight=False,
        )

    report = measure(
        target, protocols, concurrency=levels, rates=rates, seconds=seconds, warmup=warmup,
        max_inflight=max_inflight, timeout=timeout, on_step=None if as_json else progress,
    )  # fmt: skip
    if plot is not None:
        from ..perf.report import plot as draw

        draw(report, plot)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
        return
    from ..perf.report import table

    out = Console()
    if not out.is_terminal:  # a file or a pipe: the whole table, unwrapped
        out = Console(width=140)
    out.print(table(report))
    console.print(
        f"load loop: {report.loop}, client {report.cpus}"
        + (f"; plot: {plot}" if plot is not None else ""),
        highlight=False,
    )
