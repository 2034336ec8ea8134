"""The prediction log's counters as Prometheus metrics (a custom collector, read on scrape)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .._deps import require
from .log import PredictionLog

__all__ = ["PredictionLogCollector"]


class PredictionLogCollector:
    """Register with ``registry.register(PredictionLogCollector(log))``.

    Exposes ``modelport_prediction_log_records_total{outcome}`` (written, spooled, replayed,
    lost, sampled_out), ``modelport_prediction_log_queued``,
    ``modelport_prediction_log_spool_bytes`` and ``modelport_prediction_log_db_up``.
    """

    def __init__(self, log: PredictionLog) -> None:
        require("prometheus_client", "store")
        self.log = log

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.log.stats
        records = CounterMetricFamily(
            "modelport_prediction_log_records",
            "Prediction records by outcome; 'lost' counts records dropped past the spool bound.",
            labels=["outcome"],
        )
        for outcome in ("written", "spooled", "replayed", "lost", "sampled_out"):
            records.add_metric([outcome], getattr(s, outcome))
        yield records
        yield GaugeMetricFamily(
            "modelport_prediction_log_queued", "Records waiting for the writer.", value=s.queued
        )
        yield GaugeMetricFamily(
            "modelport_prediction_log_spool_bytes",
            "Bytes of records spooled on disk while the database is unreachable.",
            value=s.spool_bytes,
        )
        yield GaugeMetricFamily(
            "modelport_prediction_log_db_up",
            "1 if the last database write succeeded.",
            value=1.0 if s.db_up else 0.0,
        )
