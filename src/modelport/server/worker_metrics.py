"""``/metrics`` over all worker processes of one server (``--workers N``).

The workers share one listening socket, so a scrape reaches whichever worker the kernel hands
the connection to. Each worker also answers its own figures on a Unix socket in the folder its
supervisor made (mode 0700: this user only); the worker that takes a scrape reads every
other worker's there and merges them with its own, so each scrape shows the whole server.

Merging, per family: counters, histograms and the load gauges are summed; ``_created``
samples take the earliest; the version state (live version, failed versions, canary share,
and the swap and failure counters each worker keeps of the same events) takes the largest;
``modelport_prediction_log_db_up`` the smallest (down if any worker's database is); the
shadow agreement ratio is recomputed from the summed shadow counters. Two families are added:
``modelport_metrics_workers`` (the workers whose figures are in the scrape) and
``modelport_worker_requests{worker}`` (requests each worker answered: how the kernel spread
the connections). A worker that does not answer within :data:`TIMEOUT_S` is left out (and
the first gauge says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["TIMEOUT_S", "WorkerMetrics", "merge"]

log = logging.getLogger("modelport.server")

TIMEOUT_S = 2.0
"""How long a scrape waits for another worker's figures."""

_LARGEST = frozenset({
    "modelport_live_version",
    "modelport_version_failed",
    "modelport_canary_percent",
    "modelport_version_swaps",
    "modelport_version_failures",
})  # fmt: skip
_SMALLEST = frozenset({"modelport_prediction_log_db_up"})
_AGREEMENT = "modelport_shadow_agreement_ratio"
_SHADOW = "modelport_shadow_requests"
_REQUESTS = "modelport_requests_total"
_END = b"# EOF\n"
"""Ends a worker's answer, so one cut short is told from a complete one."""


class WorkerMetrics:
    """One worker's side: serve ``render()`` on a Unix socket in ``folder``, and gather the
    other workers' figures there for a scrape."""

    def __init__(self, folder: str | Path, render: Callable[[], bytes]) -> None:
        self.folder = Path(folder)
        self.render = render
        self.path = self.folder / f"metrics-{os.getpid()}.sock"
        self._server: asyncio.AbstractServer | None = None
        # A Unix socket's path is limited to about 107 bytes, which a long TMPDIR (pytest's,
        # a CI runner's) exceeds; on Linux the folder is reached through a descriptor of it
        # instead, /proc/self/fd/N/NAME, whatever its own path's length.
        self._fd: int | None = None
        if os.path.isdir("/proc/self/fd"):
            self._fd = os.open(self.folder, os.O_RDONLY)

    def address(self, path: Path) -> str:
        """Where to bind or connect for the socket file ``path`` in this folder."""
        if self._fd is None:
            return str(path)
        return f"/proc/self/fd/{self._fd}/{path.name}"

    async def start(self) -> None:
        """Listen on this worker's socket."""

        async def answer(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                writer.write(self.render() + _END)
                await writer.drain()
            finally:
                writer.close()

        self._server = await asyncio.start_unix_server(answer, path=self.address(self.path))

    async def stop(self) -> None:
        """Stop listening and remove the socket."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(OSError):
            self.path.unlink()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    async def gather(self, own: bytes) -> bytes:
        """``own`` figures merged with every other worker's that answer in time."""
        others = sorted(p for p in self.folder.glob("metrics-*.sock") if p != self.path)
        answers = await asyncio.gather(*(_read(self.address(p)) for p in others))
        texts = {str(os.getpid()): own.decode()}
        for path, text in zip(others, answers):
            if text is not None:
                texts[path.stem.removeprefix("metrics-")] = text
        if len(texts) < len(others) + 1:
            log.warning(
                "metrics: %d of %d worker(s) did not answer; this scrape leaves them out",
                len(others) + 1 - len(texts),
                len(others) + 1,
            )
        return merge(texts)


async def _read(address: str) -> str | None:
    """A worker's figures from its socket; None if it does not answer (gone, stuck)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(address), TIMEOUT_S)
    except (OSError, asyncio.TimeoutError):
        return None  # a worker that stopped (its socket file may outlive it)
    try:
        data = await asyncio.wait_for(reader.read(), TIMEOUT_S)
    except (OSError, asyncio.TimeoutError):
        return None
    finally:
        writer.close()
    if not data.endswith(_END):
        return None  # cut short: the worker stopped while answering
    return data[: -len(_END)].decode()


def merge(texts: dict[str, str]) -> bytes:
    """Prometheus text expositions, by worker id, merged into one (see the module's rules)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.parser import text_string_to_metric_families

    parsed = {}
    for worker, text in texts.items():
        try:
            parsed[worker] = list(text_string_to_metric_families(text))
        except ValueError as exc:  # cut short (a worker stopping mid-answer): leave it out
            log.warning("metrics: worker %s answered unreadable figures: %s", worker, exc)
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    per_worker: dict[str, float] = {}
    for worker, found in parsed.items():
        answered = 0.0
        for family in found:
            merged = families.setdefault(
                family.name, Metric(family.name, family.documentation, family.type, family.unit)
            )
            into = values.setdefault(merged.name, {})
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                if sample.name == _REQUESTS:
                    answered += sample.value
                before = into.get(key)
                into[key] = (
                    sample.value if before is None
                    else _combine(family.name, sample.name, before, sample.value)
                )  # fmt: skip
        per_worker[worker] = answered
    _agreement(values)
    for name, family in families.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)
    workers = GaugeMetricFamily(
        "modelport_metrics_workers",
        "Worker processes whose figures are in this scrape.",
        value=len(parsed),
    )
    spread = GaugeMetricFamily(
        "modelport_worker_requests",
        "Requests each worker process answered (how the kernel spread the connections).",
        labels=["worker"],
    )
    for worker, answered in sorted(per_worker.items()):
        spread.add_metric([worker], answered)

    class _Merged:
        def collect(self) -> Iterator[Any]:
            yield from families.values()
            yield workers
            yield spread

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged())
    data: bytes = generate_latest(registry)
    return data


def _combine(family: str, sample: str, a: float, b: float) -> float:
    if sample.endswith("_created"):
        return min(a, b)
    if family in _LARGEST:
        return max(a, b)
    if family in _SMALLEST:
        return min(a, b)
    return a + b


def _agreement(values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]) -> None:
    """The shadow agreement ratio from the summed shadow counters (a sum of ratios is none)."""
    ratios = values.get(_AGREEMENT)
    counts = values.get(_SHADOW, {})
    if not ratios:
        return
    for key in list(ratios):
        labels = dict(key[1])
        agreed = disagreed = 0.0
        for (sample, sample_labels), value in counts.items():
            found = dict(sample_labels)
            if sample.endswith("_total") and all(found.get(k) == v for k, v in labels.items()):
                if found.get("outcome") == "agreed":
                    agreed += value
                elif found.get("outcome") == "disagreed":
                    disagreed += value
        if agreed + disagreed:
            ratios[key] = agreed / (agreed + disagreed)
