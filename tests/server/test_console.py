"""The console's routes on a real server (uvicorn on a loopback port): static files from inside
the package, the token, the live figures computed from the server's own metrics, and the report
from its prediction log. The page itself runs in a real browser in test_console_browser.py."""

from __future__ import annotations

import io
import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import httpx
import numpy as np
import pytest

from modelport.server.console import CONSOLE_FILES, DOCS_FILES
from modelport.server.live import quantile
from modelport.server.serve import build_dataplane
from modelport.settings import Settings
from tests.builders import onnx_mlp
from tests.server.conftest import LiveServer, infer_body, start

STATIC = resources.files("modelport.server") / "static"
X = (np.arange(40, dtype=np.float32).reshape(10, 4) % 7) / 2


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small model, ``tiny`` (input ``x`` FP32 [-1, 4]): quick to start servers on."""
    root = tmp_path_factory.mktemp("console")
    (root / "tiny").mkdir()
    onnx_mlp(root / "tiny" / "model.onnx", [4, 8, 3])
    return root / "tiny"


@pytest.fixture(scope="module")
def live(tiny_repo: Path) -> Iterator[LiveServer]:
    with start(tiny_repo) as server:
        yield server


@pytest.fixture
def client(live: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, timeout=30) as c:
        yield c


# -- percentiles -----------------------------------------------------------------------------


def test_quantile_interpolates_inside_buckets_as_histogram_quantile_does() -> None:
    buckets = {0.1: 10.0, 0.2: 30.0, 0.5: 40.0, math.inf: 40.0}
    assert quantile(0.5, buckets) == pytest.approx(0.15)  # rank 20 in (0.1, 0.2]
    assert quantile(0.99, buckets) == pytest.approx(0.2 + 0.3 * 9.6 / 10)  # rank 39.6
    assert quantile(0.5, {1.0: 4.0, math.inf: 4.0}) == pytest.approx(0.5)  # from 0 up
    assert quantile(0.99, {0.1: 1.0, math.inf: 5.0}) == 0.1  # +Inf: the largest finite bound
    assert quantile(0.5, {0.1: 0.0, math.inf: 0.0}) is None
    assert quantile(0.5, {}) is None


# -- static files and the pages ----------------------------------------------------------------


def test_every_listed_static_file_is_served_from_the_package(client: httpx.Client) -> None:
    types = {".js": "text/javascript", ".css": "text/css", ".md": "text/markdown"}
    for path in sorted(DOCS_FILES | CONSOLE_FILES):
        r = client.get(f"/static/{path}")
        assert r.status_code == 200, path
        assert r.content == STATIC.joinpath(*path.split("/")).read_bytes(), path
        want = next((t for s, t in types.items() if path.endswith(s)), "text/plain")
        assert r.headers["content-type"].startswith(want), (path, r.headers["content-type"])
        assert r.headers["x-content-type-options"] == "nosniff"
        again = client.get(f"/static/{path}", headers={"if-none-match": r.headers["etag"]})
        assert again.status_code == 304 and again.content == b"", path


def test_unlisted_paths_are_not_served(client: httpx.Client) -> None:
    for path in ("console.html", "vendor/uplot/package.json", "vendor/x/y", "..%2Fconsole.py"):
        r = client.get(f"/static/{path}")
        assert r.status_code == 404, path
        assert "error" in r.json()


def _references(text: str) -> set[str]:
    found = set(re.findall(r'(?:src|href)="([^"#]+)"', text))
    found |= set(re.findall(r'"(static/[^"]+)"', text))
    return {f for f in found if not f.startswith("data:")}


def test_pages_load_only_files_this_server_serves(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert '<meta name="modelport-auth" content="none">' in page.text
    docs = client.get("/docs")
    assert docs.status_code == 200 and docs.headers["content-security-policy"] == csp
    script = client.get("/static/console.js").text
    referenced = _references(page.text) | _references(docs.text) | _references(script)
    assert {"static/console.js", "static/vendor/swagger-ui/swagger-ui-bundle.js"} <= referenced
    for ref in sorted(referenced):
        assert not re.match(r"^[a-z]+://|^//", ref), f"{ref} leaves the server"
        assert client.get("/" + ref).status_code == 200, ref
    for text in (page.text, docs.text, script, client.get("/static/docs.js").text):
        assert not re.search(r"https?://", text)


def test_console_routes_are_in_the_openapi_document(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/", "/console/api/models", "/console/api/metrics"} <= paths.keys()
    report = paths["/console/api/report/{name}"]["post"]
    assert {p["name"] for p in report["parameters"]} >= {"name", "since", "until", "window"}
    assert "text/html" in report["responses"]["200"]["content"]


# -- the token, and --no-console ---------------------------------------------------------------


def test_the_console_data_needs_the_token_and_its_page_does_not(tiny_repo: Path) -> None:
    with start(tiny_repo, auth_token="s3cret") as server, httpx.Client(base_url=server.url) as c:
        page = c.get("/")
        assert page.status_code == 200
        assert '<meta name="modelport-auth" content="required">' in page.text
        assert c.get("/static/console.js").status_code == 200
        for method, path in (
            ("GET", "/console/api/models"),
            ("GET", "/console/api/metrics"),
            ("POST", "/console/api/report/tiny"),
            ("GET", "/docs"),
        ):
            r = c.request(method, path)
            assert r.status_code == 401, path
            assert r.json() == {"error": "missing or wrong bearer token"}
        auth = {"authorization": "Bearer s3cret"}
        models = c.get("/console/api/models", headers=auth).json()
        assert models["server"]["auth"] is True
        assert c.get("/console/api/metrics", headers=auth).status_code == 200


def test_no_console_leaves_only_the_docs_files(tiny_repo: Path) -> None:
    with start(tiny_repo, console=False) as server, httpx.Client(base_url=server.url) as c:
        for path in ("/", "/console/api/models", "/static/console.js"):
            assert c.get(path).status_code == 404, path
        assert c.get("/static/vendor/swagger-ui/swagger-ui-bundle.js").status_code == 200
        docs = c.get("/docs")
        assert docs.status_code == 200 and "static/vendor/swagger-ui/" in docs.text
        paths = c.get("/openapi.json").json()["paths"]
        assert not any(p == "/" or p.startswith("/console") for p in paths)


def test_settings_and_flag_turn_the_console_off() -> None:
    assert Settings().console is True
    assert Settings.load(environ={"MODELPORT_CONSOLE": "0"}).console is False
    from typer.testing import CliRunner

    from modelport.cli import app

    text = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output
    assert "--no-console" in text and "MODELPORT_CONSOLE" in text


# -- the models and the live figures -----------------------------------------------------------


def test_models_lists_versions_signature_and_server_facts(client: httpx.Client) -> None:
    answer = client.get("/console/api/models").json()
    assert answer["server"]["admin"] is False and answer["server"]["prediction_log"] is False
    (tiny,) = answer["models"]
    assert tiny["name"] == "tiny" and tiny["live"] == "1"
    assert tiny["versions"] == [{"version": "1", "state": "ready", "role": "live"}]
    assert tiny["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert tiny["platform"] == "onnx" and tiny["labels"] is None


def test_live_figures_count_the_requests_the_server_answered(client: httpx.Client) -> None:
    def tiny(answer: dict) -> dict:  # type: ignore[type-arg]
        return next(v for v in answer["versions"] if v["model"] == "tiny")

    before = tiny(client.get("/console/api/metrics", params={"window": 1}).json())
    assert before["role"] == "live" and before["state"] == "ready"
    seconds = []
    for i in range(30):
        started = time.perf_counter()
        r = client.post("/v2/models/tiny/infer", json=infer_body(X[i % 10 : i % 10 + 1]))
        seconds.append(time.perf_counter() - started)
        assert r.status_code == 200
    for _ in range(3):
        assert client.post("/v2/models/tiny/infer", json={"inputs": []}).status_code == 400
    time.sleep(1.05)  # the next reading is a second on, so it is kept
    answer = client.get("/console/api/metrics", params={"window": 1}).json()
    after = tiny(answer)
    assert after["total"]["requests"] - before["total"]["requests"] == 33
    assert after["total"]["errors"] - before["total"]["errors"] == 3
    window = after["window"]
    assert window["requests"] == 33 and window["errors"] == 3
    assert window["rps"] == pytest.approx(33 / answer["window_s"])
    # The server's latency is part of what the client waited; a percentile is at most the
    # upper bound of its histogram bucket.
    assert 0 < window["p50_ms"] <= window["p99_ms"] <= 1000 * _bound_above(max(seconds))
    assert window["batch_mean"] >= 1
    history = after["history"]  # the last point: between this reading and the one before
    assert history["t"][-1] == answer["time"]
    assert history["rps"][-1] == pytest.approx(window["rps"])
    assert answer["in_flight"]["rest"] >= 1  # this very call


def _bound_above(seconds: float) -> float:
    from modelport.server.metrics import _LATENCY_BUCKETS

    return next((b for b in _LATENCY_BUCKETS if b >= seconds), math.inf)


def test_a_bad_window_is_a_clear_400(client: httpx.Client) -> None:
    for value, expected in (("abc", "number"), ("0", "between"), ("nan", "finite")):
        r = client.get("/console/api/metrics", params={"window": value})
        assert r.status_code == 400 and expected in r.json()["error"], value


# -- the report --------------------------------------------------------------------------------


@contextmanager
def logged(path: Path, db: Path) -> Iterator[LiveServer]:
    """A real server on ``path`` whose predictions go to the log database ``db``."""
    from modelport.store.hook import attach

    settings = Settings(model_path=path, grpc_port=None, log_db=str(db), log_writer="thread")
    dataplane = build_dataplane(settings)
    log = attach(dataplane, str(db), writer="thread")
    try:
        with LiveServer(dataplane, settings) as server:
            yield server
    finally:
        log.close()


def test_the_report_of_a_time_range_with_drift_against_an_uploaded_reference(
    tiny_repo: Path, tmp_path: Path
) -> None:
    with (
        logged(tiny_repo, tmp_path / "log.db") as server,
        httpx.Client(base_url=server.url, timeout=60) as c,
    ):
        started = time.time()
        for row in X:
            assert c.post("/v2/models/tiny/infer", json=infer_body(row[None])).status_code == 200
        csv = "a,b,c,d\n" + "\n".join(",".join(f"{v:g}" for v in row) for row in X) + "\n"
        r = c.post(
            "/console/api/report/tiny",
            params={"since": started - 1, "reference": "train.csv", "reference_input": "x"},
            content=csv.encode(),
        )
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/html")
        page = r.text
        assert "<td>requests</td><td>10</td>" in page
        assert len(re.findall(r"<img alt='[^']+' src='data:image/png;base64,", page)) >= 4
        # Served the reference itself: every feature is stable, named from the CSV header.
        for j, name in enumerate("abcd"):
            assert f"<td>{name} (x[{j}])</td><td>input</td><td>0.0000</td><td>stable</td>" in page
        later = c.post("/console/api/report/tiny", params={"since": time.time() + 1})
        assert later.status_code == 200 and "<td>requests</td><td>0</td>" in later.text
        buffer = io.BytesIO()
        np.savez(buffer, x=X)
        npz = c.post(
            "/console/api/report/tiny", params={"reference": "ref.npz"}, content=buffer.getvalue()
        )
        assert npz.status_code == 200 and "<td>x[0]</td><td>input</td>" in npz.text


def test_report_errors_are_clear(tiny_repo: Path, tmp_path: Path, client: httpx.Client) -> None:
    no_log = client.post("/console/api/report/tiny")
    assert no_log.status_code == 404 and "--log-predictions" in no_log.json()["error"]
    with logged(tiny_repo, tmp_path / "log.db") as server, httpx.Client(base_url=server.url) as c:
        cases = [
            ({"since": "10", "until": "5"}, b"", "since must be before until"),
            ({"since": "yesterday"}, b"", "ISO 8601"),
            ({"window": "0.5"}, b"", "at least 1 second"),
            ({"reference": "ref.txt"}, b"1,2\n", ".csv, .npz or .npy"),
            ({}, b"1,2\n", "name the reference file"),
            ({"reference": "ref.npz"}, b"not a zip", "reference ref.npz"),
            ({"reference": "ref.csv"}, b"a,b\n1,2,3\n", "reference ref.csv"),
        ]
        for params, body, expected in cases:
            r = c.post("/console/api/report/tiny", params=params, content=body)
            assert r.status_code == 400, (params, r.text)
            assert expected in r.json()["error"], (params, r.json())
        unknown = c.post("/console/api/report/nope")
        assert unknown.status_code == 404 and "unknown model 'nope'" in unknown.json()["error"]
