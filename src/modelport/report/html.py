"""The report as one self-contained HTML page, its plots rendered by matplotlib (Agg) as PNGs
embedded in the page."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from .._deps import require
from .build import Report
from .compare import VersionFigures
from .stats import PSI_DRIFTED, PSI_MODERATE

__all__ = ["figures", "render_html", "write_html"]

MAX_HISTOGRAMS = 6
DRIFT_HEAD = ("feature", "kind", "PSI", "verdict", "KS D", "KS p", "n ref", "n logged")
_COLOURS = {"stable": "#55a868", "moderate": "#dd8452", "drifted": "#c44e52"}


def _pyplot() -> Any:
    matplotlib = require("matplotlib", "store")
    matplotlib.use("Agg", force=True)  # no display; safe in servers and CI
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def _time_axis(ax: Any, report: Report) -> None:
    """An x axis spanning exactly the report's windows (one window reads as one window),
    with dates as short as they can be."""
    import matplotlib.dates as mdates

    start = np.datetime64(int(report.windows[0].start), "s")
    end = np.datetime64(int(report.windows[-1].end), "s")
    ax.set_xlim(start, end)
    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    concise = mdates.ConciseDateFormatter(locator)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_formatter(concise)
    ax.set_xlabel("time (UTC)")


def _legend(ax: Any, **kw: Any) -> None:
    """The legend beside the plot, never over its data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kw)


def _thresholds(ax: Any, vertical: bool) -> None:
    """The PSI verdict lines, labelled."""
    line = ax.axvline if vertical else ax.axhline
    for value, name, style in ((PSI_MODERATE, "moderate", ":"), (PSI_DRIFTED, "drifted", "--")):
        label = f"{name} above {value:g}"
        line(value, color=_COLOURS[name], linestyle=style, linewidth=1.2, label=label)


def figures(report: Report) -> dict[str, bytes]:
    """Title → PNG bytes of each plot the report has data for."""
    plt = _pyplot()
    out: dict[str, bytes] = {}
    if not report.windows:
        return out
    times = np.asarray([np.datetime64(int(w.start), "s") for w in report.windows])
    middles = times + np.timedelta64(int(report.window_s / 2), "s")  # points mid-window
    width = np.timedelta64(int(report.window_s * 0.8), "s")

    fig, ax = plt.subplots(figsize=(8, 3))
    ok = [w.requests - w.errors for w in report.windows]
    ax.bar(times, ok, width=width, align="edge", color="#4c72b0", label="ok")
    ax.bar(
        times,
        [w.errors for w in report.windows],
        width=width,
        align="edge",
        bottom=ok,
        color="#c44e52",
        label="errors",
    )
    ax.set_ylabel("requests")
    _legend(ax)
    _time_axis(ax, report)
    out["Traffic and errors"] = _png(fig)

    fig, ax = plt.subplots(figsize=(8, 3))
    for q, style in (("p50", "-"), ("p90", "--"), ("p99", ":")):
        values = [w.latency_ms.get(q, np.nan) for w in report.windows]
        ax.plot(middles, values, style, marker="o", label=q)
    ax.set_ylabel("latency (ms)")
    _legend(ax)
    _time_axis(ax, report)
    out["Latency percentiles"] = _png(fig)

    if report.task is not None:
        fig, ax = plt.subplots(figsize=(8, 3))
        metric = [np.nan if w.metric is None else w.metric for w in report.windows]
        ax.plot(middles, metric, marker="o", color="#55a868")
        ax.set_ylabel("accuracy" if report.task == "classification" else "MAE")
        if report.task == "classification":
            ax.set_ylim(0, 1.05)
        _time_axis(ax, report)
        out["Accuracy over time" if report.task == "classification" else "Error over time"] = _png(
            fig
        )

    if report.drift:
        fig, ax = plt.subplots(figsize=(8, 0.4 * len(report.drift) + 1.2))
        names = [f"{d.label} ({d.kind})" for d in report.drift][::-1]
        values = [d.psi for d in report.drift][::-1]
        colors = [_COLOURS[d.verdict] for d in report.drift][::-1]
        ax.barh(names, values, color=colors)
        _thresholds(ax, vertical=True)
        ax.set_xlabel("PSI against the reference")
        _legend(ax, fontsize=8)
        out["Drift (PSI) per feature"] = _png(fig)

        fig, ax = plt.subplots(figsize=(8, 3))
        for d in report.drift[:MAX_HISTOGRAMS]:
            values = [w.psi.get(d.feature, np.nan) for w in report.windows]
            ax.plot(middles, values, marker="o", label=d.label)
        _thresholds(ax, vertical=False)
        ax.set_ylabel("PSI per window")
        _legend(ax, fontsize=7)
        _time_axis(ax, report)
        out["Drift over time"] = _png(fig)

        shown = report.drift[:MAX_HISTOGRAMS]
        cols = min(3, len(shown))
        rows = (len(shown) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
        for ax, d in zip(axes.flat, shown):
            both = np.concatenate([d.reference, d.current])
            bins = np.histogram_bin_edges(both, bins=30)
            ax.hist(d.reference, bins=bins, density=True, alpha=0.5, label="reference")
            ax.hist(d.current, bins=bins, density=True, alpha=0.5, label="logged")
            ax.set_title(f"{d.label}  PSI {d.psi:.3f} ({d.verdict})", fontsize=9)
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(shown) :]:
            ax.set_visible(False)
        fig.tight_layout()
        out["Distributions: reference vs logged"] = _png(fig)
    for c in report.comparisons:
        fig, ax = plt.subplots(figsize=(8, 3))
        qs = np.arange(3)
        for shift, role, f, color in (
            (-0.2, "primary", c.primary, "#4c72b0"),
            (0.2, "candidate", c.candidate, "#dd8452"),
        ):
            values = [f.latency_ms.get(q, np.nan) for q in ("p50", "p90", "p99")]
            ax.bar(qs + shift, values, width=0.4, color=color, label=f"{role} {f.version}")
        ax.set_xticks(qs, ["p50", "p90", "p99"])
        ax.set_ylabel("latency (ms)")
        _legend(ax)
        title = f"Shadow latency: candidate {c.candidate_version} vs primary {c.primary_version}"
        out[title] = _png(fig)
    return out


