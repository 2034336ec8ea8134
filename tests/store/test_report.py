"""The report on known data: figures checked by hand and against scipy; plots really rendered."""

from __future__ import annotations

import base64
import io
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from modelport.errors import ConfigError
from modelport.report import (
    Report,
    build_report,
    load_reference,
    print_report,
    render_html,
    report_registry,
)
from modelport.report.stats import PSI_EPSILON, ks_2samp, psi
from modelport.store import PredictionLog, PredictionRecord

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC, on an hour boundary


# -- statistics -----------------------------------------------------------------------------


def test_psi_by_hand() -> None:
    reference = np.arange(1000, dtype=float)  # deciles: ten bins of exactly 100 values
    current = np.concatenate([np.full(500, 10.0), np.full(500, 150.0)])  # bins 0 and 1 only
    c, r = 0.5, 0.1
    expected = 2 * (c - r) * math.log(c / r) + 8 * (PSI_EPSILON - r) * math.log(PSI_EPSILON / r)
    assert psi(reference, current) == pytest.approx(expected, rel=1e-12)
    assert psi(reference, reference) == pytest.approx(0.0, abs=1e-12)
    shifted = np.concatenate([np.arange(0, 1000, 2.0), np.arange(0, 1000, 2.0) + 0.5])
    assert psi(reference, shifted) == pytest.approx(0.0, abs=1e-2)  # same distribution


def test_ks_against_scipy() -> None:
    rng = np.random.default_rng(7)
    for n, m, shift in ((500, 300, 0.0), (1000, 1000, 0.15), (60, 90, 0.6), (2000, 150, 0.05)):
        a, b = rng.normal(size=n), rng.normal(shift, size=m)
        d, p = ks_2samp(a, b)
        assert d == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)
        assert p == pytest.approx(stats.kstwobign.sf(d * math.sqrt(n * m / (n + m))), rel=1e-9)
    d, p = ks_2samp(np.zeros(10), np.ones(10))
    assert (d, p < 1e-3) == (1.0, True)


# -- the report on a known log --------------------------------------------------------------


def fill_log(url: str, spool: Path) -> dict[str, np.ndarray]:
    """Three one-hour windows of a 3-class classifier; returns the logged x features."""
    rng = np.random.default_rng(3)
    counts = [10, 20, 6]
    xs = []
    with PredictionLog.open(url, spool_dir=spool) as log:
        k = 0
        for w, n in enumerate(counts):
            for i in range(n):
                x = np.array([[rng.normal(2.0), rng.normal(0.0)]], dtype=np.float64)
                xs.append(x[0])
                cls = k % 3
                y = np.eye(3, dtype=np.float32)[[cls]] * 0.8 + 0.05
                failed = w == 1 and i < 4  # four errors in the second window
                log.record(
                    PredictionRecord(
                        request_id=f"r{k}",
                        model="clf",
                        version="1" if w < 2 else "2",
                        inputs={"x": x},
                        outputs=None if failed else {"probs": y},
                        latency_ms=float(k + 1),
                        time=T0 + w * 3600 + i * 60,
                        status="PredictionError" if failed else "ok",
                    )
                )
                k += 1
        assert log.flush(timeout=30)
        # Feedback: window 0 all 4 right; window 2: 1 right, 1 wrong (true class 0, said 1).
        for j in range(4):
            log.feedback(f"r{j}", j % 3)
        log.feedback("r30", 0)  # 30 % 3 == 0: right
        log.feedback("r31", 0)  # predicted 1: wrong
        log.feedback("r32", [1, 2])  # one row logged, two values: unmatched
    arr = np.asarray(xs)
    return {"x[0]": arr[:, 0], "x[1]": arr[:, 1]}


@pytest.fixture
def known(sqlite_url: str, tmp_path: Path) -> tuple[str, dict[str, np.ndarray]]:
    return sqlite_url, fill_log(sqlite_url, tmp_path / "spool")


def make_report(url: str, tmp_path: Path, **kw: Any) -> Report:
    with PredictionLog.open(url, spool_dir=tmp_path / "read") as log:
        return build_report("clf", list(log.predictions("clf")), **kw)


