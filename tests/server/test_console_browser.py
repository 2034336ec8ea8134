"""The console in a real browser: Debian's Chromium driven by Playwright (no browser download),
against a real ``modelport serve`` of the demo model with a token, the admin API and a
prediction log. Every request the browser makes is recorded: none may leave the server, and
the page may log no error. Screenshots of each page go to ``build/screenshots/`` (git-ignored;
``MODELPORT_SCREENSHOTS`` names another folder) for a person to look at.

The tests share one server and one browser page, and run in the order written.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import expect, sync_playwright

from tests.conftest import need
from tests.server.test_serve import serving

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "demo" / "iris"
TOKEN = "console-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
"""The README's flower (a setosa)."""
WAIT_MS = 15_000

CHROMIUM = shutil.which("chromium")

PIXELS = """
import numpy as np
from modelport import Model, Signature, TensorSpec


class Pixels(Model):
    '''The mean of an RGB image's pixels: what the try-it form's image upload sends.'''

    signature = Signature(
        inputs=(TensorSpec("image", "UINT8", (-1, 16, 16, 3)),),
        outputs=(TensorSpec("mean", "FP32", (-1, 3)),),
    )

    def predict(self, inputs):
        return {"mean": inputs["image"].mean(axis=(1, 2)).astype(np.float32)}
"""


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A one-colour PNG, written with the standard library."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )  # fmt: skip


def _readme_flower() -> dict[str, float]:
    readme = (ROOT / "README.md").read_text()
    command = "curl -s localhost:8080/v2/models/iris/predict"
    line = next(x for x in readme.splitlines() if x.startswith(command))
    found: dict[str, float] = json.loads(line.split("-d '", 1)[1].rsplit("'", 1)[0])
    return found


@pytest.fixture(scope="module")
def screenshots() -> Path:
    folder = Path(os.environ.get("MODELPORT_SCREENSHOTS") or ROOT / "build" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``modelport serve`` on a repository of the demo model in two versions, 1 and 2."""
    need(CHROMIUM is not None, "chromium", "Debian's chromium package drives the console tests")
    repo = tmp_path_factory.mktemp("console-repo")
    for version in ("1", "2"):
        shutil.copytree(DEMO, repo / "iris" / version, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "pixels").mkdir()
    (repo / "pixels" / "model.py").write_text(PIXELS)
    db = tmp_path_factory.mktemp("console-log") / "log.db"
    args = [str(repo), "--auth-token", TOKEN, "--admin", "--log-db", str(db)]
    with serving(args, env={"MODELPORT_WATCH_INTERVAL": "60"}) as (_proc, url):
        yield url


class Browser:
    """One Chromium page, with every request it makes and every error it logs."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.requests: list[str] = []
        self.errors: list[str] = []
        page.context.on("request", lambda r: self.requests.append(r.url))
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(str(e)))


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        context = chromium.new_context(viewport={"width": 1400, "height": 900})
        context.set_default_timeout(WAIT_MS)
        try:
            yield Browser(context.new_page())
        finally:
            context.close()
            chromium.close()


@pytest.fixture(autouse=True)
def _nothing_leaves_the_server(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test: no request to another host, no error in the page's console."""
    yield
    if "browser" not in request.fixturenames:
        return
    browser: Browser = request.getfixturevalue("browser")
    origin = urlsplit(request.getfixturevalue("server")).netloc
    elsewhere = [
        u for u in browser.requests if urlsplit(u).scheme in ("http", "https", "ws", "wss")
        and urlsplit(u).netloc != origin
    ]  # fmt: skip
    assert elsewhere == []
    assert browser.errors == []


def _models_sum(server: str) -> float:
    text = httpx.get(f"{server}/metrics", headers=AUTH).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('modelport_requests_total{model="iris"')
    )


def test_the_console_asks_for_the_token_then_lists_the_models(
    browser: Browser, server: str, screenshots: Path
) -> None:
    page = browser.page
    page.goto(server + "/")
    page.locator("#signin").wait_for(state="visible")
    page.screenshot(path=screenshots / "signin.png")
    page.fill("#token", TOKEN)
    page.click("#signin button")
    card = page.locator('article[data-model="iris"]')
    card.wait_for()
    assert "Iris species" in card.inner_text()
    assert "input FP32 [-1, 4]" in card.inner_text()
    for version in ("1", "2"):
        card.locator(f'tr[data-version="{version}"]').wait_for()
    live = card.locator('tr[data-version="2"]')
    assert "live" in live.inner_text() and "ready" in live.inner_text()
    assert card.locator('tr[data-version="1"] button', has_text="canary").count() == 1
    page.screenshot(path=screenshots / "models.png", full_page=True)


