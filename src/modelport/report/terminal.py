"""The report as rich tables in a terminal."""

from __future__ import annotations

import time

from rich import box
from rich.console import Console
from rich.table import Table

from .build import Report
from .compare import VersionFigures
from .stats import PSI_DRIFTED, PSI_MODERATE

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


_STYLE = {"stable": "green", "moderate": "yellow", "drifted": "red"}
LATENCY = ("p50 ms", "p90 ms", "p99 ms")


def _table(first: str, *numbers: str, title: str, fold: bool = False) -> Table:
    """A table that fits 80 columns: no vertical rules, numbers never wrapped or cut; the
    first column folds only where asked (long feature names)."""
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column(first, overflow="fold", no_wrap=not fold)
    for head in numbers:
        table.add_column(head, justify="right", no_wrap=True)
    return table


def print_report(report: Report, console: Console | None = None) -> None:
    """Print the summary, per-window figures and drift of ``report``."""
    console = console or Console()
    if not report.requests:
        console.print(f"[bold]{report.model}[/bold]: no logged predictions in this period")
        _print_versions(report, console)
        return
    error_rate = report.errors / report.requests
    console.print(f"[bold]{report.model}[/bold]  {_when(report.start)} .. {_when(report.end)} UTC")
    console.print(
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
    table = _table(
        "window (UTC)",
        "requests",
        "errors",
        *LATENCY,
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
        drift = _table(
            "feature", "PSI", "verdict", "KS D", "KS p", "n ref", "n now",
            title="drift against the reference", fold=True,
        )  # fmt: skip
        for d in report.drift:
            style = _STYLE[d.verdict]
            drift.add_row(
                d.label if d.kind == "input" else f"{d.label} (output)",
                f"[{style}]{d.psi:.4f}[/]",
                f"[{style}]{d.verdict}[/]",
                f"{d.ks:.4f}",
                f"{d.ks_pvalue:.3g}",
                str(d.n_reference),
                str(d.n_current),
            )
        console.print(drift)
        console.print(
            f"PSI up to {PSI_MODERATE} stable, up to {PSI_DRIFTED} moderate, above that "
            "drifted; KS p below 0.05: the distributions differ"
        )
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
    head = ("requests", "errors", *LATENCY, "feedback", metric)
    if len(report.by_version) > 1:
        table = _table("version", *head, title="traffic per version")
        for v, figures in report.by_version.items():
            table.add_row(*_version_row(v, figures))
        console.print(table)
    for c in report.comparisons:
        agreement = "-" if c.agreement is None else f"{c.agreement:.3f}"
        console.print(
            f"shadow {c.candidate_version} vs primary {c.primary_version}: agreement "
            f"{agreement} ({c.agreed} of {c.compared} compared, {c.mirrored} mirrored)"
        )
        table = _table("", *head, title="candidate vs primary, on the mirrored requests")
        table.add_row(*_version_row(f"candidate {c.candidate_version}", c.candidate))
        table.add_row(*_version_row(f"primary {c.primary_version}", c.primary))
        console.print(table)
