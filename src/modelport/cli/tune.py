"""``modelport tune MODEL``: sweep threads, batch size, queue delay and workers; write the best
setting within a latency budget into the model's ``modelport.yaml``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer

from ._options import TRUST
from .perf import numbers


def register(app: typer.Typer) -> None:
    app.command()(tune)


def tune(
    model: Path = typer.Argument(
        ..., help="Model artifact or model directory (one model).", show_default=False
    ),
    latency_budget_ms: float = typer.Option(
        50.0, "--latency-budget-ms", min=0.001, help="The p99 the chosen setting must keep."
    ),
    mode: str = typer.Option(
        "serve",
        "--mode",
        help="serve: a real 'modelport serve' per setting, loaded over --protocol; local: the "
        "model's runner in this process (no transport, faster, no --workers).",
    ),
    protocol: str = typer.Option("json", "--protocol", "-p", help="json, binary or grpc."),
    concurrency: str = typer.Option(
        "16,64", "--concurrency", "-c", help="Requests in flight each setting is measured at."
    ),
    threads: str | None = typer.Option(
        None,
        "--threads",
        help="Intra-op threads to try (default: powers of two up to the CPUs this process "
        "may use).",
        show_default=False,
    ),
    batch_sizes: str = typer.Option(
        "1,8,32,64,128", "--batch-sizes", help="max_batch_size values to try."
    ),
    delays: str = typer.Option("0,0.5,1,2,5", "--delays", help="max_queue_delay_ms to try."),
    workers: str | None = typer.Option(
        None,
        "--workers",
        help="Server processes to try, threads shared among them (default: powers of two up "
        "to the CPUs; serve mode only).",
        show_default=False,
    ),
    seconds: float = typer.Option(1.0, "--seconds", "-s", min=0.1, help="Measured per point."),
    warmup: float = typer.Option(0.3, "--warmup", min=0.0, help="Unmeasured, before each."),
    confirm: int = typer.Option(
        2, "--confirm", min=0, help="The best settings measured once more before choosing."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the modelport.yaml it would write; write nothing."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    trust: bool = TRUST,
) -> None:
    """Find the fastest serving setting of a model within a p99 latency budget.

    Goes one knob at a time (intra-op threads, max_batch_size, max_queue_delay_ms, then
    workers), keeping the best of each; prints every point with the frontier of throughput
    against p99, measures the best settings again (--confirm) and writes the one with the
    best average into modelport.yaml (batching: and runtime:).
    """
    from rich.console import Console

    from ..errors import ConfigError
    from ..perf.session import PROTOCOLS
    from ..perf.tune import Point, write
    from ..perf.tune import tune as run

    if mode not in ("serve", "local"):
        raise ConfigError(f"--mode must be serve or local, got {mode!r}")
    if protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if mode == "serve":
        from .._deps import require

        require("uvicorn", extra="serve")  # the servers it starts need it
        if protocol == "grpc":
            require("grpc", extra="serve")
    console = Console(stderr=True)

    def progress(point: Point) -> None:
        step = point.step
        console.print(
            f"{point.setting.label} | {step.load}: {step.throughput:,.0f} req/s, "
            f"p99 {step.p99_ms:.2f} ms" + (f", {step.errors} errors" if step.errors else ""),
            highlight=False,
        )

    result = run(
        model,
        mode=mode,
        protocol=protocol,
        budget_ms=latency_budget_ms,
        concurrency=numbers(concurrency, "--concurrency"),
        threads=numbers(threads, "--threads") if threads else None,
        batch_sizes=numbers(batch_sizes, "--batch-sizes"),
        delays=_delays(delays),
        workers=numbers(workers, "--workers") if workers else None,
        seconds=seconds,
        warmup=warmup,
        trust=trust,
        confirm=confirm,
        on_point=None if as_json else progress,
    )
    file, text = write(result, model, dry_run=dry_run)
    if as_json:
        print(json.dumps({**result.to_dict(), "file": str(file), "written": not dry_run}, indent=2))
        return
    out = Console()
    if not out.is_terminal:
        out = Console(width=140)
    out.print(_table(result))
    chosen = result.chosen
    assert chosen is not None
    verdict = (
        f"chosen: {chosen.setting.label}: {chosen.step.throughput:,.0f} req/s, "
        f"p99 {chosen.step.p99_ms:.2f} ms at {chosen.step.load}"
    )
    if not result.within_budget:
        verdict += f" (no point kept p99 within {latency_budget_ms:g} ms: the lowest p99)"
    out.print(verdict, highlight=False)
    if chosen.setting.workers > 1:
        out.print(f"serve it with --workers {chosen.setting.workers}", highlight=False)
    if dry_run:
        out.print(f"would write {file}:", highlight=False)
        print(text, end="")
    else:
        out.print(f"wrote {file} (tuned in {result.seconds:.0f} s)", highlight=False)


def _delays(text: str) -> list[float]:
    from ..errors import ConfigError

    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--delays: expected numbers separated by commas, got {text!r}") from None
    if not values or any(v < 0 or math.isnan(v) for v in values):
        raise ConfigError(f"--delays: expected numbers >= 0, got {text!r}")
    return values


def _table(result: Any) -> Any:
    from rich.table import Table

    title = (
        f"{result.model}: {result.mode} mode, {result.protocol}, p99 budget "
        f"{result.budget_ms:g} ms, {result.cpus:g} CPUs"
    )
    out = Table(title=title, title_justify="left")
    for name in ("run", "threads", "workers", "max batch", "delay ms", "load", "req/s", "p99 ms"):
        out.add_column(name, justify="left" if name == "load" else "right")
    for name in ("rows/batch", "errors", "frontier"):
        out.add_column(name, justify="right")
    for point in result.points:
        s, step = point.setting, point.step
        server = step.server
        mark = "*" if point.frontier else ""
        if point is result.chosen:
            mark += " chosen"
        out.add_row(
            str(point.round), str(s.threads), str(s.workers), str(s.max_batch_size),
            f"{s.max_queue_delay_ms:g}", step.load, f"{step.throughput:,.0f}",
            f"{step.p99_ms:.2f}", f"{server.mean_batch:.1f}" if server is not None else "-",
            str(step.errors), mark,
        )  # fmt: skip
    return out
