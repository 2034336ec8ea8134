"""The results of a run as Markdown (every figure and the target ratios) and a PNG plot."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .harness import BINARY, C2, C2G, GRPC, JSON, B

__all__ = ["Check", "checks", "markdown", "plot", "write"]

MODELPORT = (JSON, BINARY, GRPC)
W2_GOALS = {JSON: 0.85, BINARY: 0.90, GRPC: 0.85}
"""Issue 21: W2 at the top concurrency against in-process onnxruntime at batch 64."""


@dataclass(frozen=True)
class Check:
    """One target of issue 4, evaluated on one run."""

    name: str
    goal: str
    measured: str
    holds: bool | None
    """None when the run lacks the figures to tell."""


def _point(
    results: Mapping[str, Any], workload: str, target: str, concurrency: int
) -> dict[str, Any] | None:
    for p in results["points"].get(workload, {}).get(target, []):
        if p["concurrency"] == concurrency:
            found: dict[str, Any] = p
            return found
    return None


def _c1(results: Mapping[str, Any], workload: str, batch: int) -> dict[str, Any] | None:
    return next((r for r in results["c1"].get(workload, []) if r["batch"] == batch), None)


def checks(results: Mapping[str, Any]) -> list[Check]:
    """Every target's ratio, computed from the figures of ``results`` (a ``Results.to_dict()``)."""
    top = max(results["settings"]["concurrency"])
    out = []
    mine, c2, b = (_point(results, "w1", t, top) for t in (JSON, C2, B))
    ratio = mine["rps"] / c2["rps"] if mine and c2 and c2["rps"] else None
    out.append(_ratio(f"W1@{top} HTTP JSON vs C2", ">= 50 % of C2", ratio, 0.50, percent=True))
    ratio = mine["rps"] / b["rps"] if mine and b and b["rps"] else None
    out.append(_ratio(f"W1@{top} HTTP JSON vs B", ">= 4x B", ratio, 4.0, percent=False))
    mine, c2g = (_point(results, "w1", t, top) for t in (GRPC, C2G))
    ratio = mine["rps"] / c2g["rps"] if mine and c2g and c2g["rps"] else None
    out.append(
        _ratio(f"W1@{top} gRPC vs C2 gRPC", ">= 80 % of C2 gRPC", ratio, 0.80, percent=True)
    )
    c1_64, c1_1 = _c1(results, "w2", 64), _c1(results, "w2", 1)
    for target in MODELPORT:
        p = _point(results, "w2", target, top)
        ratio = p["rows_per_s"] / c1_64["rows_per_s"] if p and c1_64 else None
        label = target.removeprefix("modelport ")
        bound = W2_GOALS[target]
        out.append(
            _ratio(
                f"W2@{top} {label} vs C1 batch 64",
                f">= {100 * bound:.0f} % of C1 rows/s",
                ratio,
                bound,
                percent=True,
            )
        )
    for target in MODELPORT:
        p = _point(results, "w2", target, 1)
        label = target.removeprefix("modelport ")
        if p and c1_1:
            gap = p["p50_ms"] - c1_1["p50_ms"]
            measured = f"{p['p50_ms']:.2f} ms vs {c1_1['p50_ms']:.2f} ms (+{gap:.2f} ms)"
            out.append(
                Check(f"W2@1 {label} p50 vs C1 batch 1", "within 1 ms", measured, gap <= 1.0)
            )
        else:
            out.append(
                Check(f"W2@1 {label} p50 vs C1 batch 1", "within 1 ms", "not measured", None)
            )
    cold = results.get("cold_start_s")
    out.append(
        Check(
            "cold start (serve -> first inference)",
            "< 2 s",
            f"{cold:.2f} s" if cold is not None else "not measured",
            None if cold is None else cold < 2.0,
        )
    )
    imp = results.get("import_ms")
    out.append(
        Check(
            "import modelport",
            "< 150 ms",
            f"{imp:.0f} ms" if imp is not None else "not measured",
            None if imp is None else imp < 150.0,
        )
    )
    return out


def _ratio(name: str, goal: str, ratio: float | None, bound: float, *, percent: bool) -> Check:
    if ratio is None:
        return Check(name, goal, "not measured", None)
    measured = f"{100 * ratio:.0f} %" if percent else f"{ratio:.1f}x"
    return Check(name, goal, measured, ratio >= bound)


