"""Canary and shadow on a real server: proportions, isolation of the caller, promotion."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np

from modelport.server.serve import build_dataplane
from modelport.settings import Settings
from modelport.store.db import Database
from modelport.store.hook import attach
from tests.server.conftest import LiveServer, infer_body, tiny_reference
from tests.versions.conftest import (
    AUTH,
    SHADOW_TINY,
    TOKEN,
    fire,
    make_version,
    serve,
    version_status,
    wait_for,
    x_for,
)


def _pinned_with_candidate(repository: Path, client: httpx.Client, **kwargs: object) -> None:
    """Pin version 1, then ship version 2: found, not live."""
    assert client.post("/admin/models/tiny/pin", json={"version": "1"}).status_code == 200
    make_version(repository / "tiny", 2, **kwargs)  # type: ignore[arg-type]
    wait_for(lambda: len(version_status(client)["versions"]) == 2, "version 2 to be found")


def test_canary_takes_its_share_within_binomial_tolerance_then_promotes(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    make_version(root / "tiny", 1, delay=0.0)
    with (
        serve(root, admin=True, auth_token=TOKEN) as server,
        httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as client,
    ):
        _pinned_with_candidate(root, client, delay=0.0)
        r = client.post("/admin/models/tiny/canary", json={"version": "2", "percent": 20})
        assert r.status_code == 200, r.text
        assert r.json()["policy"] == {"kind": "canary", "version": "2", "percent": 20.0}

        n, answered = 1000, {"1": 0, "2": 0}
        for x, r in fire(server.url, n, headers=AUTH):
            assert r.status_code == 200, r.text
            version = r.json()["model_version"]
            answered[version] += 1
            y = np.asarray(r.json()["outputs"][0]["data"], dtype=np.float32).reshape(2, 3)
            np.testing.assert_allclose(y, tiny_reference(x, seed=int(version)), atol=1e-5)
        sigma = math.sqrt(n * 0.2 * 0.8)
        assert abs(answered["2"] - 0.2 * n) <= 4 * sigma, answered
        # Naming a version bypasses the canary.
        r = client.post("/v2/models/tiny/versions/1/infer", json=infer_body(x_for(0)))
        assert r.json()["model_version"] == "1"
        metrics = client.get("/metrics").text
        assert 'modelport_canary_percent{model="tiny",version="2"} 20.0' in metrics

        r = client.post("/admin/models/tiny/promote")
        assert r.status_code == 200, r.text
        assert r.json()["live"] == "2" and r.json()["policy"] is None
        versions = {r.json()["model_version"] for _, r in fire(server.url, 100, headers=AUTH)}
        assert versions == {"2"}
        assert client.get("/v2/models/tiny/versions/1/ready").status_code == 404


def test_shadow_sees_every_request_and_never_reaches_the_caller(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    make_version(root / "tiny", 1, delay=0.0)
    db = tmp_path / "log.db"
    settings = Settings(
        model_path=root,
        grpc_port=None,
        admin=True,
        auth_token=TOKEN,
        watch_interval=0.1,
    )
    dataplane = build_dataplane(settings)
    prediction_log = attach(dataplane, str(db))
    feedback: dict[str, list[int]] = {}
    try:
        with (
            LiveServer(dataplane, settings) as server,
            httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as client,
        ):
            # The shadow: version 1's weights, 20 ms a call, raising on any 13.
            _pinned_with_candidate(root, client, seed=1, model_py=SHADOW_TINY)
            r = client.post("/admin/models/tiny/shadow", json={"version": "2"})
            assert r.status_code == 200, r.text
            assert r.json()["policy"] == {"kind": "shadow", "version": "2"}

            n, unlucky, ids = 120, 0, []
            for i in range(n):
                x = np.full((2, 4), 13.0, dtype=np.float32) if i % 10 == 3 else x_for(i)
                unlucky += i % 10 == 3
                r = client.post("/v2/models/tiny/infer", json=infer_body(x, id=f"req-{i}"))
                assert r.status_code == 200, r.text  # the shadow's failures never show
                assert r.json()["model_version"] == "1"
                y = np.asarray(r.json()["outputs"][0]["data"], dtype=np.float32).reshape(2, 3)
                np.testing.assert_allclose(y, tiny_reference(x, seed=1), atol=1e-5)
                ids.append(r.json()["id"])
                if i < 20:  # ground truth for both rows: wrong for every fourth request
                    said = np.argmax(y, axis=1)
                    truth = (said + (i % 4 == 0)) % 3
                    feedback[r.json()["id"]] = truth.tolist()

            def settled() -> bool:
                s = version_status(client)["shadow"]
                return bool(s["compared"] + s["errors"] == n)

            wait_for(settled, "the shadow to answer every mirrored request")
            for rid, value in feedback.items():
                r = client.post(
                    "/v2/models/tiny/feedback", json={"request_id": rid, "value": value}
                )
                assert r.status_code == 200, r.text
            shadow = version_status(client)["shadow"]
            metrics = client.get("/metrics").text
            r = client.post("/admin/models/tiny/clear")
            assert r.status_code == 200 and r.json()["shadow"] is None
            assert client.get("/v2/models/tiny/versions/2/ready").status_code == 404
    finally:
        prediction_log.close()

    assert shadow["mirrored"] == n and shadow["dropped"] == 0
    assert shadow["errors"] == unlucky
    assert shadow["compared"] == n - unlucky
    assert shadow["agreement"] == 1.0  # same weights: every compared answer agrees
    assert shadow["mean_ms"] is not None and shadow["primary_mean_ms"] is not None
    assert 'modelport_shadow_agreement_ratio{model="tiny",version="2"} 1.0' in metrics
    errors = 'modelport_shadow_requests_total{model="tiny",outcome="error",version="2"}'
    assert f"{errors} {float(unlucky)}" in metrics

    stored = Database(db)
    rows = [(r["request_id"], r["version"], r["status"], r["metadata"])
            for r in stored.prediction_rows("tiny")]  # fmt: skip
    stored.dispose()
    primary = {r[0] for r in rows if r[1] == "1"}
    shadows = [r for r in rows if r[1] == "2"]
    assert primary == set(ids)
    assert {r[0] for r in shadows} == set(ids)  # the candidate saw every request
    meta = [r[3] for r in shadows]
    assert all(m["shadow"] is True and m["primary_version"] == "1" for m in meta)
    assert sum(m["agrees"] is True for m in meta) == n - unlucky
    assert sum(r[2] != "ok" for r in shadows) == unlucky

    # The report keeps the shadow out of traffic and sets it against the primary: requests
    # 0-19 have feedback (two rows each), every fourth one wrong; the shadow failed 3 and 13.
    env = {**os.environ, "COLUMNS": "200"}
    report = subprocess.run(
        [str(Path(sys.executable).parent / "modelport"), "report", "tiny", "--log-db", str(db)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    out = report.stdout
    assert "requests: 120  errors: 0" in out and "versions: 1 (120)" in out, out
    assert "accuracy 0.750 on 40 rows with feedback" in out, out
    compared = n - unlucky
    assert (
        f"shadow 2 vs primary 1: agreement 1.000 ({compared} of {compared} compared, {n} mirrored)"
    ) in out, out
    rows = [re.split(r"\s{2,}", line.strip()) for line in out.splitlines()]
    cells = {c[0]: c[1:] for c in rows if c[0] in ("candidate 2", "primary 1")}
    assert cells["candidate 2"][:2] == ["120", str(unlucky)], out
    assert cells["candidate 2"][-2:] == ["36", f"{26 / 36:.3f}"], out
    assert cells["primary 1"][:2] == ["120", "0"] and cells["primary 1"][-2:] == ["40", "0.750"]
