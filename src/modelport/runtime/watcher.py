"""Watch a model repository for version directories that appear or disappear.

Polling, one cheap scan every ``interval`` seconds in a worker thread: a ``scandir`` of the
repository and of each model directory, no file contents read. Polling works the same on every
filesystem, in containers and on network volumes where inotify is absent or unreliable, and
needs no dependency.

A new ``<model>/<version>/`` directory is offered to the :class:`VersionManager` once it has
looked the same (names, sizes and modification times of its files) for two scans in a row, so
a copy in progress is not loaded half-written. Safest is still to copy a version under a
hidden name (``.3``) and rename it into place: hidden and ``_`` names are ignored.
Changing the files of an existing version directory is not detected: versions are immutable,
ship a new number.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import CONFIG_FILE, ModelConfig, load_config
from ..loader import resolve
from ..model import Model
from .repository import _is_model_dir
from .versions import VersionManager

__all__ = ["RepositoryWatcher", "layout", "on_disk", "resolve_version"]

log = logging.getLogger("modelport.runtime")

_Key = tuple[str, str]
"""(model directory name, version directory name)."""
_Fingerprint = tuple[tuple[str, int, int], ...]


def layout(root: Path) -> list[Path] | None:
    """The model directories to watch under ``root``: ``[root]`` for one model with versions,
    its subdirectories for a repository, None for what cannot hold versions (one artifact or
    one model directory)."""
    if not root.is_dir() or _is_model_dir(root):
        return None
    if _version_dirs(root):
        return [root]
    return _subdirs(root)


def on_disk(root: Path, model: str, version: str) -> bool:
    """Whether ``root`` holds a directory for ``version`` of the model served as ``model``
    (found by the watcher or not yet)."""
    if not version.isdigit():
        return False
    for model_dir in layout(root) or []:
        version_dir = model_dir / version
        if not version_dir.is_dir() or not _is_model_dir(version_dir):
            continue
        if (_config_name(model_dir, version_dir) or model_dir.name) == model:
            return True
    return False


def resolve_version(
    model_dir: Path, version_dir: Path, *, trust: bool | None, options: Mapping[str, Any]
) -> Model:
    """The model in ``model_dir/<version>`` (resolved, not loaded), configured as
    :func:`modelport.runtime.repository.discover` does."""
    own, shared = version_dir / CONFIG_FILE, model_dir / CONFIG_FILE
    if own.is_file():
        config = load_config(own)
    else:
        config = load_config(shared) if shared.is_file() else ModelConfig()
    model = resolve(
        version_dir,
        name=config.name or model_dir.name,
        version=version_dir.name,
        trust=trust,
        config=config,
    )
    for key, value in options.items():
        model.options.setdefault(key, value)
    return model


class RepositoryWatcher:
    """Polls ``root`` and tells a :class:`VersionManager` about versions added or removed."""

    def __init__(
        self,
        root: Path,
        *,
        interval: float = 2.0,
        trust: bool | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"watch interval must be > 0 seconds, got {interval}")
        self.root = root
        self.interval = interval
        self._trust = trust
        self._options = dict(options or {})
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._names: dict[_Key, str] = {}
        """The model name each known version directory was served under."""

    def start(self, manager: VersionManager) -> None:
        """Start polling in the running loop (no-op for a layout without versions)."""
        if layout(self.root) is None:
            log.info("watching off: %s holds no versioned models", self.root)
            return
        # The baseline, at once: versions present now are known, not new (a few scandirs).
        known = self._scan()
        for key, (model_dir, version_dir, _) in known.items():
            name = self._names[key] = _config_name(model_dir, version_dir) or key[0]
            manager.known(name, key[1], self._factory(model_dir, version_dir))
        log.info(
            "watching the model repository",
            extra={"path": str(self.root), "interval": self.interval, "versions": len(known)},
        )
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(manager, known))

    async def stop(self) -> None:
        """Stop polling; a version being loaded finishes first."""
        if self._task is None or self._stop is None:
            return
        self._stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(
        self, manager: VersionManager, known: dict[_Key, tuple[Path, Path, _Fingerprint]]
    ) -> None:
        assert self._stop is not None
        pending: dict[_Key, _Fingerprint] = {}
        while not self._stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):  # not the builtin before 3.11
                await asyncio.wait_for(self._stop.wait(), self.interval)
            if self._stop.is_set():
                return
            try:
                current = await asyncio.to_thread(self._scan, set(known))
            except OSError as exc:
                log.warning("cannot scan the model repository: %s", exc)
                continue
            for key in sorted(known.keys() - current.keys()):
                del known[key]
                pending.pop(key, None)
                name = self._names.pop(key, key[0])
                log.info("version removed", extra={"model": name, "version": key[1]})
                await manager.withdraw(name, key[1])
            for key in sorted(current.keys() - known.keys()):
                model_dir, version_dir, fingerprint = current[key]
                if pending.get(key) != fingerprint:
                    pending[key] = fingerprint  # seen once: wait for it to settle
                    continue
                del pending[key]
                known[key] = current[key]
                name = await self._name_of(key, model_dir, version_dir)
                log.info("new version found", extra={"model": name, "version": key[1]})
                await manager.offer(name, key[1], self._factory(model_dir, version_dir))
            for key in pending.keys() - current.keys():
                del pending[key]

    def _factory(self, model_dir: Path, version_dir: Path) -> functools.partial[Model]:
        return functools.partial(
            resolve_version, model_dir, version_dir, trust=self._trust, options=self._options
        )

    async def _name_of(self, key: _Key, model_dir: Path, version_dir: Path) -> str:
        """The served name: ``name:`` in its modelport.yaml, else the directory's name."""
        name = self._names.get(key)
        if name is None:
            name = await asyncio.to_thread(_config_name, model_dir, version_dir) or key[0]
            self._names[key] = name
        return name

    def _scan(self, known: set[_Key] | None = None) -> dict[_Key, tuple[Path, Path, _Fingerprint]]:
        """Every version directory; fingerprints only for those not in ``known``."""
        found: dict[_Key, tuple[Path, Path, _Fingerprint]] = {}
        for model_dir in layout(self.root) or []:
            for version_dir in _version_dirs(model_dir):
                key = (model_dir.name, version_dir.name)
                if known is not None and key in known:
                    found[key] = (model_dir, version_dir, ())
                elif _is_model_dir(version_dir):
                    found[key] = (model_dir, version_dir, _fingerprint(version_dir))
        return found


def _config_name(model_dir: Path, version_dir: Path) -> str | None:
    for file in (version_dir / CONFIG_FILE, model_dir / CONFIG_FILE):
        if file.is_file():
            try:
                return load_config(file).name
            except Exception:
                return None  # the load reports the bad file as this version's failure
    return None


def _subdirs(path: Path) -> list[Path]:
    try:
        entries = sorted(os.scandir(path), key=lambda e: e.name)
    except OSError:
        return []
    return [Path(e.path) for e in entries if e.is_dir() and not e.name.startswith((".", "_"))]


def _version_dirs(model_dir: Path) -> list[Path]:
    return [d for d in _subdirs(model_dir) if d.name.isdigit()]


def _fingerprint(directory: Path) -> _Fingerprint:
    entries = []
    for dirpath, _, filenames in os.walk(directory):
        for filename in filenames:
            path = os.path.join(dirpath, filename)
            try:
                st = os.stat(path)
            except OSError:
                continue
            entries.append((os.path.relpath(path, directory), st.st_size, st.st_mtime_ns))
    return tuple(sorted(entries))
