"""GPU utilisation and memory for ``/metrics``, read from NVML at each scrape.

``modelport_gpu_utilization_ratio``, ``modelport_gpu_memory_used_bytes`` and
``modelport_gpu_memory_total_bytes``, one series per device the process can see (``gpu``
label: the index, ``name``: the model of card). NVML comes from ``nvidia-ml-py`` (the GPU
bundles install it); without it, or without a driver, nothing is exported and nothing fails.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

__all__ = ["GpuCollector", "gpu_collector"]

log = logging.getLogger("modelport.server")


class GpuCollector:
    """A Prometheus collector over NVML's devices (``nvml``: the ``pynvml`` module)."""

    def __init__(self, nvml: Any, prom: Any) -> None:
        self._nvml = nvml
        self._gauge = prom.metrics_core.GaugeMetricFamily
        self._handles = [
            (i, nvml.nvmlDeviceGetHandleByIndex(i)) for i in range(nvml.nvmlDeviceGetCount())
        ]
        self._names = [_text(nvml.nvmlDeviceGetName(h)) for _, h in self._handles]

    @property
    def devices(self) -> int:
        return len(self._handles)

    def collect(self) -> Iterator[Any]:
        labels = ["gpu", "name"]
        util = self._gauge(
            "modelport_gpu_utilization_ratio",
            "Share of the last sample period the GPU was busy (NVML).",
            labels=labels,
        )
        used = self._gauge("modelport_gpu_memory_used_bytes", "GPU memory in use.", labels=labels)
        total = self._gauge("modelport_gpu_memory_total_bytes", "GPU memory.", labels=labels)
        for (index, handle), name in zip(self._handles, self._names):
            key = [str(index), name]
            try:
                rates = self._nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            except self._nvml.NVMLError as exc:  # a device gone bad must not break /metrics
                log.warning("NVML could not read GPU %d: %s", index, exc)
                continue
            util.add_metric(key, rates.gpu / 100.0)
            used.add_metric(key, float(memory.used))
            total.add_metric(key, float(memory.total))
        yield from (util, used, total)


def gpu_collector(prom: Any) -> GpuCollector | None:
    """A collector for this machine's GPUs, or None without NVML, a driver or a GPU."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        collector = GpuCollector(pynvml, prom)
    except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...: no GPU here
        log.debug("no GPU metrics: %s", exc)
        return None
    if not collector.devices:
        return None
    return collector


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
