"""The admin API and ``modelport versions``: off by default, behind the token, clear refusals."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from modelport.cli import app, main
from modelport.errors import ConfigError
from modelport.settings import Settings
from tests.server.conftest import LiveServer, ServerLogs, infer_body
from tests.server.test_serve import serving
from tests.versions.conftest import (
    AUTH,
    TOKEN,
    Load,
    make_version,
    serve,
    version_status,
    wait_for,
    x_for,
)


@pytest.fixture(scope="module")
def admin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``tiny`` versions 1 and 2 (2 live), admin API on behind ``TOKEN``."""
    root = tmp_path_factory.mktemp("admin") / "repo"
    make_version(root / "tiny", 1, delay=0.0)
    make_version(root / "tiny", 2, delay=0.0)
    with serve(root, admin=True, auth_token=TOKEN) as server:
        yield server


@pytest.fixture
def admin(admin_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=admin_server.url, timeout=30, headers=AUTH) as client:
        yield client


def _healthy(client: httpx.Client) -> str:
    r = client.post("/v2/models/tiny/infer", json=infer_body(x_for(0)))
    assert r.status_code == 200, r.text
    return str(r.json()["model_version"])


def _live_and_ready(client: httpx.Client, version: str) -> bool:
    status = client.get("/admin/models/tiny").json()
    states = {row["version"]: row["state"] for row in status["versions"]}
    return bool(status["live"] == version and states.get(version) == "ready")


def test_the_admin_api_is_off_by_default(tmp_path: Path) -> None:
    make_version(tmp_path / "repo" / "tiny", 1, delay=0.0)
    # Off even with a token: the token alone does not turn management on.
    with (
        serve(tmp_path / "repo", auth_token=TOKEN) as server,
        httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as client,
    ):
        for method, path in [
            ("GET", "/admin/models"),
            ("GET", "/admin/models/tiny"),
            ("POST", "/admin/models/tiny/rollback"),
            ("POST", "/admin/models/tiny/pin"),
        ]:
            r = client.request(method, path, json={"version": "1"})
            assert r.status_code == 404, (path, r.text)
            assert "no route" in r.json()["error"]
        assert not any(p.startswith("/admin") for p in client.get("/openapi.json").json()["paths"])
        assert _healthy(client) == "1"


def test_the_admin_api_refuses_to_start_without_a_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match="admin API needs an auth token"):
        Settings(model_path=tmp_path, admin=True)
    make_version(tmp_path / "repo" / "tiny", 1, delay=0.0)
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", str(tmp_path / "repo"), "--admin", "--grpc-port", "0"])
    assert exit_info.value.code == 1
    assert "admin API needs an auth token" in capsys.readouterr().err