def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def markdown(results: Mapping[str, Any], plot_name: str | None, note: str = "") -> str:
    """The full report."""
    s, m = results["settings"], results["machine"]
    lines = [f"# modelport benchmark, {results['started'][:10]}", ""]
    if note:
        lines += [f"> {note}", ""]
    lines += [
        f"Started {results['started']}, took {results['seconds']:.0f} s, commit "
        f"`{m.get('commit')}`. Method: [docs/benchmarks.md](../../docs/benchmarks.md).",
        "",
        "## Targets",
        "",
    ]
    verdict = {True: "holds", False: "**fails**", None: "n/a"}
    lines += _table(
        ["target", "goal", "measured", ""],
        ([c.name, c.goal, c.measured, verdict[c.holds]] for c in checks(results)),
    )
    if plot_name:
        lines += ["", f"![throughput and p99 latency against concurrency]({plot_name})"]
    lines += ["", "## C1: in-process onnxruntime (compute ceiling)", ""]
    for key, rows in results["c1"].items():
        lines += [f"**{key.upper()}**", ""]
        lines += _table(
            ["batch", "rows/s", "p50 ms/call", "mean ms/call"],
            (
                [r["batch"], f"{r['rows_per_s']:,.0f}", f"{r['p50_ms']:.3f}", f"{r['mean_ms']:.3f}"]
                for r in rows
            ),
        )
        lines.append("")
    lines += [
        "## Load tests",
        "",
        "Median of the repeats; rows/s equals req/s (one row a request). Ratios: req/s "
        "against C2 (of the same transport: HTTP or gRPC) and B at the same concurrency; "
        "for W2, rows/s against C1 at batch 64.",
        "",
    ]
    for key in results["points"]:
        lines += [f"**{key.upper()}**", "", *_load_table(results, key), ""]
    if results.get("contract"):
        lines += _contract_section(results["contract"])
    if results.get("profile"):
        lines += _profile_section(results["profile"])
    if results["failures"]:
        lines += ["## Steps that did not run", ""]
        lines += [f"- {name}: {reason}" for name, reason in results["failures"].items()]
        lines.append("")
    lines += ["## Machine and settings", ""]
    lines += _table(
        ["", ""],
        [
            ["CPU", f"{m['cpu']} ({m['cpus']} logical CPUs)"],
            ["memory", f"{m['memory_gib']} GiB"],
            ["OS", m["os"]],
            ["Python", m["python"]],
            ["load average at start", ", ".join(f"{x:.2f}" for x in m["load_average"])],
            ["load generator", f"{_wrk(m['wrk'])} (HTTP), bench.grpc_load (gRPC, grpc.aio)"],
            [
                "CPUs",
                f"servers on {s['server_cpus']}, load generators on {s['client_cpus']} (taskset)",
            ],
            [
                "configuration",
                "**defaults**: `modelport serve MODEL`, no flags, no batching or runtime "
                "settings (threads from the CPU budget, batching chosen at start)"
                if s.get("threads") is None
                else f"**tuned** by hand: the workloads' batching limits, intra-op "
                f"{s['threads']}, inter-op 1, for every target",
            ],
            ["B", f"gunicorn, {s['gunicorn_workers']} sync workers"],
            [
                "timing",
                f"concurrency {', '.join(map(str, s['concurrency']))}; "
                f"{s['warmup']} s warm-up, then "
                f"{s['repeats']} x {s['seconds']} s, median; C1 {s['c1_seconds']} s per batch",
            ],
            ["versions", ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v)],
        ],
    )
    return "\n".join(lines) + "\n"


def _wrk(version: str | None) -> str:
    return " ".join((version or "wrk ?").split()[:2])


