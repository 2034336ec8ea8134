"""A broken new version never goes live: it is reported, and serving goes on untouched."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.builders import onnx_mlp
from tests.server.conftest import TINY, infer_body, write
from tests.versions.conftest import (
    AUTH,
    BROKEN_PREDICT,
    TOKEN,
    Load,
    make_version,
    serve,
    version_status,
    wait_for,
    x_for,
)


def _corrupt_artifact(model_dir: Path) -> None:
    staging = model_dir / ".2"
    staging.mkdir()
    good = onnx_mlp(staging / "model.onnx", TINY, seed=2).read_bytes()
    (staging / "model.onnx").write_bytes(good[: len(good) // 3])  # truncated in transit
    os.rename(staging, model_dir / "2")


def _fails_warm_up(model_dir: Path) -> None:
    make_version(model_dir, 2, model_py=BROKEN_PREDICT)


def _bad_config(model_dir: Path) -> None:
    staging = model_dir / ".2"
    staging.mkdir()
    onnx_mlp(staging / "model.onnx", TINY, seed=2)
    write(staging / "modelport.yaml", "batching: {max_batch_size: many}\n")
    os.rename(staging, model_dir / "2")


@pytest.mark.parametrize(
    ("ship", "stage", "error"),
    [
        (_corrupt_artifact, "load", "Protobuf parsing failed"),
        (_fails_warm_up, "warm up", "this version is broken"),
        (_bad_config, "resolve", "ConfigError"),
    ],
    ids=["corrupt-artifact", "warm-up-failure", "bad-config"],
)
def test_a_broken_version_never_goes_live_and_is_reported(
    repository: Path,
    caplog: pytest.LogCaptureFixture,
    ship: Callable[[Path], None],
    stage: str,
    error: str,
) -> None:
    caplog.set_level(logging.ERROR, logger="modelport.runtime")
    with (
        serve(repository, admin=True, auth_token=TOKEN) as server,
        httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as client,
    ):
        with Load(server.url, headers=AUTH) as load:
            ship(repository / "tiny")
            wait_for(lambda: version_status(client)["failures"] == 1, "version 2 to fail")
            load.wait_more(100)
        status = version_status(client)
        listing = client.get("/admin/models/tiny").json()
        metrics = client.get("/metrics").text
        ready = client.get("/v2/health/ready").status_code

    assert load.failures == [] and load.wrong == []
    assert load.statuses.keys() == {200}
    assert load.versions.keys() == {"1"}
    assert status["live"] == "1"
    assert ready == 200  # a failed candidate does not take the server out of rotation
    failed = {v["version"]: v for v in listing["versions"]}["2"]
    assert failed["state"] == "failed"
    assert failed["error"].startswith(f"failed to {stage}: ") and error in failed["error"]
    assert 'modelport_version_failed{model="tiny",version="2"} 1.0' in metrics
    assert 'modelport_version_failures_total{model="tiny"} 1.0' in metrics
    logged = [r for r in caplog.records if r.getMessage().startswith("version failed")]
    assert len(logged) == 1
    assert logged[0].__dict__["version"] == "2" and logged[0].__dict__["stage"] == stage


def test_a_broken_candidate_is_refused_with_its_reason(repository: Path) -> None:
    with (
        serve(repository, admin=True, auth_token=TOKEN) as server,
        httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as client,
    ):
        assert client.post("/admin/models/tiny/pin", json={"version": "1"}).status_code == 200
        _corrupt_artifact(repository / "tiny")  # pinned: found, not loaded
        wait_for(lambda: len(version_status(client)["versions"]) == 2, "version 2 to be found")
        assert version_status(client)["versions"][1]["state"] == "available"

        r = client.post("/admin/models/tiny/canary", json={"version": "2", "percent": 50})
        assert r.status_code == 500
        assert "version 2 failed to load: " in r.json()["error"]
        assert "Protobuf parsing failed" in r.json()["error"]
        status = version_status(client)
        assert status["live"] == "1" and status["policy"] is None
        assert status["versions"][1]["state"] == "failed"
        r = client.post("/admin/models/tiny/shadow", json={"version": "2"})
        assert r.status_code == 500 and "failed to load" in r.json()["error"]
        for _ in range(20):  # nothing of version 2 reaches callers
            r = client.post("/v2/models/tiny/infer", json=infer_body(x_for(0)))
            assert r.status_code == 200 and r.json()["model_version"] == "1"


def test_swap_in_place_brings_the_old_version_back_when_the_new_one_fails(
    repository: Path,
) -> None:
    with (
        serve(repository, swap_policy="swap_in_place") as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        with Load(server.url) as load:
            _fails_warm_up(repository / "tiny")
            wait_for(lambda: version_status(client)["failures"] == 1, "version 2 to fail")
            wait_for(lambda: version_status(client)["live"] == "1", "version 1 to be back")
            wait_for(lambda: client.get("/v2/models/tiny/ready").status_code == 200, "readiness")
            load.wait_more(50)
        status = version_status(client)
    assert load.failures == [] and load.wrong == []
    assert load.statuses.keys() <= {200, 503}  # 503 + Retry-After only in the gaps
    assert all(v is not None for v in load.retry_after)
    assert load.versions.keys() == {"1"}
    assert status["live"] == "1" and status["swaps"] == 0
    states = {v["version"]: v["state"] for v in status["versions"]}
    assert states == {"1": "ready", "2": "failed"}
