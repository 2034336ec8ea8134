"""Versions at the server's edge: the admin API, the version metrics, and their wiring.

The admin API lists versions, pins one, sets a canary or shadow, promotes and rolls back. It is
off unless ``admin`` is set, and the settings refuse ``admin`` without ``auth_token``, so it is
never open to anyone who can reach the port: unauthenticated management endpoints are how
TorchServe's ShellTorch (CVE-2023-43654) happened. Routes::

    GET  /admin/models                    every model's versions
    GET  /admin/models/{name}             one model's versions
    POST /admin/models/{name}/pin         {"version": "2"}
    POST /admin/models/{name}/unpin
    POST /admin/models/{name}/canary      {"version": "3", "percent": 10}
    POST /admin/models/{name}/shadow      {"version": "3"}
    POST /admin/models/{name}/promote
    POST /admin/models/{name}/clear       drop the canary or shadow
    POST /admin/models/{name}/rollback
    GET  /admin/log                       the prediction log's sample rate and counters
    POST /admin/log                       {"sample_rate": 0.1}: record that share from now on

With several worker processes a change goes through their journal (:mod:`.journal`), so
every worker applies it; ``GET`` routes answer the state of the worker that takes the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, InvalidInputError, ModelNotFoundError
from ..protocol.codec import loads
from ..runtime.runner import ModelRunner
from ..runtime.traffic import Canary
from ..runtime.versions import VersionManager
from ..runtime.watcher import RepositoryWatcher, on_disk
from .http import AppContext, Request, Response, Route, json_response

if TYPE_CHECKING:
    from ..store.log import PredictionLog

__all__ = ["ADMIN_ROUTES", "VersionCollector", "apply_change", "install"]


def install(app: AppContext) -> tuple[Route, ...]:
    """Configure the app's version manager from its settings, export its metrics, and return
    the admin routes to serve (none unless ``settings.admin``)."""
    settings, versions = app.settings, app.dataplane.versions
    watcher = None
    if settings.watch and settings.model_path is not None:
        watcher = RepositoryWatcher(
            settings.model_path,
            interval=settings.watch_interval,
            trust=settings.trust or None,
            options=settings.runtime_options(),
        )
    versions.configure(
        swap_policy=settings.swap_policy,
        drain_timeout=settings.shutdown_timeout,
        watcher=watcher,
    )
    metrics = app.metrics

    def follow(runner: ModelRunner, added: bool) -> None:
        if added:
            metrics.track_runner(runner)
        else:
            metrics.forget_runner(runner)

    if follow not in versions.listeners:
        versions.listeners.append(follow)
    with contextlib.suppress(ValueError):  # another app on the same metrics registered it
        metrics.registry.register(VersionCollector(versions))
    return ADMIN_ROUTES if settings.admin else ()


# -- the admin API --------------------------------------------------------------------------


async def _body(request: Request, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> Any:
    raw = await request.body()
    if not raw.strip():
        data: Any = {}
    else:
        data = loads(raw)
    if not isinstance(data, dict):
        raise InvalidInputError("the admin request body must be a JSON object")
    missing = [k for k in required if k not in data]
    if missing:
        raise InvalidInputError(f"missing field(s) {missing} in the admin request body")
    unknown = sorted(data.keys() - set(required) - set(optional))
    if unknown:
        raise InvalidInputError(
            f"unknown field(s) {unknown}; expected {list(required) + list(optional)}"
        )
    return data


def _version(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
        raise InvalidInputError(f'"version" must be a version name like "2", got {value!r}')
    return str(value)


def _versions(request: Request) -> VersionManager:
    return request.app.dataplane.versions


async def list_models(request: Request) -> Response:
    versions = _versions(request)
    return json_response(200, {"models": [versions.describe(n) for n in versions.models()]})


async def show(request: Request) -> Response:
    return json_response(200, _versions(request).describe(request.params["name"]))


async def pin(request: Request) -> Response:
    body = await _body(request, ("version",))
    return await _change(request, "pin", version=_version(body["version"]))


async def unpin(request: Request) -> Response:
    await _body(request, ())
    return await _change(request, "unpin")


async def canary(request: Request) -> Response:
    body = await _body(request, ("version", "percent"))
    version = _version(body["version"])
    return await _change(request, "canary", version=version, percent=body["percent"])


async def shadow(request: Request) -> Response:
    body = await _body(request, ("version",))
    return await _change(request, "shadow", version=_version(body["version"]))


async def promote(request: Request) -> Response:
    await _body(request, ())
    return await _change(request, "promote")


async def clear(request: Request) -> Response:
    await _body(request, ())
    return await _change(request, "clear")


async def rollback(request: Request) -> Response:
    await _body(request, ())
    return await _change(request, "rollback")


async def show_log(request: Request) -> Response:
    log = request.app.dataplane.prediction_log
    if log is None:
        return _no_log()
    return json_response(200, _log_state(log))


async def set_log(request: Request) -> Response:
    body = await _body(request, ("sample_rate",))
    if request.app.dataplane.prediction_log is None:
        return _no_log()
    return await _change(request, "sample_rate", sample_rate=body["sample_rate"])


async def _change(request: Request, op: str, **args: Any) -> Response:
    """Apply a change here, or, with several worker processes, through their journal (so
    every worker applies it, in the same order)."""
    name = request.params.get("name")
    if name is not None:
        args = {"model": name, **args}
    journal = request.app.admin_journal
    if journal is None:
        return json_response(200, await apply_change(request.app, op, args))
    return json_response(200, await journal.submit(op, args))


async def apply_change(app: AppContext, op: str, args: dict[str, Any]) -> dict[str, Any]:
    """Apply one admin change ``op`` with ``args`` to ``app``; the state it leaves.

    A version already in the repository that the watcher has not found yet (it waits for two
    scans that agree, so as not to load a half-copied directory) is waited for, up to two
    watch intervals and a second, rather than refused: with several workers, each finds a new
    version on its own schedule, and a pin must not be refused by the ones that scan later.
    """
    loop = asyncio.get_running_loop()
    deadline: float | None = None
    while True:
        try:
            return await _apply(app, op, args)
        except ModelNotFoundError:
            if deadline is None:
                if not await asyncio.to_thread(_on_disk, app, args):
                    raise
                deadline = loop.time() + 2 * app.settings.watch_interval + 1.0
            if loop.time() > deadline:
                raise
            await asyncio.sleep(_FOUND_POLL_S)


_FOUND_POLL_S = 0.1


def _on_disk(app: AppContext, args: dict[str, Any]) -> bool:
    root, version = app.settings.model_path, args.get("version")
    if not app.settings.watch or root is None or version is None:
        return False
    return on_disk(Path(root), args["model"], str(version))


async def _apply(app: AppContext, op: str, args: dict[str, Any]) -> dict[str, Any]:
    versions = app.dataplane.versions
    if op == "sample_rate":
        log = app.dataplane.prediction_log
        if log is None:
            raise ConfigError("this server logs no predictions")
        try:
            log.sample_rate = args["sample_rate"]  # the log checks it
        except ConfigError as exc:
            raise InvalidInputError(f'"sample_rate": {exc}') from None
        return _log_state(log)
    name = args["model"]
    if op == "pin":
        return await versions.pin(name, args["version"])
    if op == "unpin":
        return await versions.unpin(name)
    if op == "canary":
        return await versions.set_canary(name, args["version"], args["percent"])
    if op == "shadow":
        return await versions.set_shadow(name, args["version"])
    if op == "promote":
        return await versions.promote(name)
    if op == "clear":
        return await versions.clear(name)
    if op == "rollback":
        return await versions.rollback(name)
    raise InvalidInputError(f"unknown admin change {op!r}")


def _log_state(log: PredictionLog) -> dict[str, Any]:
    return {"sample_rate": log.sample_rate, **dataclasses.asdict(log.stats)}


def _no_log() -> Response:
    why = "this server logs no predictions: start it with --log-db or --log-predictions"
    return json_response(404, {"error": why})


_ADMIN = "/admin/models/{name}"

ADMIN_ROUTES: tuple[Route, ...] = (
    Route("GET", "/admin/models", list_models, "Admin: every model's versions"),
    Route("GET", _ADMIN, show, "Admin: a model's versions, live, pinned, candidate"),
    Route("POST", f"{_ADMIN}/pin", pin, "Admin: make a version live and keep it"),
    Route("POST", f"{_ADMIN}/unpin", unpin, "Admin: let new versions go live again"),
    Route("POST", f"{_ADMIN}/canary", canary, "Admin: send a share of requests to a version"),
    Route("POST", f"{_ADMIN}/shadow", shadow, "Admin: mirror every request to a version"),
    Route("POST", f"{_ADMIN}/promote", promote, "Admin: make the canary or shadow live"),
    Route("POST", f"{_ADMIN}/clear", clear, "Admin: drop the canary or shadow"),
    Route("POST", f"{_ADMIN}/rollback", rollback, "Admin: go back to the previous version"),
    Route("GET", "/admin/log", show_log, "Admin: the prediction log's sample rate and counters"),
    Route("POST", "/admin/log", set_log, "Admin: change the share of requests logged"),
)
"""The admin routes, served only with ``admin`` on (and so behind the auth token)."""


# -- metrics --------------------------------------------------------------------------------


class VersionCollector:
    """Prometheus collector reading the version manager's state when scraped."""

    def __init__(self, versions: VersionManager) -> None:
        self._versions = versions

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        live = GaugeMetricFamily(
            "modelport_live_version",
            "1 for the version live per model.",
            labels=["model", "version"],
        )
        swaps = CounterMetricFamily(
            "modelport_version_swaps", "Changes of live version.", labels=["model"]
        )
        failures = CounterMetricFamily(
            "modelport_version_failures",
            "Versions that failed to load or warm up (and never went live).",
            labels=["model"],
        )
        failed = GaugeMetricFamily(
            "modelport_version_failed",
            "1 for each version whose last load or warm-up failed.",
            labels=["model", "version"],
        )
        canary = GaugeMetricFamily(
            "modelport_canary_percent",
            "Share of requests sent to the canary version.",
            labels=["model", "version"],
        )
        shadow = CounterMetricFamily(
            "modelport_shadow_requests",
            "Requests mirrored to the shadow version, by outcome.",
            labels=["model", "version", "outcome"],
        )
        agreement = GaugeMetricFamily(
            "modelport_shadow_agreement_ratio",
            "Share of mirrored requests where the shadow's outputs matched the live version's.",
            labels=["model", "version"],
        )
        seconds = CounterMetricFamily(
            "modelport_shadow_seconds",
            "Total latency over compared requests, of the shadow and of the live version.",
            labels=["model", "version", "role"],
        )
        for name, track in self._versions.tracked():
            if track.live:
                live.add_metric([name, track.live], 1)
            swaps.add_metric([name], track.swaps)
            failures.add_metric([name], track.failure_count)
            for version in track.failures:
                failed.add_metric([name, version], 1)
            if isinstance(track.policy, Canary):
                canary.add_metric([name, track.policy.version], track.policy.percent)
            if track.mirror is not None:
                v, s = track.mirror.candidate.version, track.mirror.stats
                for outcome, count in (
                    ("agreed", s.agreed),
                    ("disagreed", s.compared - s.agreed),
                    ("error", s.errors),
                    ("dropped", s.dropped),
                ):
                    shadow.add_metric([name, v, outcome], count)
                if s.agreement is not None:
                    agreement.add_metric([name, v], s.agreement)
                seconds.add_metric([name, v, "shadow"], s.seconds)
                seconds.add_metric([name, v, "primary"], s.primary_seconds)
        yield from (live, swaps, failures, failed, canary, shadow, agreement, seconds)
