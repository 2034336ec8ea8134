"""The server's own figures from its ``/metrics``: requests it counted and the batches its
dynamic batcher formed (the ``modelport_batch_size`` histogram), read before and after a
phase so that the difference is the phase's."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BatchStats", "Recorder", "Snapshot", "difference", "parse", "snapshot"]

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> Iterable[tuple[str, dict[str, str], float]]:
    """``(name, labels, value)`` of each sample in the Prometheus text format."""
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        labels = dict(_LABEL.findall(match.group(3) or ""))
        try:
            yield match.group(1), labels, float(match.group(4))
        except ValueError:
            continue


@dataclass
class Snapshot:
    """One model's counters at a moment."""

    requests: dict[str, float] = field(default_factory=dict)
    """Requests counted by ``protocol/status``."""
    batches: float = 0.0
    rows: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)
    """Cumulative batch counts by upper bound (``le``)."""


def snapshot(text: str, model: str) -> Snapshot:
    """The counters of ``model`` (every version) in a ``/metrics`` answer."""
    snap = Snapshot()
    for name, labels, value in parse(text):
        if labels.get("model") != model:
            continue
        if name == "modelport_requests_total":
            key = f"{labels.get('protocol', '')}/{labels.get('status', '')}"
            snap.requests[key] = snap.requests.get(key, 0.0) + value
        elif name == "modelport_batch_size_count":
            snap.batches += value
        elif name == "modelport_batch_size_sum":
            snap.rows += value
        elif name == "modelport_batch_size_bucket":
            bound = math.inf if labels.get("le") == "+Inf" else float(labels.get("le", "nan"))
            snap.buckets[bound] = snap.buckets.get(bound, 0.0) + value
    return snap


@dataclass
class BatchStats:
    """What the server counted between two snapshots."""

    requests: int
    """Requests of this model the server answered, every status."""
    statuses: dict[str, int]
    batches: int
    rows: int
    histogram: dict[str, int]
    """Batches by size bucket: ``"<=8": 12`` means 12 batches of 5 to 8 rows."""

    @property
    def mean_batch(self) -> float:
        return self.rows / self.batches if self.batches else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "statuses": self.statuses,
            "batches": self.batches,
            "rows": self.rows,
            "mean_batch": round(self.mean_batch, 3),
            "histogram": self.histogram,
        }


def difference(before: Snapshot, after: Snapshot) -> BatchStats:
    """The counts of the interval between ``before`` and ``after``."""
    statuses = {
        key: round(after.requests.get(key, 0.0) - before.requests.get(key, 0.0))
        for key in sorted(set(after.requests) | set(before.requests))
    }
    statuses = {k: v for k, v in statuses.items() if v}
    histogram: dict[str, int] = {}
    below = 0.0
    for bound in sorted(after.buckets):
        cumulative = after.buckets[bound] - before.buckets.get(bound, 0.0)
        count = round(cumulative - below)
        below = cumulative
        if count:
            histogram["<=inf" if math.isinf(bound) else f"<={bound:g}"] = count
    return BatchStats(
        requests=sum(statuses.values()),
        statuses=statuses,
        batches=round(after.batches - before.batches),
        rows=round(after.rows - before.rows),
        histogram=histogram,
    )


BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, math.inf)
"""The ``modelport_batch_size`` buckets (server/metrics.py), for the in-process recorder."""


class Recorder:
    """The runtime's metrics hooks, counted as ``/metrics`` would show them (in-process)."""

    def __init__(self) -> None:
        self._snap = Snapshot(buckets=dict.fromkeys(BUCKETS, 0.0))

    def observe_batch(
        self, model: str, version: str, rows: int, queue_waits: Sequence[float]
    ) -> None:
        snap = self._snap
        snap.batches += 1
        snap.rows += rows
        for bound in BUCKETS:
            if rows <= bound:
                snap.buckets[bound] += 1

    def observe_request(
        self, model: str, version: str, protocol: str, status: str, seconds: float
    ) -> None:
        key = f"{protocol}/{status}"
        self._snap.requests[key] = self._snap.requests.get(key, 0.0) + 1

    def snapshot(self) -> Snapshot:
        snap = self._snap
        return Snapshot(dict(snap.requests), snap.batches, snap.rows, dict(snap.buckets))
