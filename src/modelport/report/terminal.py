"""The report as rich tables in a terminal."""

from __future__ import annotations

import time

from rich.console import Console
from rich.table import Table

from .build import Report
from .compare import VersionFigures

__all__ = ["print_report"]


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(t))


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _psi_style(value: float) -> str:
    return "red" if value > 0.25 else "yellow" if value > 0.1 else "green"


def print_report(report: Report, console: Console | None = None) -> None:
    """Print the summary, per-window figures and drift of ``report``."""
    console = console or Console()
    if not report.requests:
        console.print(f"[bold]{report.model}[/bold]: no logged predictions in this period")
        _print_versions(report, console)
        return
    error_rate = report.errors / report.requests
    console.print(
        f"[bold]{report.model}[/bold]  {_when(report.start)} .. {_when(report.end)} UTC  "
        f"requests: {report.requests}  errors: {report.errors} ({error_rate:.2%})  "
        f"versions: {', '.join(f'{v} ({n})' for v, n in sorted(report.versions.items()))}"
    )
    lat = report.latency_ms
    console.print(f"latency ms  p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  p99 {lat['p99']:.2f}")
    if report.error_kinds:
        console.print(
            "errors: " + ", ".join(f"{k} {n}" for k, n in sorted(report.error_kinds.items()))
        )
    if report.task == "classification":
        console.print(
            f"accuracy {_num(report.accuracy)} on {report.feedback_rows} rows with feedback"
        )
    elif report.task == "regression":
        console.print(
            f"MAE {_num(report.mae)}  RMSE {_num(report.rmse)} "
            f"on {report.feedback_rows} rows with feedback"
        )
    else:
        console.print("no feedback yet")
    if report.feedback_unmatched:
        console.print(
            f"[yellow]{report.feedback_unmatched} feedback value(s) did not match "
            "their prediction's rows[/yellow]"
        )
    metric = "accuracy" if report.task == "classification" else "MAE"
    table = Table(
        "window (UTC)",
        "requests",
        "errors",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "feedback",
        metric,
        title=f"per {_duration(report.window_s)} window",
    )
    for w in report.windows:
        lat = w.latency_ms
        table.add_row(
            time.strftime("%m-%d %H:%M", time.gmtime(w.start)),
            str(w.requests),
            str(w.errors),
            _num(lat.get("p50"), 2),
            _num(lat.get("p90"), 2),
            _num(lat.get("p99"), 2),
            str(w.feedback),
            _num(w.metric),
        )
    console.print(table)
    _print_versions(report, console)
    if report.drift:
        drift = Table(
            "feature",
            "kind",
            "PSI",
            "KS D",
            "KS p",
            "n ref",
            "n current",
            title="drift against the reference",
        )
        for d in report.drift:
            drift.add_row(
                d.feature,
                d.kind,
                f"[{_psi_style(d.psi)}]{d.psi:.4f}[/]",
                f"{d.ks:.4f}",
                f"{d.ks_pvalue:.3g}",
                str(d.n_reference),
                str(d.n_current),
            )
        console.print(drift)
    if report.truncated_inputs:
        console.print(
            f"{report.truncated_inputs} request(s) had inputs above the size limit "
            "and are not in the drift figures"
        )


def _metric(figures: VersionFigures) -> str:
    if figures.accuracy is not None:
        return _num(figures.accuracy)
    if figures.mae is not None:
        return f"{_num(figures.mae)} / {_num(figures.rmse)}"
    return "-"


def _version_row(label: str, f: VersionFigures) -> list[str]:
    lat = f.latency_ms
    return [
        label,
        str(f.requests),
        str(f.errors),
        _num(lat.get("p50"), 2),
        _num(lat.get("p90"), 2),
        _num(lat.get("p99"), 2),
        str(f.feedback_rows),
        _metric(f),
    ]


def _print_versions(report: Report, console: Console) -> None:
    """Per-version traffic (a canary next to the live version) and shadow comparisons."""
    metric = "MAE / RMSE" if report.task == "regression" else "accuracy"
    head = ("requests", "errors", "p50 ms", "p90 ms", "p99 ms", "feedback", metric)
    if len(report.by_version) > 1:
        table = Table("version", *head, title="traffic per version")
        for v, figures in report.by_version.items():
            table.add_row(*_version_row(v, figures))
        console.print(table)
    for c in report.comparisons:
        agreement = "-" if c.agreement is None else f"{c.agreement:.3f}"
        console.print(
            f"shadow {c.candidate_version} vs primary {c.primary_version}: agreement "
            f"{agreement} ({c.agreed} of {c.compared} compared, {c.mirrored} mirrored)"
        )
        table = Table("", *head, title="candidate vs primary, on the mirrored requests")
        table.add_row(*_version_row(f"candidate {c.candidate_version}", c.candidate))
        table.add_row(*_version_row(f"primary {c.primary_version}", c.primary))
        console.print(table)
