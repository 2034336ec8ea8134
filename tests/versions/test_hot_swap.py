"""Hot swap and rollback under concurrent load: a real server, a real repository, real clients."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.server.conftest import infer_body, tiny_reference
from tests.versions.conftest import (
    AUTH,
    PREPROCESS_TINY,
    TOKEN,
    Load,
    make_version,
    serve,
    version_status,
    wait_for,
    x_for,
)


def _metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_a_new_version_directory_goes_live_under_load_with_no_failed_request(
    repository: Path,
) -> None:
    with serve(repository) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        with Load(server.url) as load:
            make_version(repository / "tiny", 2)
            wait_for(lambda: version_status(client)["live"] == "2", "version 2 to go live")
            load.wait_more(100)
        status = version_status(client)
        metrics = client.get("/metrics").text
        old = client.get("/v2/models/tiny/versions/1/ready")

    assert load.failures == []
    assert load.statuses.keys() == {200}, load.statuses
    assert load.wrong == []  # every answer is the version it names, computed whole by it
    assert load.versions["1"] > 0 and load.versions["2"] >= 100
    # Once version 2 has answered, version 1 takes no new request: the switch is one step.
    assert load.sent_after_answered("1", "2") == []
    assert old.status_code == 404  # drained, then unloaded
    assert status["live"] == "2" and status["history"] == ["1"]
    assert {r["version"]: r["state"] for r in status["versions"]} == {
        "1": "available",
        "2": "ready",
    }
    assert _metric(metrics, "modelport_version_swaps_total", model="tiny") == 1
    assert _metric(metrics, "modelport_live_version", model="tiny", version="2") == 1
    assert _metric(metrics, "modelport_queue_depth", model="tiny", version="1") is None


def test_rollback_under_load_reloads_the_previous_version_with_no_failed_request(
    repository: Path,
) -> None:
    make_version(repository / "tiny", 2)
    with (
        serve(repository, admin=True, auth_token=TOKEN) as server,
        httpx.Client(base_url=server.url, timeout=60, headers=AUTH) as client,
    ):
        with Load(server.url, headers=AUTH) as load:
            make_version(repository / "tiny", 3)
            wait_for(lambda: version_status(client)["live"] == "3", "version 3 to go live")
            load.wait_more(50)
            r = client.post("/admin/models/tiny/rollback")
            rolled_back = time.monotonic()
            assert r.status_code == 200, r.text
            assert r.json()["live"] == "2" and r.json()["pinned"] is True
            load.wait_more(100)
            # Pinned after a rollback: a new version waits instead of going live.
            make_version(repository / "tiny", 4)
            wait_for(
                lambda: any(v["version"] == "4" for v in version_status(client)["versions"]),
                "version 4 to be found",
            )
            load.wait_more(50)
            # Rolling back again goes to the version before 2 (1, served at startup).
            r = client.post("/admin/models/tiny/rollback")
            assert r.status_code == 200, r.text
            assert r.json()["live"] == "1"
            load.wait_more(50)
        status = version_status(client)

    assert load.failures == [] and load.wrong == []
    assert load.statuses.keys() == {200}, load.statuses
    assert {"2", "3", "1"} <= load.versions.keys()
    assert "4" not in load.versions
    states = {r["version"]: r["state"] for r in status["versions"]}
    assert states["1"] == "ready" and states["4"] == "available"
    # Once the rollback has answered, version 3 takes no new request.
    assert [t for t in load.timeline if t[2] == "3" and t[0] > rolled_back] == []
    assert load.sent_after_answered("2", "1") == []
    assert load.timeline[-1][2] == "1"


@pytest.mark.parametrize("policy", ["double_buffer", "swap_in_place"])
def test_memory_policy_decides_between_no_downtime_and_a_brief_503(
    tmp_path: Path, policy: str
) -> None:
    root = tmp_path / "repo"
    make_version(root / "tiny", 1, load_delay=0.5)
    with (
        serve(root, swap_policy=policy) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
        Load(server.url, concurrency=4) as load,
    ):
        make_version(root / "tiny", 2, load_delay=0.5)  # half a second to load
        wait_for(lambda: version_status(client)["live"] == "2", "version 2 to go live")
        wait_for(
            lambda: version_status(client)["versions"][-1]["state"] == "ready",
            "version 2 to be ready",
        )
        load.wait_more(50)

    assert load.failures == [] and load.wrong == []
    assert load.versions["2"] >= 50
    if policy == "double_buffer":
        assert load.statuses.keys() == {200}, load.statuses
    else:
        assert load.statuses[503] > 0, load.statuses  # the gap while version 2 loads
        assert load.statuses.keys() == {200, 503}
        assert all(v is not None and int(v) >= 1 for v in load.retry_after)


def test_a_removed_version_directory_unloads_that_version_but_never_the_live_one(
    repository: Path,
) -> None:
    make_version(repository / "tiny", 2)
    with serve(repository) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/v2/models/tiny/versions/1/ready").status_code == 200
        shutil.rmtree(repository / "tiny" / "1")
        wait_for(
            lambda: client.get("/v2/models/tiny/versions/1/ready").status_code == 404,
            "version 1 to unload",
        )
        shutil.rmtree(repository / "tiny" / "2")  # the live one: keeps serving
        r = client.post("/v2/models/tiny/infer", json=_body())
        assert r.status_code == 200 and r.json()["model_version"] == "2"
        status = version_status(client)
    assert status["live"] == "2"
    assert [v["version"] for v in status["versions"]] == ["2"]


def test_a_new_model_directory_is_served_once_loaded(repository: Path) -> None:
    with serve(repository) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/v2/models/other").status_code == 404
        make_version(repository / "other", 1, seed=1)
        wait_for(lambda: client.get("/v2/models/other/ready").status_code == 200, "new model")
        r = client.post("/v2/models/other/infer", json=_body())
        assert r.status_code == 200, r.text
        assert r.json()["model_name"] == "other"


def _body() -> dict[str, object]:
    return infer_body(x_for(0))


def test_a_swap_waits_for_requests_still_in_preprocess(repository: Path) -> None:
    """Plain-JSON requests spend time in ``preprocess`` before they reach the batcher."""
    root = repository.parent / "json-repo"
    make_version(root / "tiny", 1, model_py=PREPROCESS_TINY)
    answers: list[tuple[int, np.ndarray]] = []
    statuses: list[int] = []

    async def worker(client: httpx.AsyncClient, k: int, stop: asyncio.Event) -> None:
        i = k
        while not stop.is_set():
            x = x_for(i)
            r = await client.post("/v2/models/tiny/predict", json={"x": x.tolist()})
            statuses.append(r.status_code)
            if r.status_code == 200:
                answers.append((i, np.asarray(r.json()["y"], dtype=np.float32)))
            i += 8

    async def drive(url: str, client: httpx.Client) -> None:
        stop = asyncio.Event()
        async with httpx.AsyncClient(base_url=url, timeout=60) as ac:
            tasks = [asyncio.create_task(worker(ac, k, stop)) for k in range(8)]
            while len(statuses) < 30:
                await asyncio.sleep(0.01)
            make_version(root / "tiny", 2, model_py=PREPROCESS_TINY)
            while (await ac.get("/v2/models/tiny")).json()["version_status"]["live"] != "2":
                await asyncio.sleep(0.05)
            target = len(statuses) + 100
            while len(statuses) < target:
                await asyncio.sleep(0.01)
            stop.set()
            await asyncio.gather(*tasks)

    with serve(root) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        asyncio.run(drive(server.url, client))

    assert set(statuses) == {200}
    seen = set()
    for i, y in answers:  # each answer is wholly version 1's or wholly version 2's
        x = x_for(i)
        for version in (1, 2):
            if np.allclose(y, tiny_reference(x, seed=version), atol=1e-5):
                seen.add(version)
                break
        else:
            raise AssertionError(f"answer {i} is neither version's")
    assert seen == {1, 2}
