"""The console's live figures: requests/s, errors, latency percentiles, batch sizes and queue
depth per model version, over the last seconds; and each GPU's utilisation and memory where
the server exports them (:mod:`.gpu_metrics`).

They come from the server's own Prometheus metrics (what ``/metrics`` exports, merged over
the workers with ``--workers N``), so the request path counts nothing twice. Counters and
histograms only grow, so a figure over a window is the difference of two readings: each
console poll takes a reading (at most one a second), kept for :data:`HISTORY_S`; rates and
percentiles over a window compare the newest reading with the one a window before it.
Percentiles are interpolated inside histogram buckets as PromQL's ``histogram_quantile`` does.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HISTORY_S", "LiveMetrics", "Reading", "Snapshot", "quantile", "read_samples"]

HISTORY_S = 600.0
"""How far back the console's charts go (readings older than this are dropped)."""
MIN_STEP_S = 1.0
"""Readings closer together than this are not kept (several consoles polling)."""

_OK = frozenset({"200", "OK"})
_REQUESTS = "modelport_requests_total"
_LATENCY = "modelport_request_duration_seconds_bucket"
_BATCH_SUM = "modelport_batch_size_sum"
_BATCH_COUNT = "modelport_batch_size_count"
_DEPTH = "modelport_queue_depth"
_IN_FLIGHT = "modelport_requests_in_flight"
_GPU = {
    "modelport_gpu_utilization_ratio": "utilization",
    "modelport_gpu_memory_used_bytes": "memory_used_bytes",
    "modelport_gpu_memory_total_bytes": "memory_total_bytes",
}

Key = tuple[str, str]
"""(model, version)."""


@dataclass
class Reading:
    """One model version's cumulative figures at one moment."""

    requests: float = 0.0
    errors: float = 0.0
    latency: dict[float, float] = field(default_factory=dict)
    """Histogram bucket upper bound (seconds) → cumulative count, summed over protocols."""
    batches: float = 0.0
    batch_rows: float = 0.0
    queue_depth: float = 0.0


@dataclass
class Snapshot:
    """Every model version's :class:`Reading` at time ``t``, and the requests in flight."""

    t: float
    readings: dict[Key, Reading]
    in_flight: dict[str, float]
    gpus: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per GPU index: its ``name``, ``utilization`` (0-1) and memory used and total (bytes)."""


def read_samples(samples: Iterable[tuple[str, Mapping[str, str], float]], t: float) -> Snapshot:
    """A :class:`Snapshot` from Prometheus samples ``(name, labels, value)``."""
    readings: dict[Key, Reading] = {}
    in_flight: dict[str, float] = {}
    gpus: dict[str, dict[str, Any]] = {}
    for name, labels, value in samples:
        if name == _IN_FLIGHT:
            in_flight[labels.get("protocol", "")] = value
            continue
        if name in _GPU:
            gpu = gpus.setdefault(labels.get("gpu", ""), {"name": labels.get("name", "")})
            gpu[_GPU[name]] = value
            continue
        if not name.startswith(("modelport_request", "modelport_batch", _DEPTH)):
            continue
        key = (labels.get("model", ""), labels.get("version", ""))
        if name == _REQUESTS:
            r = readings.setdefault(key, Reading())
            r.requests += value
            if labels.get("status") not in _OK:
                r.errors += value
        elif name == _LATENCY:
            r = readings.setdefault(key, Reading())
            le = float(labels["le"])
            r.latency[le] = r.latency.get(le, 0.0) + value
        elif name == _BATCH_SUM:
            readings.setdefault(key, Reading()).batch_rows += value
        elif name == _BATCH_COUNT:
            readings.setdefault(key, Reading()).batches += value
        elif name == _DEPTH:
            readings.setdefault(key, Reading()).queue_depth = value
    return Snapshot(t, readings, in_flight, gpus)


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The ``q`` quantile of a histogram (upper bound → cumulative count), interpolated
    linearly inside its bucket as ``histogram_quantile`` does; None without observations. One
    in the ``+Inf`` bucket is the largest finite bound."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in ordered:
        if count >= rank and count > below:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def _minus(now: Mapping[float, float], then: Mapping[float, float]) -> dict[float, float]:
    return {le: count - then.get(le, 0.0) for le, count in now.items()}


def _figures(now: Reading, then: Reading | None, seconds: float) -> dict[str, Any]:
    """Rates and percentiles between two readings (``then`` None: since the server started)."""
    base = then or Reading()
    requests = now.requests - base.requests
    batches = now.batches - base.batches
    latency = _minus(now.latency, base.latency)
    p50, p99 = quantile(0.5, latency), quantile(0.99, latency)
    return {
        "requests": requests,
        "errors": now.errors - base.errors,
        "rps": requests / seconds if seconds > 0 else None,
        "errors_per_s": (now.errors - base.errors) / seconds if seconds > 0 else None,
        "p50_ms": None if p50 is None else p50 * 1000,
        "p99_ms": None if p99 is None else p99 * 1000,
        "batch_mean": (now.batch_rows - base.batch_rows) / batches if batches > 0 else None,
    }


class LiveMetrics:
    """The readings one server process keeps for its consoles (thread-safe)."""

    def __init__(self, history_s: float = HISTORY_S, min_step_s: float = MIN_STEP_S) -> None:
        self.history_s = history_s
        self.min_step_s = min_step_s
        self._readings: deque[Snapshot] = deque()
        self._lock = threading.Lock()

    def add(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` (unless the last one is under ``min_step_s`` old); drop old ones."""
        with self._lock:
            if not self._readings or snapshot.t - self._readings[-1].t >= self.min_step_s:
                self._readings.append(snapshot)
            while self._readings and snapshot.t - self._readings[0].t > self.history_s:
                self._readings.popleft()

    def summary(self, now: Snapshot, window_s: float) -> dict[str, Any]:
        """The figures of every model version: totals since start, over the last
        ``window_s`` seconds, and a history of consecutive readings for charts."""
        self.add(now)
        with self._lock:
            kept = list(self._readings)
        base = next((s for s in reversed(kept) if now.t - s.t >= window_s), kept[0])
        span = now.t - base.t
        versions = []
        for key in sorted(now.readings):
            reading = now.readings[key]
            then = base.readings.get(key) if base is not now else None
            window = _figures(reading, then, span) if base is not now else None
            versions.append(
                {
                    "model": key[0],
                    "version": key[1],
                    "queue_depth": reading.queue_depth,
                    "total": _figures(reading, None, 0.0),
                    "window": window,
                    "history": _history(key, kept),
                }
            )
        return {
            "time": now.t,
            "window_s": span if base is not now else 0.0,
            "in_flight": now.in_flight,
            "versions": versions,
            "gpus": [
                {"gpu": index, **now.gpus[index]}
                for index in sorted(now.gpus, key=lambda i: (len(i), i))
            ],
        }


def _history(key: Key, kept: list[Snapshot]) -> dict[str, list[float | None]]:
    """Per consecutive pair of readings: its end time and the figures between the two."""
    out: dict[str, list[float | None]] = {
        k: [] for k in ("t", "rps", "errors_per_s", "p50_ms", "p99_ms", "batch_mean")
    }
    out["queue_depth"] = []
    for before, after in itertools.pairwise(kept):
        now = after.readings.get(key)
        if now is None:
            continue
        f = _figures(now, before.readings.get(key), after.t - before.t)
        out["t"].append(after.t)
        for k in ("rps", "errors_per_s", "p50_ms", "p99_ms", "batch_mean"):
            out[k].append(f[k])
        out["queue_depth"].append(now.queue_depth)
    return out