def _load_table(results: Mapping[str, Any], key: str) -> list[str]:
    targets = results["points"][key]
    # W1 measures serving overhead (compare with the transport ceiling of the same transport);
    # W2 measures compute (compare with onnxruntime's batched throughput).
    c1_64 = _c1(results, key, 64) if key != "w1" else None
    has_c2, has_b = C2 in targets or C2G in targets, B in targets
    header = ["target", "conc.", "req/s", "p50 ms", "p99 ms", "errors"]
    header += ["vs C2"] * has_c2 + ["vs B"] * has_b + ["vs C1@64"] * bool(c1_64)
    rows = []
    for target, points in targets.items():
        c2 = C2G if target in (GRPC, C2G) else C2
        for p in points:
            row = [target, p["concurrency"], f"{p['rps']:,.0f}", f"{p['p50_ms']:.2f}"]
            row += [f"{p['p99_ms']:.2f}", p["errors"]]
            for present, ref, fmt in ((has_c2, c2, "{:.0%}"), (has_b, B, "{:.1f}x")):
                if present:
                    r = _point(results, key, ref, p["concurrency"])
                    row.append(fmt.format(p["rps"] / r["rps"]) if r and r["rps"] else "")
            if c1_64:
                row.append(f"{100 * p['rows_per_s'] / c1_64['rows_per_s']:.0f} %")
            rows.append(row)
    return _table(header, rows)


def _contract_section(rows: list[dict[str, Any]]) -> list[str]:
    from .contract import table

    return [
        "## Contract overhead (in-process, W1's MLP)",
        "",
        "Per call, best of interleaved rounds: the framework called directly, numpy in and out, "
        "against `Model.predict(array)` and `Model.predict_batch({name: array})` on the same "
        "session/module. Goal: under 5 µs of overhead at batch 1.",
        "",
        table(rows),
        "",
    ]


def _profile_section(profile: Mapping[str, Any]) -> list[str]:
    load = profile.get("load", {})
    lines = [
        "## Profile: modelport, W1 HTTP JSON",
        "",
        f"py-spy, {profile['samples']} samples of the server under load at concurrency "
        f"{load.get('concurrency')} ({load.get('rps', 0):,.0f} req/s while sampled). "
        "Shares of CPU samples.",
        "",
    ]
    for title, key in (
        ("by package", "by_package"),
        ("self (leaf function)", "self"),
        ("modelport function, inclusive", "inclusive"),
    ):
        lines += _table([title, "%"], ([f"`{name}`", share] for name, share in profile[key]))
        lines.append("")
    return lines


# One colour per target in every panel; the ceilings dashed.
_STYLE = {
    C2: ("black", "--"),
    C2G: ("dimgrey", "--"),
    B: ("tab:red", "-"),
    JSON: ("tab:blue", "-"),
    BINARY: ("tab:green", "-"),
    GRPC: ("tab:purple", "-"),
}


def plot(results: Mapping[str, Any], path: Path) -> Path:
    """Throughput and p99 latency against concurrency, one line per target, per workload."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(results["points"])
    fig, axes = plt.subplots(len(workloads), 2, figsize=(12, 4.2 * len(workloads)), squeeze=False)
    for row, key in enumerate(workloads):
        rate_ax, p99_ax = axes[row]
        for target, points in results["points"][key].items():
            x = [p["concurrency"] for p in points]
            color, style = _STYLE.get(target, (None, "-"))
            for ax, field in ((rate_ax, "rps"), (p99_ax, "p99_ms")):
                y = [p[field] for p in points]
                ax.plot(x, y, marker="o", color=color, linestyle=style, label=target)
        c1_64 = _c1(results, key, 64) if key != "w1" else None
        if c1_64:
            rate_ax.axhline(
                c1_64["rows_per_s"], color="tab:orange", linestyle=":", label="C1 batch 64 (rows/s)"
            )
        for ax, title, unit in (
            (rate_ax, "throughput", "requests/s"),
            (p99_ax, "p99 latency", "ms"),
        ):
            ax.set_title(f"{key.upper()} {title}")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("concurrency (connections)")
            ax.set_ylabel(unit)
            ax.set_xticks(
                results["settings"]["concurrency"],
                [str(c) for c in results["settings"]["concurrency"]],
            )
            ax.grid(True, which="both", alpha=0.3)
        rate_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(
    results: Mapping[str, Any], out_dir: Path, stem: str, note: str = ""
) -> tuple[Path, Path | None]:
    """Write ``<stem>.md``, ``<stem>.json`` and (when there are load tests) ``<stem>.png``."""
    import json

    out_dir.mkdir(parents=True, exist_ok=True)
    png = plot(results, out_dir / f"{stem}.png") if results["points"] else None
    md = out_dir / f"{stem}.md"
    md.write_text(markdown(results, png.name if png else None, note))
    (out_dir / f"{stem}.json").write_text(json.dumps(results, indent=1))
    return md, png
