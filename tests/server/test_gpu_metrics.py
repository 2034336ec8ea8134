"""GPU metrics from NVML: absent without a driver; one series per device where there is one."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import prometheus_client as prom
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelport.server.gpu_metrics import GpuCollector, gpu_collector
from tests.conftest import skip_unless


def _nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        return bool(pynvml.nvmlDeviceGetCount())
    except Exception:
        return False


GPU = _nvml_works()


@pytest.mark.skipif(GPU, reason="this machine has an NVIDIA driver and GPU")
def test_no_driver_no_gpu_metrics_and_no_failure() -> None:
    pytest.importorskip("pynvml")  # installed by the test extra: the driver is what is missing
    assert gpu_collector(prom) is None


class Nvml:
    """NVML's answers for two cards (this machine has no driver to ask): the collector's
    own logic, its metric names, labels and units, is what is checked."""

    class NVMLError(Exception):
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        if h == 1:
            raise self.NVMLError("GPU is lost")
        return SimpleNamespace(gpu=37, memory=10)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return SimpleNamespace(used=3 * 2**30, total=80 * 2**30, free=77 * 2**30)


def test_the_collector_exports_each_device_and_skips_a_broken_one() -> None:
    registry = prom.CollectorRegistry()
    registry.register(GpuCollector(Nvml(), prom))
    text = prom.generate_latest(registry).decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    labels = (("gpu", "0"), ("name", "NVIDIA H100 80GB HBM3"))
    assert samples == {  # the lost GPU is left out, and the scrape still answers
        ("modelport_gpu_utilization_ratio", labels): 0.37,
        ("modelport_gpu_memory_used_bytes", labels): 3 * 2**30,
        ("modelport_gpu_memory_total_bytes", labels): 80 * 2**30,
    }


@pytest.mark.gpu
@skip_unless(GPU, "gpu", "an NVIDIA driver and GPU")
def test_real_gpus_are_exported() -> None:
    collector = gpu_collector(prom)
    assert collector is not None and collector.devices >= 1
    registry = prom.CollectorRegistry()
    registry.register(collector)
    text = prom.generate_latest(registry).decode()
    assert 'modelport_gpu_memory_total_bytes{gpu="0"' in text