def render_html(report: Report) -> str:
    """The report as an HTML page with every plot embedded."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(report.start))
    until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(report.end))
    rate = report.errors / report.requests if report.requests else 0.0
    summary: list[tuple[str, str]] = [
        ("period", f"{when} .. {until}"),
        ("requests", str(report.requests)),
        ("errors", f"{report.errors} ({rate:.2%})"),
        ("versions", ", ".join(f"{v}: {n}" for v, n in sorted(report.versions.items()))),
    ]
    summary += [(f"latency {q} (ms)", f"{v:.2f}") for q, v in report.latency_ms.items()]
    if report.accuracy is not None:
        summary.append(("accuracy", f"{report.accuracy:.4f} ({report.feedback_rows} rows)"))
    if report.mae is not None:
        summary.append(("MAE / RMSE", f"{report.mae:.4f} / {report.rmse:.4f}"))
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>modelport report: {escape(report.model)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:60em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;"
        "text-align:right}img{max-width:100%}</style></head><body>",
        f"<h1>{escape(report.model)}</h1>",
        _table(("", ""), summary, header=False),
    ]
    parts += _versions_html(report)
    if report.drift:
        rows = [
            (
                d.label,
                d.kind,
                f"{d.psi:.4f}",
                d.verdict,
                f"{d.ks:.4f}",
                f"{d.ks_pvalue:.3g}",
                str(d.n_reference),
                str(d.n_current),
            )
            for d in report.drift
        ]
        parts += [
            "<h2>Drift</h2>",
            _table(DRIFT_HEAD, rows),
            f"<p>PSI up to {PSI_MODERATE} is stable, up to {PSI_DRIFTED} moderate, above that "
            "drifted; a KS p-value below 0.05 says the two distributions differ.</p>",
        ]
    for title, png in figures(report).items():
        data = base64.b64encode(png).decode()
        parts.append(
            f"<h2>{escape(title)}</h2><img alt='{escape(title)}' "
            f"src='data:image/png;base64,{data}'>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


_HEAD = ("version", "requests", "errors", "p50 ms", "p90 ms", "p99 ms", "feedback", "quality")


def _cells(f: VersionFigures) -> list[str]:
    lat = f.latency_ms
    quality = (
        f"accuracy {f.accuracy:.4f}"
        if f.accuracy is not None
        else f"MAE {f.mae:.4f} / RMSE {f.rmse:.4f}"
        if f.mae is not None and f.rmse is not None
        else "-"
    )
    return [
        f.version,
        str(f.requests),
        str(f.errors),
        *(f"{lat[q]:.2f}" if q in lat else "-" for q in ("p50", "p90", "p99")),
        str(f.feedback_rows),
        quality,
    ]


def _versions_html(report: Report) -> list[str]:
    parts: list[str] = []
    if len(report.by_version) > 1:
        rows = [_cells(f) for f in report.by_version.values()]
        parts += ["<h2>Traffic per version</h2>", _table(_HEAD, rows)]
    for c in report.comparisons:
        agreement = "-" if c.agreement is None else f"{c.agreement:.4f}"
        parts += [
            f"<h2>Shadow {escape(c.candidate_version)} vs primary {escape(c.primary_version)}</h2>",
            f"<p>agreement {agreement}: {c.agreed} of {c.compared} compared answers agree "
            f"({c.mirrored} requests mirrored)</p>",
            _table(
                ("role", *_HEAD),
                [["candidate", *_cells(c.candidate)], ["primary", *_cells(c.primary)]],
            ),
        ]
    return parts


def write_html(report: Report, path: str | Path) -> None:
    """Write :func:`render_html` to ``path``."""
    Path(path).write_text(render_html(report), encoding="utf-8")


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], header: bool = True) -> str:
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "".join(out)
