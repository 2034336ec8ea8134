"""The versions of each served model: which one is live, hot swaps, pins, rollbacks, candidates.

Each model has one *live* version: the one answering requests that name no version. Changing
it (a new version directory found by the watcher, ``pin``, ``promote``, ``rollback``) is a
*swap*, done one at a time per model, under one of two memory policies:

``double_buffer``
    load and warm up the new version beside the old one, switch in one step on the event loop,
    then let the old one finish its in-flight requests and unload it. No request fails; memory
    holds both versions for the length of the swap.
``swap_in_place``
    drain and unload the old version first, then load the new one. Memory stays bounded;
    meanwhile the model answers 503 with ``Retry-After``.

Before it takes traffic a new version warms up on sample inputs: the ``warmup.inputs`` of its
``modelport.yaml``, and the last requests the live version answered. A version that fails to
load or warm up never replaces the live one; the failure is kept (model metadata, the admin
API), logged and counted. A candidate (canary or shadow, :mod:`.traffic`) is loaded beside the
live version and registered, so it also answers requests that name it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..errors import ArtifactError, ConfigError, InvalidInputError, ModelNotFoundError
from .loading import ModelFactory, StageError, fresh, prepare
from .registry import ModelRegistry, version_key
from .runner import ModelRunner, ModelState, Prediction
from .traffic import Canary, Policy, Shadow, ShadowMirror, percent

if TYPE_CHECKING:
    from ..model import Model
    from ..store.log import PredictionLog

__all__ = ["SWAP_POLICIES", "ModelFactory", "ModelVersions", "VersionManager", "Watcher"]

log = logging.getLogger("modelport.runtime")

SWAP_POLICIES = ("double_buffer", "swap_in_place")

_SAMPLES = 4
_SAMPLE_BYTES = 1 << 20
"""Requests kept as warm-up samples hold their inputs: only small ones are kept."""
_DRAIN_POLL_S = 0.005


class Watcher(Protocol):
    """What the manager starts and stops: the repository watcher (:mod:`.watcher`)."""

    def start(self, manager: VersionManager) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class ModelVersions:
    """One model's version state (read it; change it through :class:`VersionManager`)."""

    name: str
    live: str
    pinned: bool = False
    history: list[str] = field(default_factory=list)
    """Versions live before, most recent last: what ``rollback`` goes back to."""
    policy: Policy | None = None
    mirror: ShadowMirror | None = None
    factories: dict[str, ModelFactory] = field(default_factory=dict)
    """Versions that can be (re)loaded."""
    failures: dict[str, str] = field(default_factory=dict)
    loading: set[str] = field(default_factory=set)
    samples: deque[dict[str, np.ndarray]] = field(default_factory=lambda: deque(maxlen=_SAMPLES))
    swaps: int = 0
    failure_count: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class VersionManager:
    """Live versions, swaps and traffic policies of the models in a registry.

    ``make_runner`` wraps a loaded model as the data plane runs it; ``prediction_log`` says
    where shadow answers are logged (None: nowhere), asked each time since it can change.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        make_runner: Callable[[Model], ModelRunner],
        prediction_log: Callable[[], PredictionLog | None],
    ) -> None:
        self._registry = registry
        self._make_runner = make_runner
        self._prediction_log = prediction_log
        self.swap_policy = "double_buffer"
        self.drain_timeout = 30.0
        self.watcher: Watcher | None = None
        self._models: dict[str, ModelVersions] = {}
        self._rng = random.Random()
        self._started = False
        self.listeners: list[Callable[[ModelRunner, bool], None]] = []
        """Called with (runner, True) when a runner is registered, (runner, False) when it
        is unloaded; the server's metrics follow the runners this way."""

    def configure(
        self,
        *,
        swap_policy: str | None = None,
        drain_timeout: float | None = None,
        watcher: Watcher | None = None,
    ) -> None:
        """Set the memory policy, the drain bound (seconds) and the watcher to start."""
        if swap_policy is not None:
            if swap_policy not in SWAP_POLICIES:
                raise ConfigError(
                    f"swap policy must be one of {', '.join(SWAP_POLICIES)}, got {swap_policy!r}"
                )
            self.swap_policy = swap_policy
        if drain_timeout is not None:
            self.drain_timeout = drain_timeout
        if watcher is not None:
            self.watcher = watcher

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Track the models loaded at startup, then start the watcher (if any)."""
        if self._started:
            return
        self._started = True
        for name in sorted({r.name for r in self._registry.runners()}):
            self._track(name)
        if self.watcher is not None:
            self.watcher.start(self)

    async def close(self) -> None:
        """Stop the watcher and the shadow mirrors."""
        if self.watcher is not None:
            await self.watcher.stop()
        for track in self._models.values():
            if track.mirror is not None:
                await track.mirror.close(timeout=self.drain_timeout)

    def _track(self, name: str) -> ModelVersions:
        track = self._models.get(name)
        if track is None:
            runner = self._registry.get(name)
            track = self._models[name] = ModelVersions(name, runner.version)
            self._registry.live[name] = runner.version
            for version in self._registry.versions(name):
                track.factories[version] = fresh(self._registry.get(name, version).model)
                if version_key(version) < version_key(runner.version):
                    track.history.append(version)  # older versions served at startup
            runner.observers.append(self._observe)
        return track

    def _observe(self, p: Prediction) -> None:
        """Observer of each live runner: keep a few real inputs, feed the shadow."""
        track = self._models.get(p.model)
        if track is None or p.version != track.live:
            return
        if p.error is None and sum(a.nbytes for a in p.inputs.values()) <= _SAMPLE_BYTES:
            track.samples.append(dict(p.inputs))
        if track.mirror is not None:
            track.mirror.observe(p)

    # -- routing ------------------------------------------------------------------------------

    def route(self, name: str) -> ModelRunner:
        """The runner for a request that names no version: live, or the canary's share."""
        track = self._models.get(name)
        if (
            track is not None
            and isinstance(track.policy, Canary)
            and self._rng.random() * 100.0 < track.policy.percent
        ):
            with contextlib.suppress(ModelNotFoundError):
                return self._registry.get(name, track.policy.version)
        return self._registry.get(name)

    # -- what the watcher reports -------------------------------------------------------------

    def known(self, name: str, version: str, factory: ModelFactory) -> None:
        """A version directory present at startup: (re)load it from there from now on."""
        track = self._models.get(name)
        if track is not None:
            track.factories[version] = factory

    async def offer(self, name: str, version: str, factory: ModelFactory) -> None:
        """A new version directory: goes live unless the model is pinned or has a candidate."""
        if name not in self._models and name in {r.name for r in self._registry.runners()}:
            self._track(name)
        track = self._models.get(name)
        if track is None or not track.live:  # a new model
            await self._add_model(name, version, factory)
            return
        async with track.lock:
            track.factories[version] = factory
            track.failures.pop(version, None)
            if track.pinned or track.policy is not None:
                log.info(
                    "new version available, not made live",
                    extra={"model": name, "version": version, "pinned": track.pinned},
                )
                return
            if version_key(version) <= version_key(track.live):
                return
            with contextlib.suppress(ArtifactError):  # recorded and logged: the live one stays
                await self._switch(track, version)

    async def withdraw(self, name: str, version: str) -> None:
        """A version directory disappeared: unload that version unless it is live."""
        track = self._models.get(name)
        if track is None:
            return
        async with track.lock:
            track.factories.pop(version, None)
            track.failures.pop(version, None)
            if version == track.live:
                log.warning(
                    "the live version's directory is gone; still serving it",
                    extra={"model": name, "version": version},
                )
                return
            if track.policy is not None and track.policy.version == version:
                await self._clear(track)
            if version in self._registry.versions(name):
                await self._unload(self._registry.remove(name, version))

    async def _add_model(self, name: str, version: str, factory: ModelFactory) -> None:
        track = self._models.setdefault(name, ModelVersions(name, ""))
        async with track.lock:
            track.factories[version] = factory
            track.failures.pop(version, None)
            try:
                runner = await self._load_version(track, version)
            except ArtifactError:
                return  # recorded, logged and counted
            self._activate(track, runner)
            track.swaps += 1

    # -- admin operations ---------------------------------------------------------------------

    def _get(self, name: str) -> ModelVersions:
        if name not in self._models:
            self._registry.get(name)  # raises ModelNotFoundError naming the served models
            self._track(name)
        return self._models[name]

    async def pin(self, name: str, version: str) -> dict[str, Any]:
        """Make ``version`` live and keep it: new versions wait until promoted or unpinned."""
        track = self._get(name)
        async with track.lock:
            self._check_version(track, version)
            if track.policy is not None and track.policy.version == version:
                await self._stop_mirror(track)
                track.policy = None
            if version != track.live:
                await self._switch(track, version)
            track.pinned = True
        return self.describe(name)

    async def unpin(self, name: str) -> dict[str, Any]:
        """Let new versions go live again as they appear."""
        track = self._get(name)
        track.pinned = False
        return self.describe(name)

    async def rollback(self, name: str) -> dict[str, Any]:
        """Drop any candidate and make the version live before this one live again (pinned)."""
        track = self._get(name)
        async with track.lock:
            previous = [v for v in track.history if v in track.factories and v != track.live]
            if not previous:
                raise InvalidInputError(
                    f"model {name!r} has no earlier version to roll back to "
                    f"(live: {track.live}, history: {track.history or 'none'})"
                )
            if track.policy is not None:
                await self._clear(track)
            target = previous[-1]
            await self._switch(track, target)
            # The version rolled back from does not become a rollback target itself.
            track.history = [v for v in track.history[:-1] if v != target]
            track.pinned = True
        return self.describe(name)

    async def set_canary(self, name: str, version: str, share: Any) -> dict[str, Any]:
        """Send ``share`` % of unversioned requests to ``version`` (loaded if needed)."""
        policy = Canary(version, percent(share))
        await self._set_policy(name, policy)
        return self.describe(name)

    async def set_shadow(self, name: str, version: str) -> dict[str, Any]:
        """Mirror every request to ``version`` (loaded if needed); callers see the live one."""
        await self._set_policy(name, Shadow(version))
        return self.describe(name)

    async def clear(self, name: str) -> dict[str, Any]:
        """Drop the canary or shadow and unload its version."""
        track = self._get(name)
        async with track.lock:
            await self._clear(track)
        return self.describe(name)

    async def promote(self, name: str) -> dict[str, Any]:
        """Make the canary or shadow version live (already warm: an instant switch)."""
        track = self._get(name)
        async with track.lock:
            if track.policy is None:
                raise InvalidInputError(f"model {name!r} has no canary or shadow to promote")
            version = track.policy.version
            await self._stop_mirror(track)
            track.policy = None
            await self._switch(track, version)
        return self.describe(name)

    async def _set_policy(self, name: str, policy: Policy) -> None:
        track = self._get(name)
        async with track.lock:
            self._check_version(track, policy.version)
            if policy.version == track.live:
                raise InvalidInputError(
                    f"version {policy.version} of model {name!r} is already live; a "
                    f"{policy.kind} needs another version"
                )
            if track.policy is not None and track.policy.version != policy.version:
                await self._clear(track)
            await self._stop_mirror(track)
            if policy.version not in self._registry.versions(name):
                runner = await self._load_version(track, policy.version)
                self._registry.add(runner)
                self._changed(runner, True)
            if isinstance(policy, Shadow):
                track.mirror = ShadowMirror(
                    self._registry.get(name, policy.version),
                    prediction_log=self._prediction_log,
                )
            track.policy = policy
            log.info("traffic policy set", extra={"model": name, **policy.to_dict()})

    async def _clear(self, track: ModelVersions) -> None:
        policy = track.policy
        await self._stop_mirror(track)
        track.policy = None
        if policy is not None and policy.version in self._registry.versions(track.name):
            await self._unload(self._registry.remove(track.name, policy.version))

    async def _stop_mirror(self, track: ModelVersions) -> None:
        if track.mirror is not None:
            mirror, track.mirror = track.mirror, None
            await mirror.close(timeout=self.drain_timeout)

    def _check_version(self, track: ModelVersions, version: str) -> None:
        if version not in track.factories and version not in self._registry.versions(track.name):
            known = sorted(set(track.factories) | set(track.failures), key=version_key)
            raise ModelNotFoundError(
                f"model {track.name!r} has no version {version!r}; versions: {', '.join(known)}"
            )

    # -- swaps --------------------------------------------------------------------------------

    async def _switch(self, track: ModelVersions, version: str) -> None:
        """Make ``version`` live under the memory policy; the caller holds ``track.lock``."""
        name = track.name
        loaded = version in self._registry.versions(name)
        if loaded or self.swap_policy == "double_buffer":
            if loaded:
                runner = self._registry.get(name, version)
            else:
                runner = await self._load_version(track, version)
            old = self._activate(track, runner)
            track.swaps += 1
            if old is not None:
                await self._unload(old)
            return
        await self._swap_in_place(track, version)
        track.swaps += 1

    async def _swap_in_place(self, track: ModelVersions, version: str) -> None:
        previous, samples = track.live, list(track.samples)
        runner = await self._resolve(track, version)
        old = self._activate(track, runner)  # LOADING: requests get 503 + Retry-After
        if old is not None:
            await self._unload(old)
        del old  # nothing may keep the old model alive while the new one loads
        try:
            await self._warm(track, runner, samples)
        except ArtifactError:
            # Put the previous version back the same way (a second gap); until it is
            # registered, the failed one stays in place and answers 503.
            track.history = track.history[:-1]
            restored = await self._resolve(track, previous)
            failed = self._activate(track, restored)
            if failed is not None:
                track.history = track.history[:-1]  # the failed version was never live
                await failed.close()
                self._changed(failed, False)
            await self._warm(track, restored, samples)
            raise

    def _activate(self, track: ModelVersions, runner: ModelRunner) -> ModelRunner | None:
        """Switch live to ``runner`` in one step; return the old live runner, unregistered."""
        name = track.name
        versions = self._registry.versions(name)
        old = self._registry.get(name, track.live) if track.live in versions else None
        if runner.version not in versions:
            self._registry.add(runner)
            self._changed(runner, True)
        self._registry.live[name] = runner.version
        if self._observe not in runner.observers:
            runner.observers.append(self._observe)
        if old is not None and old is not runner:
            self._registry.remove(name, old.version)
            if self._observe in old.observers:
                old.observers.remove(self._observe)
            track.history.append(old.version)
        else:
            old = None
        track.live = runner.version
        track.failures.pop(runner.version, None)
        log.info("version live", extra={"model": name, "version": runner.version})
        return old

    async def _unload(self, runner: ModelRunner) -> None:
        """Let ``runner`` finish what it took (bounded by ``drain_timeout``), then close it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_timeout
        while runner.pending and loop.time() < deadline:
            await asyncio.sleep(_DRAIN_POLL_S)  # only while a swap drains
        await runner.close()
        self._changed(runner, False)
        log.info("version unloaded", extra={"model": runner.name, "version": runner.version})

    async def _load_version(self, track: ModelVersions, version: str) -> ModelRunner:
        """Resolve, load and warm up ``version`` beside the live one; READY, or raises."""
        track.loading.add(version)
        try:
            runner = await self._resolve(track, version)
            await self._warm(track, runner, list(track.samples))
        finally:
            track.loading.discard(version)
        return runner

    async def _resolve(self, track: ModelVersions, version: str) -> ModelRunner:
        """A runner for ``version`` (LOADING), its model resolved off the event loop."""
        factory = track.factories.get(version)
        if factory is None:
            raise ArtifactError(
                f"model {track.name!r} version {version} cannot be reloaded: its directory is gone"
            )
        try:
            model = await asyncio.to_thread(factory)
        except Exception as exc:
            raise self._failed(track, version, "resolve", exc) from exc
        return self._make_runner(model)

    async def _warm(
        self, track: ModelVersions, runner: ModelRunner, samples: list[dict[str, np.ndarray]]
    ) -> None:
        """Load and warm up ``runner`` off the event loop: READY, or FAILED (recorded, and
        raised as :class:`ArtifactError`; a registered runner stays registered)."""
        try:
            await asyncio.to_thread(prepare, runner, samples)
        except StageError as exc:
            runner.state, runner.error = ModelState.FAILED, str(exc.error)
            name, version = runner.name, runner.version
            registered = version in self._registry.versions(name)
            if not (registered and self._registry.get(name, version) is runner):
                await runner.close()
            raise self._failed(track, version, exc.stage, exc.error) from exc.error
        runner.state = ModelState.READY

    def _changed(self, runner: ModelRunner, added: bool) -> None:
        for listener in self.listeners:
            listener(runner, added)

    def _failed(
        self, track: ModelVersions, version: str, stage: str, error: BaseException
    ) -> ArtifactError:
        message = f"{type(error).__name__}: {error}"
        track.failures[version] = f"failed to {stage}: {message}"
        track.failure_count += 1
        log.error(
            "version failed; the live version stays",
            extra={"model": track.name, "version": version, "stage": stage, "error": message},
        )
        return ArtifactError(f"model {track.name!r} version {version} failed to {stage}: {message}")

    # -- state --------------------------------------------------------------------------------

    def models(self) -> list[str]:
        return sorted({r.name for r in self._registry.runners()} | set(self._models))

    def describe(self, name: str) -> dict[str, Any]:
        """The model's versions: live, pinned, candidate policy, each version's state."""
        track = self._get(name)
        loaded = self._registry.versions(name)
        candidate = track.policy.version if track.policy is not None else None
        rows = []
        every = set(loaded) | set(track.factories) | set(track.failures) | track.loading
        for version in sorted(every, key=version_key):
            if version in track.loading:
                state = "loading"
            elif version in loaded:
                state = self._registry.get(name, version).state.value
            elif version in track.failures:
                state = "failed"
            else:
                state = "available"
            role = "live" if version == track.live else None
            if version == candidate and track.policy is not None:
                role = track.policy.kind
            row: dict[str, Any] = {"version": version, "state": state, "role": role}
            if version in track.failures:
                row["error"] = track.failures[version]
            rows.append(row)
        return {
            "name": name,
            "live": track.live,
            "pinned": track.pinned,
            "swap_policy": self.swap_policy,
            "policy": track.policy.to_dict() if track.policy is not None else None,
            "shadow": track.mirror.stats.to_dict() if track.mirror is not None else None,
            "history": list(track.history),
            "swaps": track.swaps,
            "failures": track.failure_count,
            "versions": rows,
        }

    def tracked(self) -> list[tuple[str, ModelVersions]]:
        """(name, state) of every tracked model, for metrics."""
        return sorted(self._models.items())
