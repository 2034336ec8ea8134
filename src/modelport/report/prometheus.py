"""The report's figures as Prometheus gauges (for a textfile collector or a pushgateway)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._deps import require
from .build import Report
from .compare import VersionFigures

__all__ = ["report_registry", "write_textfile"]


def report_registry(report: Report, registry: Any = None) -> Any:
    """Gauges ``modelport_report_*`` for ``report`` in ``registry`` (a new one by default)."""
    prom = require("prometheus_client", "store")
    registry = registry if registry is not None else prom.CollectorRegistry()

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
        return prom.Gauge(f"modelport_report_{name}", doc, ("model", *labels), registry=registry)

    m = report.model
    gauge("requests", "Requests logged in the report period.").labels(m).set(report.requests)
    gauge("errors", "Failed requests in the report period.").labels(m).set(report.errors)
    rate = report.errors / report.requests if report.requests else 0.0
    gauge("error_ratio", "Failed / all requests.").labels(m).set(rate)
    latency = gauge("latency_milliseconds", "Latency percentiles.", ("quantile",))
    for q, value in report.latency_ms.items():
        latency.labels(m, _quantile(q)).set(value)
    gauge("feedback_rows", "Rows with ground truth.").labels(m).set(report.feedback_rows)
    if report.accuracy is not None:
        gauge("accuracy", "Accuracy on rows with feedback.").labels(m).set(report.accuracy)
    if report.mae is not None and report.rmse is not None:
        gauge("mae", "Mean absolute error on rows with feedback.").labels(m).set(report.mae)
        gauge("rmse", "Root mean squared error on rows with feedback.").labels(m).set(report.rmse)
    _versions(report, gauge)
    if report.drift:
        labels = ("feature", "kind")
        psi = gauge("drift_psi", "Population Stability Index against the reference.", labels)
        ks = gauge("drift_ks_statistic", "Kolmogorov-Smirnov D against the reference.", labels)
        ks_p = gauge("drift_ks_pvalue", "Kolmogorov-Smirnov p-value (asymptotic).", labels)
        for d in report.drift:
            psi.labels(m, d.feature, d.kind).set(d.psi)
            ks.labels(m, d.feature, d.kind).set(d.ks)
            ks_p.labels(m, d.feature, d.kind).set(d.ks_pvalue)
    return registry


def _versions(report: Report, gauge: Callable[..., Any]) -> None:
    m = report.model
    if report.by_version:
        doc = "Per version (traffic only, shadow answers excluded): "
        requests = gauge("version_requests", doc + "requests.", ("version",))
        errors = gauge("version_errors", doc + "failed requests.", ("version",))
        latency = gauge("version_latency_milliseconds", doc + "latency.", ("version", "quantile"))
        quality = gauge("version_quality", doc + "accuracy, mae or rmse.", ("version", "metric"))
        for v, f in report.by_version.items():
            requests.labels(m, v).set(f.requests)
            errors.labels(m, v).set(f.errors)
            for q, value in f.latency_ms.items():
                latency.labels(m, v, _quantile(q)).set(value)
            for name, value in _quality(f):
                quality.labels(m, v, name).set(value)
    if not report.comparisons:
        return
    pair = ("candidate", "primary")
    doc = "Shadow candidate vs primary: "
    agreement = gauge("shadow_agreement_ratio", doc + "share of compared answers agreeing.", pair)
    counts = gauge("shadow_requests", doc + "mirrored, compared and agreed requests.",
                   (*pair, "outcome"))  # fmt: skip
    side = (*pair, "role")
    errors = gauge("shadow_errors", doc + "failed requests of each role.", side)
    latency = gauge("shadow_latency_milliseconds", doc + "latency.", (*side, "quantile"))
    quality = gauge("shadow_quality", doc + "accuracy, mae or rmse on feedback.", (*side, "metric"))
    for c in report.comparisons:
        key = (m, c.candidate_version, c.primary_version)
        if c.agreement is not None:
            agreement.labels(*key).set(c.agreement)
        for outcome in ("mirrored", "compared", "agreed"):
            counts.labels(*key, outcome).set(getattr(c, outcome))
        for role, f in (("candidate", c.candidate), ("primary", c.primary)):
            errors.labels(*key, role).set(f.errors)
            for q, value in f.latency_ms.items():
                latency.labels(*key, role, _quantile(q)).set(value)
            for name, value in _quality(f):
                quality.labels(*key, role, name).set(value)


def _quantile(name: str) -> str:
    return str(int(name[1:]) / 100)


def _quality(f: VersionFigures) -> list[tuple[str, float]]:
    pairs = (("accuracy", f.accuracy), ("mae", f.mae), ("rmse", f.rmse))
    return [(name, value) for name, value in pairs if value is not None]


def write_textfile(report: Report, path: str | Path) -> None:
    """Write the gauges in the text exposition format (node_exporter's textfile collector)."""
    prom = require("prometheus_client", "store")
    prom.write_to_textfile(str(path), report_registry(report))
