"""The repository watcher on real directories: what it reports, when, and that it stops."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from modelport.runtime.versions import ModelFactory
from modelport.runtime.watcher import RepositoryWatcher, layout
from tests.builders import onnx_mlp
from tests.server.conftest import TINY
from tests.versions.conftest import make_version


class Recorder:
    """Stands in for the version manager: records what the watcher reports, builds models."""

    def __init__(self) -> None:
        self.found: list[tuple[str, str]] = []
        self.offered: list[tuple[str, str, Any]] = []
        self.withdrawn: list[tuple[str, str]] = []
        self.changed = asyncio.Event()

    def known(self, name: str, version: str, factory: ModelFactory) -> None:
        self.found.append((name, version))

    async def offer(self, name: str, version: str, factory: ModelFactory) -> None:
        self.offered.append((name, version, factory()))
        self.changed.set()

    async def withdraw(self, name: str, version: str) -> None:
        self.withdrawn.append((name, version))
        self.changed.set()


def _watch(root: Path, script: Any, interval: float = 0.05) -> Recorder:
    recorder = Recorder()

    async def main() -> None:
        watcher = RepositoryWatcher(root, interval=interval)
        manager: Any = recorder
        watcher.start(manager)
        try:
            await script(recorder)
        finally:
            await watcher.stop()
        assert watcher._task is None

    asyncio.run(asyncio.wait_for(main(), 60))
    return recorder


async def _next_change(recorder: Recorder) -> None:
    recorder.changed.clear()
    await recorder.changed.wait()


def test_layouts_that_hold_versions(tmp_path: Path) -> None:
    artifact = onnx_mlp(tmp_path / "a.onnx", TINY)
    assert layout(artifact) is None
    model_dir = tmp_path / "plain"
    model_dir.mkdir()
    onnx_mlp(model_dir / "model.onnx", TINY)
    assert layout(model_dir) is None
    versioned = tmp_path / "versioned"
    make_version(versioned, 1)
    assert layout(versioned) == [versioned]
    repo = tmp_path / "repo"
    make_version(repo / "b", 1)
    make_version(repo / "a", 1)
    (repo / ".hidden").mkdir()
    (repo / "_private").mkdir()
    assert layout(repo) == [repo / "a", repo / "b"]


def test_new_versions_are_offered_once_and_removed_ones_withdrawn(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_version(repo / "tiny", 1)
    make_version(repo / "named", 1, config="name: renamed\n")

    async def script(recorder: Recorder) -> None:
        staging = repo / "tiny" / ".2"
        staging.mkdir()
        onnx_mlp(staging / "model.onnx", TINY, seed=2)
        await asyncio.sleep(0.3)  # several scans: hidden directories are not versions
        assert recorder.offered == []
        os.rename(staging, repo / "tiny" / "2")
        await _next_change(recorder)
        make_version(repo / "named", 2, config="name: renamed\n")
        await _next_change(recorder)
        shutil.rmtree(repo / "tiny" / "1")
        await _next_change(recorder)
        await asyncio.sleep(0.3)  # and nothing is reported twice

    recorder = _watch(repo, script)
    assert sorted(recorder.found) == [("renamed", "1"), ("tiny", "1")]
    assert [(name, version) for name, version, _ in recorder.offered] == [
        ("tiny", "2"),
        ("renamed", "2"),
    ]
    model = recorder.offered[0][2]
    assert (model.name, model.version, model.loaded) == ("tiny", "2", False)
    assert recorder.offered[1][2].name == "renamed"
    assert recorder.withdrawn == [("tiny", "1")]


def test_a_version_still_being_written_is_not_offered_until_it_settles(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_version(repo / "tiny", 1)

    async def script(recorder: Recorder) -> None:
        target = repo / "tiny" / "2"
        target.mkdir()
        onnx_mlp(target / "model.onnx", TINY, seed=2)
        weights = target / "extra.bin"
        # Keep writing while several scans (0.25 s apart) look at it: never offered meanwhile.
        for k in range(60):
            with weights.open("ab") as f:
                f.write(os.urandom(1024))
            await asyncio.sleep(0.02)
            assert recorder.offered == [], f"offered while being written (step {k})"
        await _next_change(recorder)

    recorder = _watch(repo, script, interval=0.25)
    assert [(n, v) for n, v, _ in recorder.offered] == [("tiny", "2")]


def test_the_watch_interval_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="watch interval must be > 0"):
        RepositoryWatcher(tmp_path, interval=0)
