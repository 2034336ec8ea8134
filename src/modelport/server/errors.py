"""The one table from modelport errors to HTTP status and gRPC status code.

Every front door maps exceptions here; the first class in a raised error's MRO that the table
names decides. gRPC codes are the names of ``grpc.StatusCode`` members, so this module imports
no transport.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from .. import errors

__all__ = [
    "ERROR_TABLE",
    "PayloadTooLargeError",
    "Status",
    "internal_error",
    "private_message",
    "status_for",
]

log = logging.getLogger("modelport.server")


class PayloadTooLargeError(errors.InvalidInputError):
    """The request body is larger than the server accepts."""


class Status(NamedTuple):
    http: int
    grpc: str


ERROR_TABLE: dict[type[BaseException], Status] = {
    PayloadTooLargeError: Status(413, "RESOURCE_EXHAUSTED"),
    errors.InvalidInputError: Status(400, "INVALID_ARGUMENT"),
    errors.ModelNotFoundError: Status(404, "NOT_FOUND"),
    errors.UnknownRequestError: Status(404, "NOT_FOUND"),
    errors.ModelNotReadyError: Status(503, "UNAVAILABLE"),
    errors.OverloadedError: Status(503, "RESOURCE_EXHAUSTED"),
    errors.StoreUnavailableError: Status(503, "UNAVAILABLE"),
    errors.DeadlineExceededError: Status(504, "DEADLINE_EXCEEDED"),
    errors.ConfigError: Status(500, "INTERNAL"),
    errors.ArtifactError: Status(500, "INTERNAL"),
    errors.MissingDependencyError: Status(500, "INTERNAL"),
    errors.PredictionError: Status(500, "INTERNAL"),
    errors.ModelportError: Status(500, "INTERNAL"),
}
"""Error class → (HTTP status, gRPC status code name)."""

_INTERNAL = Status(500, "INTERNAL")


def status_for(exc: BaseException) -> Status:
    """The status for ``exc``; anything unexpected is an internal error."""
    for cls in type(exc).__mro__:
        status = ERROR_TABLE.get(cls)
        if status is not None:
            return status
    return _INTERNAL



def private_message(model: str | None, request_id: str | None) -> str:
    """What a caller is told of an internal error (its class, message and any paths in it go to
    the server's log, under the request id): the model that failed, and the id to ask about."""
    what = f"model {model!r} failed" if model else "internal error"
    return f"{what} (request id {request_id})" if request_id else what


def internal_error(
    exc: BaseException,
    *,
    model: str | None,
    request_id: str | None,
    expose: bool,
    **context: Any,
) -> str:
    """Log an internal error (a 500, gRPC ``INTERNAL``) with its request id, and return what
    the caller is told: :func:`private_message`, or the error itself when ``expose``."""
    if isinstance(exc, errors.ModelportError):
        detail = str(exc)
    else:
        detail = f"internal error: {type(exc).__name__}: {exc}"
    log.error(
        "request failed",
        exc_info=not isinstance(exc, errors.ModelportError) or exc.__cause__ is not None,
        extra={"request_id": request_id, "model": model, "error": detail, **context},
    )
    return detail if expose else private_message(model, request_id)
