"""A perf run for people: a rich table, and a plot of throughput and p99 against the load."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .session import PerfReport, Step

__all__ = ["plot", "table"]


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def _errors(step: Step) -> str:
    if not step.errors:
        return "0"
    codes = ", ".join(f"{code} x{n}" for code, n in step.error_codes.items())
    return f"{step.errors} ({codes})"


def table(report: PerfReport) -> Any:
    """The steps as a :class:`rich.table.Table`."""
    from rich.table import Table

    title = f"{report.model} at {report.target}, {report.rows_per_request} row(s) a request"
    out = Table(title=title, title_justify="left")
    rows = report.rows_per_request > 1
    for name in ("door", "load", "req/s", *(["rows/s"] if rows else [])):
        out.add_column(name, justify="left" if name in ("door", "load") else "right")
    for name in ("p50 ms", "p90 ms", "p99 ms", "errors", "served", "batches", "rows/batch"):
        out.add_column(name, justify="right")
    out.add_column("client CPU", justify="right")
    for step in report.steps:
        server = step.server
        cells = [step.protocol, step.load, f"{step.throughput:,.0f}"]
        if rows:
            cells.append(f"{step.rows_per_s:,.0f}")
        cells += [_ms(step.p50_ms), _ms(step.p90_ms), _ms(step.p99_ms), _errors(step)]
        if server is None:
            cells += ["-", "-", "-"]
        else:
            cells += [f"{server.requests:,}", f"{server.batches:,}", f"{server.mean_batch:.1f}"]
        cells.append(f"{step.client_cpu:.2f}")
        out.add_row(*cells)
    return out


def plot(report: PerfReport, path: Path) -> Path:
    """Throughput and p99 latency against the load, one line per door, as a PNG."""
    from .._deps import require

    require("matplotlib", extra="store")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    closed = any(s.concurrency is not None for s in report.steps)
    for protocol in dict.fromkeys(s.protocol for s in report.steps):
        steps = [
            s
            for s in report.steps
            if s.protocol == protocol and (s.concurrency is not None) == closed
        ]
        x = [s.concurrency if closed else s.rate for s in steps]
        top.plot(x, [s.throughput for s in steps], marker="o", label=protocol)
        bottom.plot(x, [s.p99_ms for s in steps], marker="o", label=protocol)
    if closed:
        top.set_xscale("log", base=2)
    top.set_ylabel("requests / s")
    top.set_title(f"{report.model} at {report.target}")
    top.legend()
    top.grid(alpha=0.3)
    bottom.set_ylabel("p99 latency, ms")
    bottom.set_xlabel("requests in flight" if closed else "requests started / s")
    bottom.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
