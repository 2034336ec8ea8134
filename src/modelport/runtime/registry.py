"""The models being served: name → version → :class:`ModelRunner`."""

from __future__ import annotations

from ..errors import ConfigError, ModelNotFoundError
from .runner import ModelRunner

__all__ = ["ModelRegistry", "version_key"]


def version_key(version: str) -> tuple[int, int, str]:
    """Sort key: numeric versions by value, after them the others by name."""
    return (0, int(version), "") if version.isdigit() else (1, 0, version)


class ModelRegistry:
    """Runners by model name and version; without a version, the latest one answers."""

    def __init__(self) -> None:
        self._models: dict[str, dict[str, ModelRunner]] = {}
        self.live: dict[str, str] = {}
        """The version answering requests that name none, per model (set by the version
        manager); a model missing here is answered by its latest version."""

    def add(self, runner: ModelRunner) -> None:
        versions = self._models.setdefault(runner.name, {})
        if runner.version in versions:
            raise ConfigError(f"model {runner.name!r} version {runner.version} is defined twice")
        versions[runner.version] = runner

    def get(self, name: str, version: str | None = None) -> ModelRunner:
        """The runner for ``name`` (and ``version``, else the latest)."""
        versions = self._models.get(name)
        if not versions:
            known = ", ".join(sorted(self._models)) or "none"
            raise ModelNotFoundError(f"unknown model {name!r}; served models: {known}")
        if version is None:
            live = versions.get(self.live.get(name, ""))
            return live if live is not None else versions[max(versions, key=version_key)]
        runner = versions.get(version)
        if runner is None:
            raise ModelNotFoundError(
                f"model {name!r} has no version {version!r}; versions: "
                f"{', '.join(self.versions(name))}"
            )
        return runner

    def remove(self, name: str, version: str) -> ModelRunner:
        """Take ``name``/``version`` out (the caller drains and closes it)."""
        runner = self.get(name, version)
        del self._models[name][version]
        if not self._models[name]:
            del self._models[name]
        return runner

    def versions(self, name: str) -> list[str]:
        """The versions of ``name``, oldest first."""
        return sorted(self._models.get(name, {}), key=version_key)

    def runners(self) -> list[ModelRunner]:
        """Every runner, by name then version."""
        return [self._models[name][v] for name in sorted(self._models) for v in self.versions(name)]

    def __len__(self) -> int:
        return sum(len(v) for v in self._models.values())
