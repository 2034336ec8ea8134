"""modelport: take a trained model from any framework and deploy it anywhere, fast.

``import modelport`` imports no ML framework and not even numpy: public names are resolved
on first access, and each runtime loads its framework on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    ArtifactError,
    ArtifactNotFoundError,
    ConfigError,
    CorruptArtifactError,
    DeadlineExceededError,
    DeviceUnavailableError,
    ExportError,
    InvalidInputError,
    MissingDependencyError,
    ModelNotFoundError,
    ModelNotReadyError,
    ModelportError,
    OverloadedError,
    PredictionError,
    StoreUnavailableError,
    UnknownFormatError,
    UnknownRequestError,
    UntrustedArtifactError,
)

if TYPE_CHECKING:
    from .config import BatchingConfig, ModelConfig
    from .loader import load
    from .model import Model
    from .signature import Signature, TensorSpec

__all__ = [
    "ArtifactError",
    "ArtifactNotFoundError",
    "BatchingConfig",
    "ConfigError",
    "CorruptArtifactError",
    "DeadlineExceededError",
    "DeviceUnavailableError",
    "ExportError",
    "InvalidInputError",
    "MissingDependencyError",
    "Model",
    "ModelConfig",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "ModelportError",
    "OverloadedError",
    "PredictionError",
    "Signature",
    "StoreUnavailableError",
    "TensorSpec",
    "UnknownFormatError",
    "UnknownRequestError",
    "UntrustedArtifactError",
    "__version__",
    "load",
]

_LAZY = {
    "BatchingConfig": ".config",
    "ModelConfig": ".config",
    "load": ".loader",
    "Model": ".model",
    "Signature": ".signature",
    "TensorSpec": ".signature",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modelport' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