def test_the_try_it_form_answers_setosa_for_the_readme_flower(
    browser: Browser, screenshots: Path
) -> None:
    assert _readme_flower() == FLOWER
    page = browser.page
    page.click('nav a[data-tab="try"]')
    page.locator("#try-fields input").first.wait_for()
    page.fill("#try-json", json.dumps(FLOWER))
    page.click("#try-predict")
    expect(page.locator("#try-answer")).to_contain_text("setosa")
    answer = json.loads(page.inner_text("#try-answer"))
    assert answer[0]["species"] == "setosa"
    status = page.locator("#try-status")
    assert status.inner_text().startswith("200 OK from /v2/models/iris/predict in ")
    assert float(status.get_attribute("data-ms") or "nan") > 0
    # The V2 form: the four fields of input [-1, 4] built from the signature.
    fields = page.locator('#try-fields input[data-input="input"]')
    assert fields.count() == 4
    for k, value in enumerate(FLOWER.values()):
        fields.nth(k).fill(str(value))
    page.click("#try-infer")
    expect(page.locator("#try-labels")).to_contain_text("setosa")
    assert page.inner_text("#try-labels") == "label: 0 → setosa"
    outputs = json.loads(page.inner_text("#try-answer"))["outputs"]
    assert [o["name"] for o in outputs] == ["label", "probabilities"]
    assert page.inner_text("#try-status").startswith("200 OK from /v2/models/iris/infer in ")
    page.screenshot(path=screenshots / "try-it.png", full_page=True)


def test_the_try_it_form_sends_an_uploaded_image(
    browser: Browser, screenshots: Path, tmp_path: Path
) -> None:
    page = browser.page
    page.select_option("#try-model", "pixels")
    upload = page.locator('#try-fields input[type="file"][data-input="image"]')
    upload.wait_for()
    picture = tmp_path / "orange.png"
    picture.write_bytes(png(40, 30, (255, 128, 0)))  # scaled to the input's 16 x 16
    upload.set_input_files(str(picture))
    page.wait_for_function(
        "() => document.querySelector('#try-fields canvas.preview').width === 16"
    )
    page.click("#try-infer")
    expect(page.locator("#try-status")).to_contain_text("200 OK from /v2/models/pixels/infer")
    (output,) = json.loads(page.inner_text("#try-answer"))["outputs"]
    assert output["shape"] == [1, 3] and output["data"] == [255, 128, 0]
    page.screenshot(path=screenshots / "try-it-image.png", full_page=True)
    page.select_option("#try-model", "iris")


def test_the_live_metrics_show_100_requests(
    browser: Browser, server: str, screenshots: Path
) -> None:
    page = browser.page
    page.click('nav a[data-tab="metrics"]')
    page.locator('#metrics-table tr[data-model="iris"]').first.wait_for()
    before = _models_sum(server)
    with httpx.Client(base_url=server, headers=AUTH) as client:
        for _ in range(100):
            assert client.post("/v2/models/iris/predict", json=FLOWER).status_code == 200
    expected = int(before) + 100
    page.wait_for_function(
        """expected => [...document.querySelectorAll(
                '#metrics-table tr[data-model="iris"] td[data-figure="requests"]')]
            .reduce((sum, td) => sum + Number(td.textContent), 0) === expected""",
        arg=expected,
    )
    row = page.locator('#metrics-table tr[data-model="iris"][data-version="2"]')
    page.wait_for_function(
        """() => Number(document.querySelector(
            '#metrics-table tr[data-model="iris"][data-version="2"] td[data-figure="rps"]'
        ).textContent) > 0"""
    )
    p50 = float(row.locator('td[data-figure="p50_ms"]').inner_text())
    p99 = float(row.locator('td[data-figure="p99_ms"]').inner_text())
    assert 0 < p50 <= p99
    assert row.locator('td[data-figure="errors"]').inner_text() == "0"
    for chart in ("chart-rps", "chart-latency", "chart-batch"):
        assert page.locator(f"#{chart} canvas").count() >= 1
    page.screenshot(path=screenshots / "metrics.png", full_page=True)


