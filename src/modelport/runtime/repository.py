"""Find the models under a path: one artifact, one model directory, or a model repository.

Layouts, as Triton and KServe users know them::

    tiny.onnx                         one artifact, served as "tiny"
    iris/                             one model directory: artifact + model.py + modelport.yaml
    iris/1/model.onnx, iris/2/...     one model with versions
    repo/<model>/<version>/<artifact> a repository of models with versions
    repo/<model>/<artifact>           ... or without (version from modelport.yaml, else "1")

A ``modelport.yaml`` beside the artifact applies to it; one in ``repo/<model>/`` applies to
every version that has none of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import CONFIG_FILE, ModelConfig, load_config
from ..errors import ArtifactNotFoundError, ConfigError
from ..frameworks.detect import EXTENSIONS
from ..loader import USER_MODULE, resolve
from ..model import Model

__all__ = ["discover"]

_AMBIGUOUS = {".pt", ".pth", ".json", ".txt", ".lgb", ".model", ".bst"}


def discover(
    path: Path, *, trust: bool | None = None, options: Mapping[str, Any] | None = None
) -> list[Model]:
    """The models under ``path``, resolved but not loaded.

    ``options`` are runtime defaults (e.g. ``intra_op_threads``); a model's own
    ``modelport.yaml`` ``runtime:`` section wins over them.
    """
    if not path.exists():
        raise ArtifactNotFoundError(f"{path}: no such file or directory")
    # Version directories first: a model's own modelport.yaml may sit beside them.
    if path.is_file():
        models = [resolve(path, trust=trust)]
    elif _versions(path):
        models = _versioned(path, trust)
    elif _is_model_dir(path):
        models = [resolve(path, trust=trust)]
    else:
        models = []
        for child in _subdirs(path):
            if _versions(child):
                models.extend(_versioned(child, trust))
            elif _is_model_dir(child):
                models.append(resolve(child, trust=trust))
        if not models:
            raise ConfigError(
                f"{path}: no models found; expected a model artifact, a model directory, or "
                "a repository laid out as <model>/<version>/<artifact>"
            )
    for model in models:
        for key, value in (options or {}).items():
            model.options.setdefault(key, value)
    return models


def _subdirs(path: Path) -> list[Path]:
    return [c for c in sorted(path.iterdir()) if c.is_dir() and not c.name.startswith((".", "_"))]


def _is_model_dir(path: Path) -> bool:
    for child in path.iterdir():
        if child.name in (CONFIG_FILE, USER_MODULE, "saved_model.pb"):
            return True
        suffix = child.suffix.lower()
        if child.is_file() and (suffix in EXTENSIONS or suffix in _AMBIGUOUS):
            return True
    return False


def _versions(path: Path) -> list[Path]:
    return [c for c in _subdirs(path) if c.name.isdigit() and _is_model_dir(c)]


def _versioned(model_dir: Path, trust: bool | None) -> list[Model]:
    shared = model_dir / CONFIG_FILE
    shared_config = load_config(shared) if shared.is_file() else ModelConfig()
    models = []
    for version_dir in _versions(model_dir):
        own = version_dir / CONFIG_FILE
        config = load_config(own) if own.is_file() else shared_config
        name = config.name or model_dir.name
        models.append(
            resolve(version_dir, name=name, version=version_dir.name, trust=trust, config=config)
        )
    return models