def test_traffic_errors_latency_and_accuracy(
    known: tuple[str, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    url, _ = known
    report = make_report(url, tmp_path, window_s=3600)
    assert report.requests == 36 and report.errors == 4
    assert report.error_kinds == {"PredictionError": 4}
    assert report.versions == {"1": 30, "2": 6}
    windows = report.windows
    assert [w.start for w in windows] == [T0, T0 + 3600, T0 + 7200]
    assert [(w.requests, w.errors) for w in windows] == [(10, 0), (20, 4), (6, 0)]
    lat = np.arange(1, 37, dtype=float)
    assert report.latency_ms["p90"] == pytest.approx(np.percentile(lat, 90))
    assert windows[1].latency_ms["p50"] == pytest.approx(np.percentile(lat[10:30], 50))
    assert report.task == "classification"
    assert report.accuracy == pytest.approx(5 / 6)
    assert (report.feedback_rows, report.feedback_unmatched) == (6, 1)
    assert [(w.feedback, w.metric) for w in windows] == [(4, 1.0), (0, None), (2, 0.5)]


def test_drift_against_a_reference(
    known: tuple[str, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    url, logged = known
    rng = np.random.default_rng(11)
    ref = {"x[0]": rng.normal(0.0, size=400), "x[1]": rng.normal(0.0, size=400)}
    report = make_report(url, tmp_path, window_s=3600, reference=ref)
    drift = {d.feature: d for d in report.drift}
    assert set(drift) == {"x[0]", "x[1]"}
    for name in drift:
        assert drift[name].psi == pytest.approx(psi(ref[name], logged[name]))
        assert drift[name].ks == pytest.approx(stats.ks_2samp(ref[name], logged[name]).statistic)
        assert drift[name].n_current == 36 and drift[name].kind == "input"
    assert drift["x[0]"].psi > 1.0 and drift["x[0]"].ks_pvalue < 1e-6  # shifted by 2 sd
    assert drift["x[1]"].psi < 0.5 and drift["x[1]"].ks_pvalue > 0.01
    assert report.drift[0].feature == "x[0]"  # worst first
    window_psi = report.windows[0].psi["x[0]"]
    assert window_psi == pytest.approx(psi(ref["x[0]"], logged["x[0]"][:10]))


def test_drift_of_outputs(known: tuple[str, dict[str, np.ndarray]], tmp_path: Path) -> None:
    url, _ = known
    ref = {"probs[1]": np.random.default_rng(5).uniform(size=300)}
    report = make_report(url, tmp_path, reference=ref)
    (drift,) = report.drift
    # Requests 10-13 failed: no outputs. The others said class k % 3 with probability 0.85.
    said = [0.85 if k % 3 == 1 else 0.05 for k in range(36) if not 10 <= k <= 13]
    assert (drift.feature, drift.kind, drift.n_current) == ("probs[1]", "output", 32)
    assert drift.psi == pytest.approx(psi(ref["probs[1]"], np.asarray(said)))
    assert drift.ks == pytest.approx(stats.ks_2samp(ref["probs[1]"], said).statistic)


def test_regression_metrics(sqlite_url: str, tmp_path: Path) -> None:
    truths, preds = [1.0, 2.0, 4.0], [1.5, 2.0, 1.0]
    with PredictionLog.open(sqlite_url, spool_dir=tmp_path / "s") as log:
        for i, p in enumerate(preds):
            log.record(
                PredictionRecord(
                    request_id=f"q{i}",
                    model="reg",
                    version="1",
                    inputs={"x": np.ones((1, 2))},
                    outputs={"y": np.array([p])},
                    time=T0 + i,
                )
            )
        for i, t in enumerate(truths):
            log.feedback(f"q{i}", t)
        report = build_report("reg", log.predictions("reg"))
    assert report.task == "regression"
    assert report.mae == pytest.approx((0.5 + 0 + 3) / 3)
    assert report.rmse == pytest.approx(math.sqrt((0.25 + 0 + 9) / 3))


# -- renderings -----------------------------------------------------------------------------


def test_html_plots_are_rendered_images(
    known: tuple[str, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    from PIL import Image

    url, _ = known
    ref = {"x[0]": np.random.default_rng(1).normal(size=300)}
    page = render_html(make_report(url, tmp_path, window_s=3600, reference=ref))
    images = re.findall(
        r"<h2>([^<]+)</h2><img alt='[^']*' src='data:image/png;base64,([^']+)'", page
    )
    titles = [t for t, _ in images]
    assert titles == [
        "Traffic and errors",
        "Latency percentiles",
        "Accuracy over time",
        "Drift (PSI) per feature",
        "Drift over time",
        "Distributions: reference vs logged",
    ]
    for title, data in images:
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("RGB"))
        assert pixels.shape[0] >= 100 and pixels.shape[1] >= 300, title
        colours = np.unique(pixels.reshape(-1, 3), axis=0)
        assert len(colours) > 20, f"{title} looks blank"
        assert (pixels < 250).any(axis=2).mean() > 0.02, f"{title} has almost nothing drawn"


def test_prometheus_gauges(known: tuple[str, dict[str, np.ndarray]], tmp_path: Path) -> None:
    url, logged = known
    ref = {"x[0]": np.random.default_rng(1).normal(size=300)}
    report = make_report(url, tmp_path, reference=ref)
    registry = report_registry(report)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(f"modelport_report_{name}", {"model": "clf", **labels})

    assert value("requests") == 36 and value("errors") == 4
    assert value("error_ratio") == pytest.approx(4 / 36)
    assert value("latency_milliseconds", quantile="0.99") == pytest.approx(
        np.percentile(np.arange(1, 37), 99)
    )
    assert value("accuracy") == pytest.approx(5 / 6)
    assert value("drift_psi", feature="x[0]", kind="input") == pytest.approx(
        psi(ref["x[0]"], logged["x[0]"])
    )
    assert value("mae") is None


# -- reference files ------------------------------------------------------------------------


def test_reference_formats(tmp_path: Path) -> None:
    data = np.arange(12, dtype=float).reshape(6, 2)
    np.savez(tmp_path / "r.npz", x=data, y=np.arange(6))
    np.save(tmp_path / "r.npy", data)
    (tmp_path / "r.csv").write_text("x[0],x[1]\n" + "\n".join(f"{a},{b}" for a, b in data))
    from_npz = load_reference(tmp_path / "r.npz")
    assert set(from_npz) == {"x[0]", "x[1]", "y"}
    for loaded in (
        from_npz,
        load_reference(tmp_path / "r.npy", "x"),
        load_reference(tmp_path / "r.csv"),
    ):
        np.testing.assert_array_equal(loaded["x[1]"], data[:, 1])
    np.testing.assert_array_equal(load_reference(tmp_path / "r.csv", "x")["x[0]"], data[:, 0])


@pytest.mark.parametrize(
    ("name", "content", "input_name", "message"),
    [
        ("missing.npz", None, None, "does not exist"),
        ("r.parquet", "x", None, "use a .npz, .npy or .csv file"),
        ("r.npy", "npy", None, "needs the input's name"),
        ("r.csv", "a,b\n1,2,3\n", None, "header has 2 columns, rows have 3"),
        ("r.csv", "a,b\n1,oops\n", None, "cannot read reference data set"),
    ],
)
def test_bad_reference_files(
    tmp_path: Path, name: str, content: str | None, input_name: str | None, message: str
) -> None:
    path = tmp_path / name
    if content == "npy":
        np.save(path, np.zeros((2, 2)))
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_reference(path, input_name)


@pytest.mark.parametrize("ref_dtype", [np.float32, np.float64])
def test_float32_inputs_served_back_show_no_drift(
    sqlite_url: str, tmp_path: Path, ref_dtype: type
) -> None:
    # Iris-like measurements (one decimal) as a float32 model takes them. The log keeps each
    # float32 as its shortest decimal ("5.1"); read back as float64 it differed from the
    # float32 reference widened (5.099999904632568), and values at bin edges changed bins.
    data = np.round(np.random.default_rng(7).uniform(4.0, 8.0, size=(150, 4)), 1)
    x = data.astype(np.float32)
    with PredictionLog.open(sqlite_url, spool_dir=tmp_path / "spool") as log:
        for i in range(0, 150, 10):
            log.record(
                PredictionRecord(
                    request_id=f"f{i}",
                    model="clf",
                    version="1",
                    inputs={"x": x[i : i + 10]},
                    outputs={"y": x[i : i + 10, :1]},
                    latency_ms=1.0,
                    time=T0 + i,
                )
            )
        assert log.flush(timeout=30)
    reference = {"x": (x if ref_dtype is np.float32 else data).astype(ref_dtype)}
    tmp_ref = tmp_path / "ref.npz"
    np.savez(tmp_ref, **reference)
    report = make_report(sqlite_url, tmp_path, reference=load_reference(tmp_ref))
    drift = {d.feature: d for d in report.drift}
    assert set(drift) == {f"x[{j}]" for j in range(4)}
    for d in drift.values():
        assert d.n_current == 150
        assert d.psi == pytest.approx(0.0, abs=1e-12), d.feature
        assert d.ks == 0.0, d.feature


def test_a_class_name_against_class_indices_is_unmatched_not_wrong(
    known: tuple[str, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    # `modelport feedback` writes to the database without the model: a name there cannot be
    # turned into an index, and must not count as a wrong answer.
    url, _ = known
    before = make_report(url, tmp_path)
    with PredictionLog.open(url, spool_dir=tmp_path / "fb") as log:
        log.feedback("r5", "versicolor")
    after = make_report(url, tmp_path)
    assert after.accuracy == before.accuracy == pytest.approx(5 / 6)
    assert after.feedback_unmatched == before.feedback_unmatched + 1


def test_rendered_for_a_person(known: tuple[str, dict[str, np.ndarray]], tmp_path: Path) -> None:
    from rich.console import Console

    url, _ = known
    rng = np.random.default_rng(11)
    ref = {"x[0]": rng.normal(0.0, size=400), "x[1]": rng.normal(0.0, size=400)}
    report = make_report(
        url, tmp_path, window_s=3600, reference=ref, feature_names={"x[0]": "sepal_length"}
    )
    assert [d.verdict for d in report.drift] == ["drifted", "drifted"]
    console = Console(record=True, width=80)
    print_report(report, console)
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    assert re.search(r"window \(UTC\)\s+requests\s+errors\s+p50 ms.*accuracy", text)
    assert re.search(r"sepal_length \(x\[0\]\)\s+\d+\.\d{4}\s+drifted", text)
    assert "PSI up to 0.1 stable, up to 0.25 moderate" in text
    page = render_html(report)
    assert "<th>verdict</th>" in page and "<td>sepal_length (x[0])</td>" in page
    assert "<td>drifted</td>" in page


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.0, "stable"), (0.1, "stable"), (0.1001, "moderate"), (0.25, "moderate"), (0.26, "drifted")],
)
def test_psi_verdicts(value: float, expected: str) -> None:
    from modelport.report.stats import verdict

    assert verdict(value) == expected
