"""``modelport.load``: from a path (or a Python object) to a ready :class:`~modelport.Model`."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from .config import CONFIG_FILE, ModelConfig, load_config
from .errors import (
    ArtifactNotFoundError,
    ConfigError,
    ModelportError,
)
from .frameworks import runtime_class
from .frameworks.detect import detect_format, find_artifact
from .model import Model

__all__ = ["load", "resolve"]

USER_MODULE = "model.py"


def load(
    source: str | Path | Any,
    *,
    name: str | None = None,
    version: str | None = None,
    framework: str | None = None,
    trust: bool | None = None,
    config: ModelConfig | None = None,
    **options: Any,
) -> Model:
    """Load a model, ready to predict.

    ``source`` is an artifact file, a model directory (artifact plus optional ``model.py`` and
    ``modelport.yaml``), a :class:`Model` instance, or any Python callable or object with a
    ``predict`` method. The format is recognised from the artifact itself; ``framework``
    overrides that. ``trust=True`` allows formats that run code on load (pickle).
    Remaining ``options`` go to the runtime (e.g. ``intra_op_threads`` for ONNX).
    """
    if isinstance(source, Model):
        return source.ensure_loaded()
    if not isinstance(source, (str, Path)):
        from .frameworks.python import PythonModel

        cfg = (config or ModelConfig()).merged(name=name, version=version)
        return PythonModel(source, config=cfg, **options).ensure_loaded()
    model = resolve(
        Path(source),
        name=name,
        version=version,
        framework=framework,
        trust=trust,
        config=config,
        **options,
    )
    return model.ensure_loaded()


def resolve(
    path: Path,
    *,
    name: str | None = None,
    version: str | None = None,
    framework: str | None = None,
    trust: bool | None = None,
    config: ModelConfig | None = None,
    **options: Any,
) -> Model:
    """Build the model for ``path`` without loading its weights."""
    if not path.exists():
        raise ArtifactNotFoundError(f"{path}: no such file or directory")
    directory = path if path.is_dir() else path.parent
    cfg = config if config is not None else _config_beside(directory, path)
    cfg = cfg.merged(name=name, version=version, framework=framework, trust=trust)
    if path.is_dir() and cfg.framework == "huggingface" and not cfg.artifact:
        artifact: Path | None = path  # the directory is the model
    else:
        artifact = find_artifact(path, cfg.artifact) if path.is_dir() else path
    fmt = cfg.framework or (detect_format(artifact) if artifact is not None else "python")
    runtime = runtime_class(fmt)
    # Beside weights, model.py may hold only the nn.Module class they belong to.
    user = (
        _user_class(directory, cfg, required=artifact is None)
        if (directory / USER_MODULE).is_file()
        else None
    )
    cls = _compose(user, runtime)
    if cfg.name is None and path.is_dir():
        cfg = cfg.merged(name=path.name)
    return cls(artifact, config=cfg, **options)


def _config_beside(directory: Path, path: Path) -> ModelConfig:
    file = directory / CONFIG_FILE
    if not file.is_file():
        return ModelConfig()
    cfg = load_config(file)
    # A config beside a single file applies to it only if it names no other artifact.
    if path.is_file() and cfg.artifact and cfg.artifact != path.name:
        return ModelConfig()
    return cfg


def _compose(user: type[Model] | None, runtime: type[Model]) -> type[Model]:
    """The user's class with the runtime's ``load``/``predict`` under it, where it lacks them."""
    if user is None:
        return runtime
    if issubclass(user, runtime) or runtime.__name__ == "PythonModel":
        return user
    return type(user.__name__, (user, runtime), {"__module__": user.__module__})


def _user_class(directory: Path, cfg: ModelConfig, *, required: bool = True) -> type[Model] | None:
    module = _import_user_module(directory / USER_MODULE)
    classes = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, Model) and obj.__module__ == module.__name__
    ]
    if cfg.model_class:
        chosen = [c for c in classes if c.__name__ == cfg.model_class]
        if not chosen:
            raise ConfigError(
                f"{directory / USER_MODULE}: no Model subclass named {cfg.model_class!r} "
                f"(found {[c.__name__ for c in classes]})"
            )
        return chosen[0]
    if not classes:
        if not required:
            return None
        raise ConfigError(f"{directory / USER_MODULE}: defines no subclass of modelport.Model")
    if len(classes) > 1:
        # Prefer the most derived: a class that no other class in the file extends.
        leaves = [c for c in classes if not any(o is not c and issubclass(o, c) for o in classes)]
        if len(leaves) != 1:
            raise ConfigError(
                f"{directory / USER_MODULE}: several Model subclasses "
                f"{[c.__name__ for c in leaves]}; name one with 'model_class:' in {CONFIG_FILE}"
            )
        return leaves[0]
    return classes[0]


def _import_user_module(file: Path) -> ModuleType:
    digest = hashlib.sha1(str(file.resolve()).encode()).hexdigest()[:12]
    module_name = f"modelport_user_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{file}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except ModelportError:
        del sys.modules[module_name]
        raise
    except Exception as exc:
        del sys.modules[module_name]
        raise ConfigError(f"{file}: failed to import: {type(exc).__name__}: {exc}") from exc
    return module
