"""Prometheus metrics for ``/metrics``: requests, latency, queue wait, batch size, depth."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from .._deps import require
from ..runtime.registry import ModelRegistry
from ..runtime.runner import ModelRunner
from .gpu_metrics import gpu_collector

__all__ = ["CONTENT_TYPE", "PrometheusMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class PrometheusMetrics:
    """The server's metrics in their own registry (several servers may share a process)."""

    def __init__(self) -> None:
        prom = require("prometheus_client", extra="serve")
        self._prom = prom
        self.registry = prom.CollectorRegistry(auto_describe=True)
        gpus = gpu_collector(prom)  # GPU utilisation and memory where NVML finds GPUs
        if gpus is not None:
            self.registry.register(gpus)
        model = ["model", "version"]
        self._requests = prom.Counter(
            "modelport_requests",
            "Inference requests by model, version, protocol and status.",
            [*model, "protocol", "status"],
            registry=self.registry,
        )
        self._latency = prom.Histogram(
            "modelport_request_duration_seconds",
            "Time from request received to response ready.",
            [*model, "protocol"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._queue_wait = prom.Histogram(
            "modelport_queue_wait_seconds",
            "Time a request waited in its model's batch queue.",
            model,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._batch_size = prom.Histogram(
            "modelport_batch_size",
            "Rows per framework call made by the dynamic batcher.",
            model,
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self._queue_depth = prom.Gauge(
            "modelport_queue_depth",
            "Requests waiting in a model's batch queue.",
            model,
            registry=self.registry,
        )
        self._in_flight = prom.Gauge(
            "modelport_requests_in_flight",
            "Requests being handled, by protocol.",
            ["protocol"],
            registry=self.registry,
        )
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_batch(
        self, model: str, version: str, rows: int, queue_waits: Sequence[float]
    ) -> None:
        self._child(self._batch_size, model, version).observe(rows)
        wait = self._child(self._queue_wait, model, version)
        for seconds in queue_waits:
            wait.observe(seconds)

    def observe_request(
        self, model: str, version: str, protocol: str, status: str, seconds: float
    ) -> None:
        self._child(self._requests, model, version, protocol, status).inc()
        self._child(self._latency, model, version, protocol).observe(seconds)

    def track_models(self, registry: ModelRegistry) -> None:
        """Report each model's queue depth, read when scraped (no cost per request)."""
        for runner in registry.runners():
            batcher = runner.batcher
            self._queue_depth.labels(runner.name, runner.version).set_function(
                lambda b=batcher: b.depth
            )

    def track_runner(self, runner: ModelRunner) -> None:
        """Report the queue depth of a runner added while serving (a new version)."""
        batcher = runner.batcher
        self._queue_depth.labels(runner.name, runner.version).set_function(
            lambda b=batcher: b.depth
        )

    def forget_runner(self, runner: ModelRunner) -> None:
        """Stop reporting an unloaded runner (and release what the gauge holds of it)."""
        with contextlib.suppress(KeyError):
            self._queue_depth.remove(runner.name, runner.version)

    def track_in_flight(self, protocol: str, count: Callable[[], float]) -> None:
        """Report ``count()`` as the requests in flight for ``protocol``."""
        self._in_flight.labels(protocol).set_function(count)

    def track_refusals(self, count: Callable[[], float]) -> None:
        """Report ``count()`` as the requests refused past ``max_concurrency`` (HTTP and gRPC)."""
        family = self._prom.metrics_core.CounterMetricFamily
        help_text = "Inference requests refused past max_concurrency (503, RESOURCE_EXHAUSTED)."

        class _Refusals:
            def collect(self) -> Any:
                yield family("modelport_requests_refused", help_text, value=count())

        self.registry.register(_Refusals())

    def render(self) -> bytes:
        """The text exposition format."""
        data: bytes = self._prom.generate_latest(self.registry)
        return data
