"""The one table from modelport errors to HTTP status and gRPC status code.

Every front door maps exceptions here; the first class in a raised error's MRO that the table
names decides. gRPC codes are the names of ``grpc.StatusCode`` members, so this module imports
no transport.
"""

from __future__ import annotations

from typing import NamedTuple

from .. import errors

__all__ = ["ERROR_TABLE", "PayloadTooLargeError", "Status", "private_message", "status_for"]


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
