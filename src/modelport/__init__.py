"""modelport: take a trained model from any framework and deploy it anywhere, fast.

``import modelport`` imports no ML framework; each runtime loads its framework on first use.
"""

from __future__ import annotations

from ._version import __version__
from .config import BatchingConfig, ModelConfig
from .errors import (
    ArtifactError,
    ArtifactNotFoundError,
    ConfigError,
    CorruptArtifactError,
    ExportError,
    InvalidInputError,
    MissingDependencyError,
    ModelNotFoundError,
    ModelNotReadyError,
    ModelportError,
    OverloadedError,
    PredictionError,
    UnknownFormatError,
    UntrustedArtifactError,
)
from .loader import load
from .model import Model
from .signature import Signature, TensorSpec

__all__ = [
    "ArtifactError",
    "ArtifactNotFoundError",
    "BatchingConfig",
    "ConfigError",
    "CorruptArtifactError",
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
    "TensorSpec",
    "UnknownFormatError",
    "UntrustedArtifactError",
    "__version__",
    "load",
]
