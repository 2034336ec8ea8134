"""The report's figures as Prometheus gauges (for a textfile collector or a pushgateway)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._deps import require
from .build import Report

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
        latency.labels(m, str(int(q[1:]) / 100)).set(value)
    gauge("feedback_rows", "Rows with ground truth.").labels(m).set(report.feedback_rows)
    if report.accuracy is not None:
        gauge("accuracy", "Accuracy on rows with feedback.").labels(m).set(report.accuracy)
    if report.mae is not None and report.rmse is not None:
        gauge("mae", "Mean absolute error on rows with feedback.").labels(m).set(report.mae)
        gauge("rmse", "Root mean squared error on rows with feedback.").labels(m).set(report.rmse)
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


def write_textfile(report: Report, path: str | Path) -> None:
    """Write the gauges in the text exposition format (node_exporter's textfile collector)."""
    prom = require("prometheus_client", "store")
    prom.write_to_textfile(str(path), report_registry(report))
