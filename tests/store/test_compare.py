"""The report split per version, shadow rows kept out of traffic, candidate vs primary.

A known log on both databases: version 1 live, version 2 a canary (traffic), version 3 a
shadow of version 1 (logged as the traffic path's shadow mirror logs it); every figure is
checked exactly.
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from modelport.report import Report, build_report, print_report, render_html, report_registry
from modelport.store import PredictionLog, PredictionRecord

T0 = 1_767_225_600.0


def _probs(cls: int) -> np.ndarray:
    return np.eye(3, dtype=np.float32)[[cls]] * 0.8 + 0.05


def _record(
    rid: str, version: str, cls: int | None, latency: float, t: float, **kw: Any
) -> PredictionRecord:
    return PredictionRecord(
        request_id=rid,
        model="clf",
        version=version,
        inputs={"x": np.array([[float(len(rid)), 1.0]])},
        outputs=None if cls is None else {"probs": _probs(cls)},
        latency_ms=latency,
        time=t,
        status="ok" if cls is not None else "ValueError",
        **kw,
    )


def fill(url: str, spool: Path) -> None:
    """r0..r9 on version 1 (class k % 3), mirrored to shadow version 3 (agrees for k < 6,
    says (k + 1) % 3 for k = 6..8, fails on r9); c0..c4 on canary version 2 (class 0, c4
    fails)."""
    with PredictionLog.open(url, spool_dir=spool) as log:
        for k in range(10):
            log.record(_record(f"r{k}", "1", k % 3, 1.0 + k, T0 + k))
            said = None if k == 9 else k % 3 if k < 6 else (k + 1) % 3
            agrees = None if said is None else said == k % 3
            meta = {"shadow": True, "primary_version": "1", "agrees": agrees}
            log.record(_record(f"r{k}", "3", said, 100.0 + k, T0 + k + 0.5, metadata=meta))
        for k in range(5):
            log.record(_record(f"c{k}", "2", None if k == 4 else 0, 20.0 + k, T0 + 20 + k))
        assert log.flush(timeout=30)
        for k in (0, 1, 2, 3, 6, 7, 9):
            log.feedback(f"r{k}", k % 3)  # version 1 is right on all seven
        for rid, truth in (("c0", 0), ("c1", 0), ("c2", 1)):
            log.feedback(rid, truth)  # the canary: two right, one wrong


@pytest.fixture
def report(db_url: str, tmp_path: Path) -> Report:
    fill(db_url, tmp_path / "spool")
    with PredictionLog.open(db_url, spool_dir=tmp_path / "read") as log:
        return build_report("clf", list(log.predictions("clf")), window_s=3600)


def test_shadow_rows_are_not_traffic(report: Report) -> None:
    assert (report.requests, report.errors, report.shadow_rows) == (15, 1, 10)
    assert report.versions == {"1": 10, "2": 5}
    traffic = np.concatenate([np.arange(1.0, 11.0), np.arange(20.0, 25.0)])
    assert report.latency_ms["p99"] == pytest.approx(np.percentile(traffic, 99))
    assert report.accuracy == pytest.approx(9 / 10) and report.feedback_rows == 10
    assert [(w.requests, w.feedback) for w in report.windows] == [(15, 10)]


def test_figures_per_version(report: Report) -> None:
    live, canary = report.by_version["1"], report.by_version["2"]
    assert list(report.by_version) == ["1", "2"]
    assert (live.requests, live.errors, live.feedback_rows, live.accuracy) == (10, 0, 7, 1.0)
    assert live.latency_ms["p50"] == pytest.approx(5.5)
    assert (canary.requests, canary.errors, canary.feedback_rows) == (5, 1, 3)
    assert canary.accuracy == pytest.approx(2 / 3)
    assert canary.latency_ms["p90"] == pytest.approx(np.percentile(np.arange(20.0, 25.0), 90))


def test_candidate_against_primary(report: Report) -> None:
    (c,) = report.comparisons
    assert (c.candidate_version, c.primary_version) == ("3", "1")
    assert (c.mirrored, c.compared, c.agreed) == (10, 9, 6)
    assert c.agreement == pytest.approx(6 / 9)
    cand, prim = c.candidate, c.primary
    assert (cand.requests, cand.errors, prim.requests, prim.errors) == (10, 1, 10, 0)
    shadow_latency = np.arange(100.0, 110.0)
    for q, p in (("p50", 50), ("p90", 90), ("p99", 99)):
        assert cand.latency_ms[q] == pytest.approx(np.percentile(shadow_latency, p))
        assert prim.latency_ms[q] == pytest.approx(np.percentile(np.arange(1.0, 11.0), p))
    # Feedback on r0-r3, r6, r7 and r9; the candidate failed r9 and was wrong on r6 and r7.
    assert cand.feedback_rows == 6 and cand.accuracy == pytest.approx(4 / 6)
    assert (prim.feedback_rows, prim.accuracy) == (7, 1.0)


def test_rendered_in_terminal_html_and_prometheus(report: Report) -> None:
    console = Console(record=True, width=200)
    print_report(report, console)
    text = console.export_text()
    assert "requests: 15  errors: 1" in text and "versions: 1 (10), 2 (5)" in text
    assert "traffic per version" in text
    assert "shadow 3 vs primary 1: agreement 0.667 (6 of 9 compared, 10 mirrored)" in text
    rows = [re.split(r"\s{2,}", line.strip()) for line in text.splitlines()]
    cells = {c[0]: c[1:] for c in rows if c[0].startswith(("candidate ", "primary ")) and c[1:]}
    assert cells == {
        "candidate 3": ["10", "1", "104.50", "108.10", "108.91", "6", "0.667"],
        "primary 1": ["10", "0", "5.50", "9.10", "9.91", "7", "1.000"],
    }

    page = render_html(report)
    assert "<h2>Shadow 3 vs primary 1</h2>" in page
    assert "agreement 0.6667: 6 of 9 compared answers agree (10 requests mirrored)" in page
    assert "<td>candidate</td><td>3</td><td>10</td><td>1</td>" in page
    assert "<h2>Traffic per version</h2>" in page
    from PIL import Image

    (png,) = re.findall(
        r"<h2>Shadow latency: candidate 3 vs primary 1</h2><img alt='[^']*' "
        r"src='data:image/png;base64,([^']+)'",
        page,
    )
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(png))).convert("RGB"))
    assert pixels.shape[1] >= 300 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20

    registry = report_registry(report)

    def value(name: str, **labels: str) -> Any:
        return registry.get_sample_value(f"modelport_report_{name}", {"model": "clf", **labels})

    assert value("requests") == 15
    assert value("version_requests", version="2") == 5
    assert value("version_quality", version="2", metric="accuracy") == pytest.approx(2 / 3)
    pair = {"candidate": "3", "primary": "1"}
    assert value("shadow_agreement_ratio", **pair) == pytest.approx(6 / 9)
    assert value("shadow_requests", **pair, outcome="mirrored") == 10
    assert value("shadow_errors", **pair, role="candidate") == 1
    assert value("shadow_latency_milliseconds", **pair, role="candidate", quantile="0.5") == (
        pytest.approx(104.5)
    )
    assert value("shadow_quality", **pair, role="primary", metric="accuracy") == 1.0
    assert value("version_requests", version="3") is None  # the shadow is not traffic
