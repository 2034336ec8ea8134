"""The modelport exception tree.

Every error modelport raises on purpose derives from :class:`ModelportError`, and also from
the builtin a caller would expect, so ``except ValueError`` keeps working::

    ModelportError
    ├── ArtifactError                 the model artifact on disk is unusable
    │   ├── ArtifactNotFoundError     (FileNotFoundError) nothing at that path
    │   ├── UnknownFormatError        (ValueError) no runtime recognises it
    │   ├── CorruptArtifactError      (ValueError) truncated, corrupt or not what it claims
    │   └── UntrustedArtifactError    (PermissionError) pickle without ``trust=True``
    ├── ConfigError                   (ValueError) modelport.yaml or an option is invalid
    ├── MissingDependencyError        (ImportError) an optional extra is not installed
    ├── InvalidInputError             (ValueError) request data does not fit the signature
    ├── ModelNotFoundError            (LookupError) unknown model or version
    ├── ModelNotReadyError            the model is loading, unloading or failed to load
    ├── OverloadedError               the queue is full; retry later
    ├── DeadlineExceededError         (TimeoutError) no answer within the request's timeout
    ├── PredictionError               the model itself raised while predicting
    ├── ExportError                   conversion or parity check failed
    ├── UnknownRequestError           (LookupError) feedback for a request id never logged
    └── StoreUnavailableError         the prediction log's database cannot be reached

Transports map these to status codes in one table at the edge (``server/errors.py``).
"""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "ArtifactNotFoundError",
    "ConfigError",
    "CorruptArtifactError",
    "DeadlineExceededError",
    "ExportError",
    "InvalidInputError",
    "MissingDependencyError",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "ModelportError",
    "OverloadedError",
    "PredictionError",
    "StoreUnavailableError",
    "UnknownFormatError",
    "UnknownRequestError",
    "UntrustedArtifactError",
]


class ModelportError(Exception):
    """Base class of every error modelport raises on purpose."""


class ArtifactError(ModelportError):
    """A model artifact cannot be used."""


class ArtifactNotFoundError(ArtifactError, FileNotFoundError):
    """No file or directory at the given path."""


class UnknownFormatError(ArtifactError, ValueError):
    """No runtime recognises the artifact."""


class CorruptArtifactError(ArtifactError, ValueError):
    """The artifact is truncated, corrupt, or not what its name claims."""


class UntrustedArtifactError(ArtifactError, PermissionError):
    """Loading the artifact would run arbitrary code and the caller did not trust it."""


class ConfigError(ModelportError, ValueError):
    """A configuration file or option is invalid."""


class DeviceUnavailableError(ModelportError):
    """The device a model asks for (a GPU) is not there; the message says what was found."""


class MissingDependencyError(ModelportError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


class InvalidInputError(ModelportError, ValueError):
    """Input data does not fit the model's signature or the protocol."""


class ModelNotFoundError(ModelportError, LookupError):
    """No model, or no such version of it."""


class ModelNotReadyError(ModelportError):
    """The model exists but cannot serve right now."""


class OverloadedError(ModelportError):
    """The request was refused because the queue is full."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceededError(ModelportError, TimeoutError):
    """The request's timeout passed before the model answered."""


class PredictionError(ModelportError):
    """The model raised while predicting."""


class ExportError(ModelportError):
    """Export to another format failed or its outputs differ from the original's."""


class UnknownRequestError(ModelportError, LookupError):
    """Feedback names a request id the prediction log does not hold."""


class StoreUnavailableError(ModelportError):
    """The prediction log's database cannot be reached right now."""
