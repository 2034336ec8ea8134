"""What the prediction log takes: records, and validation of caller metadata and feedback.

Nothing here touches a database, so the runtime can build records without SQLAlchemy. Records
become rows in :mod:`.rows`, in the background writer, never on the request path.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidInputError

__all__ = [
    "MAX_METADATA_BYTES",
    "RESERVED_METADATA_KEYS",
    "FeedbackError",
    "PredictionRecord",
    "new_record_id",
    "new_record_ids",
    "refusal",
    "validate_feedback",
    "validate_metadata",
]

_PROCESS_ID = os.urandom(8).hex()
_COUNTER = itertools.count()


def _reseed() -> None:
    global _PROCESS_ID  # a forked worker must not repeat its parent's ids
    _PROCESS_ID = os.urandom(8).hex()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)
MAX_FEEDBACK_ITEMS = 100_000
MAX_LABEL_CHARS = 1024
MAX_REQUEST_ID_CHARS = 256
MAX_METADATA_BYTES = 4096
"""Caller-supplied metadata is at most this many bytes of compact JSON."""
RESERVED_METADATA_KEYS = frozenset({"shadow", "primary_version", "agrees"})
"""Keys the shadow mirror writes: a caller setting them would disguise traffic as shadow."""


@dataclass(slots=True)
class PredictionRecord:
    """One completed request, as the runner saw it.

    ``inputs`` and ``outputs`` are copied when the record is handed to
    :meth:`PredictionLog.record`; changing them afterwards does not change what is logged.
    """

    request_id: str
    model: str
    version: str
    inputs: Mapping[str, np.ndarray]
    outputs: Mapping[str, np.ndarray] | None = None
    latency_ms: float = 0.0
    status: str = "ok"
    """``"ok"``, or the error's class name when the request failed."""
    error: str | None = None
    metadata: Mapping[str, Any] | None = None
    """Caller-supplied fields (user, client, tags); must be JSON-serialisable."""
    time: float = field(default_factory=time.time)
    """Completion time, seconds since the epoch (UTC)."""
    record_id: str = ""
    """Unique per record, given by the writer unless set; makes spool replays idempotent."""


def new_record_id() -> str:
    """A unique id: 64 random bits for this process, then a counter (no syscall per record)."""
    return f"{_PROCESS_ID}{next(_COUNTER):016x}"


def new_record_ids(n: int) -> list[str]:
    """``n`` ids as :func:`new_record_id` makes them."""
    prefix = _PROCESS_ID
    return [f"{prefix}{c:016x}" for c in itertools.islice(_COUNTER, n)]


def validate_metadata(value: Any, what: str = "metadata") -> dict[str, Any]:
    """Caller-supplied metadata as a dict, or :class:`InvalidInputError` naming the problem.

    ``value`` is a JSON object (a dict) or a string holding one (how V2 parameters, which are
    scalars on gRPC, carry it); at most :data:`MAX_METADATA_BYTES` of JSON, with no key of
    :data:`RESERVED_METADATA_KEYS`.
    """
    if isinstance(value, bytes | str):
        raw = value.encode() if isinstance(value, str) else value
        if len(raw) > MAX_METADATA_BYTES:
            raise InvalidInputError(
                f"{what} is {len(raw)} bytes; at most {MAX_METADATA_BYTES} allowed"
            )
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InvalidInputError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInputError(
            f"{what} must be a JSON object (or a string holding one), got {type(value).__name__}"
        )
    try:
        size = len(json.dumps(value, separators=(",", ":"), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} cannot be stored as JSON: {exc}") from None
    if size > MAX_METADATA_BYTES:
        raise InvalidInputError(
            f"{what} is {size} bytes of JSON; at most {MAX_METADATA_BYTES} allowed"
        )
    reserved = sorted(RESERVED_METADATA_KEYS & value.keys())
    if reserved:
        raise InvalidInputError(
            f"{what} key(s) {reserved} are reserved for shadow answers; use other names"
        )
    return value


FeedbackError = dict[str, Any]
"""One refused row of a bulk feedback: ``{"index", "request_id", "error"}``."""


def refusal(index: int, request_id: Any, error: object) -> FeedbackError:
    """The :data:`FeedbackError` for item ``index`` (every layer of a bulk feedback reports
    refusals alike)."""
    return {"index": index, "request_id": request_id, "error": str(error)}


def validate_feedback(request_id: Any, value: Any) -> tuple[str, Any]:
    """Check a feedback pair; return it normalised or raise :class:`InvalidInputError`.

    ``value`` is the ground truth: a number, a label (non-empty string, or bool), or a flat list
    of those, one per row of the request.
    """
    if not isinstance(request_id, str) or not request_id.strip():
        raise InvalidInputError(
            f"feedback request id must be a non-empty string, got {request_id!r}"
        )
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        raise InvalidInputError(
            f"feedback request id is {len(request_id)} characters; at most "
            f"{MAX_REQUEST_ID_CHARS} allowed"
        )
    if isinstance(value, list):
        if not value:
            raise InvalidInputError("feedback value is an empty list")
        if len(value) > MAX_FEEDBACK_ITEMS:
            raise InvalidInputError(
                f"feedback value has {len(value)} items; at most {MAX_FEEDBACK_ITEMS} allowed"
            )
        return request_id, [_scalar(v, f"feedback value[{i}]") for i, v in enumerate(value)]
    return request_id, _scalar(value, "feedback value")


def _scalar(value: Any, what: str) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(f"{what} must be a finite number, got {value!r}")
        return value
    if isinstance(value, str):
        if not value.strip():
            raise InvalidInputError(f"{what} is an empty string")
        if len(value) > MAX_LABEL_CHARS:
            raise InvalidInputError(
                f"{what} is a label of {len(value)} characters; at most {MAX_LABEL_CHARS} allowed"
            )
        return value
    kind = "nested list" if isinstance(value, list) else type(value).__name__
    raise InvalidInputError(
        f"{what} must be a number, a label string or a flat list of those, got {kind}"
    )