def test_the_admin_api_requires_the_token(admin_server: LiveServer) -> None:
    with httpx.Client(base_url=admin_server.url, timeout=30) as anonymous:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
            r = anonymous.get("/admin/models", headers=headers)
            assert r.status_code == 401, headers
            assert r.headers["www-authenticate"] == "Bearer"
            r = anonymous.post("/admin/models/tiny/rollback", headers=headers)
            assert r.status_code == 401
    with httpx.Client(base_url=admin_server.url, timeout=30, headers=AUTH) as client:
        r = client.get("/admin/models")
        assert r.status_code == 200
        (model,) = r.json()["models"]
        assert model["name"] == "tiny" and model["live"] == "2"
        assert model["history"] == ["1"] and model["pinned"] is False
        paths = client.get("/openapi.json").json()["paths"]
        assert "/admin/models/{name}/rollback" in paths


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/admin/models/nope/pin", {"version": "1"}, 404, "unknown model 'nope'"),
        ("/admin/models/tiny/pin", {"version": "9"}, 404, "has no version '9'"),
        ("/admin/models/tiny/pin", {}, 400, "missing field(s) ['version']"),
        ("/admin/models/tiny/pin", {"version": "1", "force": True}, 400, "unknown field(s)"),
        ("/admin/models/tiny/pin", {"version": None}, 400, '"version" must be'),
        ("/admin/models/tiny/pin", [1], 400, "must be a JSON object"),
        ("/admin/models/tiny/pin", b"{not json", 400, ""),
        ("/admin/models/tiny/canary", {"version": "1"}, 400, "missing field(s) ['percent']"),
        ("/admin/models/tiny/canary", {"version": "1", "percent": 0}, 400, "in (0, 100]"),
        ("/admin/models/tiny/canary", {"version": "1", "percent": 150}, 400, "in (0, 100]"),
        ("/admin/models/tiny/canary", {"version": "1", "percent": "ten"}, 400, "a number"),
        ("/admin/models/tiny/canary", {"version": "1", "percent": True}, 400, "a number"),
        ("/admin/models/tiny/canary", {"version": "2", "percent": 5}, 400, "already live"),
        ("/admin/models/tiny/shadow", {"version": "2"}, 400, "already live"),
        ("/admin/models/tiny/promote", None, 400, "no canary or shadow to promote"),
        ("/admin/models/tiny/promote", {"x": 1}, 400, "unknown field(s) ['x']"),
        ("/admin/models/tiny/teleport", None, 404, "no route"),
    ],
)
def test_bad_admin_requests_get_a_clear_error_and_change_nothing(
    admin: httpx.Client, path: str, body: Any, status: int, message: str
) -> None:
    if isinstance(body, bytes):
        r = admin.post(path, content=body, headers={"content-type": "application/json"})
    elif body is None:
        r = admin.post(path)
    else:
        r = admin.post(path, json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    state = version_status(admin)
    assert state["live"] == "2" and state["policy"] is None and state["pinned"] is False
    assert _healthy(admin) == "2"


def test_rollback_with_nothing_to_go_back_to_is_refused(tmp_path: Path) -> None:
    make_version(tmp_path / "repo" / "tiny", 1, delay=0.0)
    with (
        serve(tmp_path / "repo", admin=True, auth_token=TOKEN) as server,
        httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as client,
    ):
        r = client.post("/admin/models/tiny/rollback")
        assert r.status_code == 400
        assert "no earlier version to roll back to" in r.json()["error"]
        assert _healthy(client) == "1"


def _cli(server: LiveServer, *args: str, token: str | None = TOKEN) -> Any:
    extra = ["--url", server.url] + (["--token", token] if token is not None else [])
    return CliRunner().invoke(app, ["versions", *args, *extra])


def test_the_versions_command_drives_the_admin_api(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    make_version(root / "tiny", 1, delay=0.0)
    with (
        serve(root, admin=True, auth_token=TOKEN) as server,
        httpx.Client(base_url=server.url, timeout=30, headers=AUTH) as client,
    ):
        result = _cli(server, "pin", "tiny", "1")
        assert result.exit_code == 0, result.output
        assert "tiny: live 1 (pinned)" in result.output
        make_version(root / "tiny", 2, delay=0.0)
        wait_for(lambda: len(version_status(client)["versions"]) == 2, "version 2 found")

        result = _cli(server, "list")
        assert result.exit_code == 0, result.output
        assert "tiny: live 1 (pinned)" in result.output
        assert "available" in result.output

        result = _cli(server, "canary", "tiny", "2", "--percent", "25")
        assert result.exit_code == 0, result.output
        assert "canary 2 at 25 %" in result.output
        result = _cli(server, "shadow", "tiny", "2")
        assert result.exit_code == 0, result.output
        assert "shadow 2" in result.output
        client.post("/v2/models/tiny/infer", json=infer_body(x_for(1)))
        wait_for(lambda: version_status(client)["shadow"]["compared"] == 1, "shadow answer")
        result = _cli(server, "list", "tiny")
        assert "shadow: 1 mirrored, agreement 0.0%" in result.output  # other weights

        result = _cli(server, "promote", "tiny")
        assert result.exit_code == 0, result.output
        assert "tiny: live 2 (pinned)" in result.output
        assert _healthy(client) == "2"
        result = _cli(server, "rollback", "tiny")
        assert result.exit_code == 0, result.output
        assert "tiny: live 1 (pinned)" in result.output
        assert _healthy(client) == "1"
        result = _cli(server, "unpin", "tiny")
        assert result.exit_code == 0 and "(pinned)" not in result.output

        result = _cli(server, "list", "--json")
        assert result.exit_code == 0
        assert '"live": "1"' in result.output

        # Refusals: exit status 1 and the server's reason.
        result = _cli(server, "promote", "tiny")
        assert result.exit_code == 1
        assert "400: model 'tiny' has no canary or shadow to promote" in result.output
        result = _cli(server, "list", token="wrong")
        assert result.exit_code == 1 and "401" in result.output and "--token" in result.output
        result = _cli(server, "pin", "tiny", "7")
        assert result.exit_code == 1 and "has no version '7'" in result.output


def test_the_versions_command_says_when_admin_is_off_or_the_server_is_down(
    tmp_path: Path,
) -> None:
    make_version(tmp_path / "repo" / "tiny", 1, delay=0.0)
    with serve(tmp_path / "repo") as server:
        result = _cli(server, "list", token=None)
    assert result.exit_code == 1
    assert "the admin API is off on this server" in result.output
    result = _cli(server, "list")  # stopped now
    assert result.exit_code == 1 and "cannot reach" in result.output


def test_modelport_serve_watches_swaps_and_stops_cleanly(tmp_path: Path) -> None:
    """The real command: flags reach the watcher, the swap policy and the admin API."""
    root = tmp_path / "repo"
    make_version(root / "tiny", 1, delay=0.0)
    args = [str(root), "--admin", "--auth-token", TOKEN, "--watch-interval", "0.1"]
    with serving([*args, "--swap-policy", "swap_in_place"]) as (proc, url):
        with httpx.Client(base_url=url, timeout=30, headers=AUTH) as client:
            assert client.get("/admin/models/tiny").json()["swap_policy"] == "swap_in_place"
            make_version(root / "tiny", 2, delay=0.0)
            # swap_in_place makes 2 live first, then loads it (503 meanwhile): wait for ready.
            wait_for(lambda: _live_and_ready(client, "2"), "version 2 to go live and be ready")
            assert _healthy(client) == "2"
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(timeout=60)
        stderr = proc.stderr.read() if proc.stderr else ""
    assert returncode == 0, stderr
    assert "Traceback" not in stderr
    assert '"message":"new version found"' in stderr and '"version":"2"' in stderr
    with serving([str(root), "--no-watch"]) as (proc, url):
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.get("/admin/models").status_code == 404  # admin off by default
            make_version(root / "tiny", 3, delay=0.0)
            assert _healthy(client) == "2"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("swap_policy", "hot", "swap_policy must be 'double_buffer' or 'swap_in_place'"),
        ("watch_interval", "0", "watch_interval must be > 0 seconds"),
        ("watch", "maybe", "setting watch: invalid value 'maybe'"),
    ],
)
def test_bad_version_settings_are_refused_by_name(
    tmp_path: Path, setting: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.load({"model_path": tmp_path}, environ={f"MODELPORT_{setting.upper()}": value})


def test_modelport_serve_refuses_an_unknown_swap_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_version(tmp_path / "repo" / "tiny", 1, delay=0.0)
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", str(tmp_path / "repo"), "--swap-policy", "hot", "--grpc-port", "0"])
    assert exit_info.value.code == 1
    assert "swap_policy must be 'double_buffer' or 'swap_in_place', got 'hot'" in (
        capsys.readouterr().err
    )


APPLIED = "admin change from another worker applied"


def _workers_serving(root: Path, tmp_path: Path, *more: str) -> list[str]:
    make_version(root / "tiny", 1, delay=0.0)
    make_version(root / "tiny", 2, delay=0.0)
    return [str(root), "--workers", "2", "--admin", "--auth-token", TOKEN,
            "--log-db", f"sqlite:///{tmp_path / 'log.db'}", *more]  # fmt: skip


def _fresh_answers(url: str, prefix: str, n: int = 16) -> set[str]:
    """The versions that answer ``n`` requests, each on a new connection (so any worker)."""
    seen = set()
    for i in range(n):
        with httpx.Client(base_url=url, timeout=30, headers=AUTH) as client:
            body = {**infer_body(x_for(i)), "id": f"{prefix}-{i}"}
            r = client.post("/v2/models/tiny/infer", json=body)
            assert r.status_code == 200, r.text
            seen.add(str(r.json()["model_version"]))
    return seen


def test_admin_changes_reach_every_worker_process(tmp_path: Path) -> None:
    """With ``--workers 2`` an admin call lands on one worker; every worker applies the change
    (through the server's admin journal), so fresh connections, whichever worker takes them,
    all see it."""
    import sqlite3

    args = _workers_serving(tmp_path / "repo", tmp_path)
    with serving(args) as (proc, url):
        logs = ServerLogs(proc)
        wait_for(lambda: logs.count("Application startup complete.") == 2, "both workers up")
        with httpx.Client(base_url=url, timeout=30, headers=AUTH) as admin:
            assert _fresh_answers(url, "start") == {"2"}
            pinned = admin.post("/admin/models/tiny/pin", json={"version": "1"})
            assert pinned.status_code == 200 and pinned.json()["live"] == "1", pinned.text
            wait_for(lambda: logs.count(APPLIED, op="pin", version="1") == 1, "the other worker")
            assert _fresh_answers(url, "pinned") == {"1"}
            refused = admin.post("/admin/models/tiny/pin", json={"version": "7"})
            assert refused.status_code == 404 and "has no version '7'" in refused.text
            _fresh_answers(url, "logged")
            rate = admin.post("/admin/log", json={"sample_rate": 0.0})
            assert rate.status_code == 200 and rate.json()["sample_rate"] == 0.0
            wait_for(lambda: logs.count(APPLIED, op="sample_rate") == 1, "the other worker")
            _fresh_answers(url, "unlogged")
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(timeout=60)
        logs.reader.join(timeout=30)
    assert returncode == 0, logs.lines
    refusal = "admin change from another worker refused here"
    assert [(e["op"], e["version"], e["level"]) for e in logs.lines if e["message"] == refusal] == [
        ("pin", "7", "info")
    ]
    assert logs.count(APPLIED) == 2  # the pin and the sample rate, once each: nothing else
    assert not [e for e in logs.lines if e["level"] == "error"]
    with sqlite3.connect(tmp_path / "log.db") as conn:
        ids = [r for (r,) in conn.execute("SELECT request_id FROM modelport_requests")]
    assert sum(i.startswith("logged-") for i in ids) == 16
    assert not any(i.startswith("unlogged-") for i in ids)


def test_pin_and_rollback_across_workers_under_load_fail_no_request(tmp_path: Path) -> None:
    """Under concurrent load on both workers, a pin then a rollback go through the journal:
    each worker swaps with no failed or wrong answer, and all end on the same version."""
    args = _workers_serving(tmp_path / "repo", tmp_path)
    with serving(args) as (proc, url):
        logs = ServerLogs(proc)
        wait_for(lambda: logs.count("Application startup complete.") == 2, "both workers up")
        with (
            httpx.Client(base_url=url, timeout=30, headers=AUTH) as admin,
            Load(url, concurrency=8, headers=AUTH, keepalive=False) as load,
        ):
            pinned = admin.post("/admin/models/tiny/pin", json={"version": "1"})
            assert pinned.status_code == 200, pinned.text
            wait_for(lambda: logs.count(APPLIED, op="pin") == 1, "the other worker's pin")
            load.wait_more(200)
            back = admin.post("/admin/models/tiny/rollback")
            assert back.status_code == 200 and back.json()["live"] == "2", back.text
            wait_for(lambda: logs.count(APPLIED, op="rollback") == 1, "the other worker's rollback")
            load.wait_more(200)
        assert load.failures == [] and load.wrong == []
        assert set(load.statuses) == {200}
        assert set(load.versions) == {"1", "2"}
        # Both workers took part: a scrape shows each worker's share of the requests.
        with httpx.Client(base_url=url, timeout=30, headers=AUTH) as client:
            text = client.get("/metrics").text
        shares = re.findall(r'modelport_worker_requests\{worker="\d+"\} (\S+)', text)
        assert len(shares) == 2 and min(float(v) for v in shares) > 0, shares
        assert _fresh_answers(url, "after") == {"2"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        logs.reader.join(timeout=30)
    assert not [e for e in logs.lines if e["level"] == "error"]


def test_a_pin_waits_for_a_version_just_written_on_every_worker(tmp_path: Path) -> None:
    """Each worker's watcher finds a new version directory on its own schedule, after two
    scans that agree: a pin sent right after the copy waits for it on every worker instead of
    being refused (and leaving the workers apart). A version not on disk is refused at once."""
    root = tmp_path / "repo"
    args = _workers_serving(root, tmp_path, "--watch-interval", "1")
    with serving(args) as (proc, url):
        logs = ServerLogs(proc)
        wait_for(lambda: logs.count("Application startup complete.") == 2, "both workers up")
        assert logs.count("watching the model repository") == 2  # each worker watches
        with httpx.Client(base_url=url, timeout=60, headers=AUTH) as admin:
            assert admin.post("/admin/models/tiny/pin", json={"version": "1"}).status_code == 200
            wait_for(lambda: logs.count(APPLIED, op="pin", version="1") == 1, "the other worker")
            make_version(root / "tiny", 3, delay=0.0)
            pinned = admin.post("/admin/models/tiny/pin", json={"version": "3"})
            assert pinned.status_code == 200, pinned.text
            assert pinned.json()["live"] == "3" and pinned.json()["pinned"] is True
            wait_for(lambda: logs.count(APPLIED, op="pin", version="3") == 1, "the other worker")
            assert _fresh_answers(url, "three") == {"3"}
            missing = admin.post("/admin/models/tiny/pin", json={"version": "9"})
            assert missing.status_code == 404 and "has no version '9'" in missing.text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        logs.reader.join(timeout=30)
    assert not [e for e in logs.lines if e["level"] == "error"]
