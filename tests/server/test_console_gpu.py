"""The console's GPU readings: utilisation and memory per device, from the same
``modelport_gpu_*`` series ``/metrics`` exports, in the live API and on the page (a real
Chromium). This machine has no GPU driver, so the collector reads a stand-in for NVML with
two cards (the one in test_gpu_metrics.py, one of whose cards fails to answer); what is
checked is everything after NVML: the collector, the registry, the API and the page."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import prometheus_client as prom
import pytest

from modelport.server.gpu_metrics import GpuCollector
from modelport.server.metrics import PrometheusMetrics
from tests.builders import onnx_mlp
from tests.conftest import need
from tests.server.conftest import LiveServer, start
from tests.server.test_gpu_metrics import Nvml

CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp("console-gpu") / "tiny"
    root.mkdir()
    onnx_mlp(root / "model.onnx", [4, 8, 3])
    server = start(root)
    metrics = server.dataplane.metrics
    assert isinstance(metrics, PrometheusMetrics)
    metrics.registry.register(GpuCollector(Nvml(), prom))
    with server:
        yield server


def test_the_live_api_lists_each_gpu_that_answers(live: LiveServer) -> None:
    answer = httpx.get(f"{live.url}/console/api/metrics", timeout=30).json()
    assert answer["gpus"] == [
        {
            "gpu": "0",
            "name": "NVIDIA H100 80GB HBM3",
            "utilization": 0.37,
            "memory_used_bytes": 3 * 2**30,
            "memory_total_bytes": 80 * 2**30,
        }
    ]  # card 1 raised in NVML: left out, the rest still served


def test_the_page_shows_the_gpu(live: LiveServer, tmp_path: Path) -> None:
    need(CHROMIUM is not None, "chromium", "Debian's chromium package drives the console tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{live.url}/")
            page.click('nav a[data-tab="metrics"]')
            line = page.locator('#gpus li[data-gpu="0"]')
            line.wait_for(timeout=15_000)
            assert line.inner_text() == (
                "GPU 0 (NVIDIA H100 80GB HBM3): 37 % busy, memory 3.0 of 80.0 GiB"
            )
            assert page.locator("#gpus li").count() == 1
            assert errors == []
        finally:
            browser.close()