def test_a_canary_set_through_the_admin_api_appears(
    browser: Browser, server: str, screenshots: Path
) -> None:
    r = httpx.post(
        f"{server}/admin/models/iris/canary", json={"version": "1", "percent": 20}, headers=AUTH,
        timeout=60,
    )  # fmt: skip
    assert r.status_code == 200, r.text
    with httpx.Client(base_url=server, headers=AUTH) as client:
        for _ in range(60):  # about 12 answered by the canary
            assert client.post("/v2/models/iris/predict", json=FLOWER).status_code == 200
    page = browser.page
    page.wait_for_function(
        """() => [...document.querySelectorAll('#metrics-table tr[data-version="1"]')]
            .some(tr => tr.textContent.includes('canary 20%')
                && Number(tr.querySelector('td[data-figure="requests"]').textContent) > 0)"""
    )
    page.screenshot(path=screenshots / "metrics-canary.png", full_page=True)
    page.click('nav a[data-tab="models"]')
    canary = page.locator('article[data-model="iris"] tr[data-version="1"]')
    canary.filter(has_text="canary 20%").wait_for()
    promote = page.locator('article[data-model="iris"] button', has_text="promote canary 1")
    assert promote.count() == 1
    page.screenshot(path=screenshots / "models-canary.png", full_page=True)
    # The console's own admin buttons (with the token it was given): stop the canary.
    page.locator('article[data-model="iris"] button', has_text="stop canary").click()
    expect(canary.locator("td").nth(2)).to_have_text("")  # no role: the canary is gone
    expect(canary.locator("td").nth(1)).to_have_text("available")  # and unloaded
    state = httpx.get(f"{server}/admin/models/iris", headers=AUTH).json()
    assert state["policy"] is None and state["live"] == "2"


def test_the_report_shows_its_plots_and_drift(browser: Browser, screenshots: Path) -> None:
    page = browser.page
    page.click('nav a[data-tab="report"]')
    expect(page.locator("#report-reference-input")).to_have_value("input")
    page.set_input_files("#report-reference", str(ROOT / "demo" / "iris.csv"))
    page.click("#report-build")
    frame = page.frame_locator("#report-frame")
    frame.get_by_role("heading", name="Drift", exact=True).wait_for(timeout=60_000)
    images = frame.locator("img")
    assert images.count() >= 4  # traffic, latency, drift per feature, distributions...
    for k in range(images.count()):
        assert images.nth(k).evaluate("img => img.complete && img.naturalWidth > 0")
    text = frame.locator("body").inner_text()
    assert "sepal_length (input[0])" in text  # named from the reference's header
    assert "Traffic per version" in text  # version 2 and the canary, 1
    assert any(v in text for v in ("stable", "moderate", "drifted"))
    assert "report of iris built in" in page.inner_text("#report-status")
    page.set_viewport_size({"width": 1400, "height": 1800})
    page.screenshot(path=screenshots / "report.png")
    page.set_viewport_size({"width": 1400, "height": 900})


def test_the_api_reference_renders_offline(
    browser: Browser, server: str, screenshots: Path
) -> None:
    page = browser.page
    page.click('nav a[data-tab="api"]')
    page.locator("#swagger .opblock").first.wait_for()
    assert page.locator("#swagger .opblock").count() >= 10
    assert "/v2/models/{name}/infer" in page.inner_text("#swagger")
    page.screenshot(path=screenshots / "api.png")
    # /docs on its own (the token as a header: a browser cannot add one to a page load).
    docs = page.context.browser.new_context(extra_http_headers=AUTH)
    try:
        other = Browser(docs.new_page())
        other.page.goto(server + "/docs")
        other.page.locator("#ui .opblock").first.wait_for()
        other.page.screenshot(path=screenshots / "docs.png")
        origin = urlsplit(server).netloc
        assert {urlsplit(u).netloc for u in other.requests if u.startswith("http")} == {origin}
        assert other.errors == []
    finally:
        docs.close()
