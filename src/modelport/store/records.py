"""What the prediction log stores: records, their row encoding, and feedback validation.

Nothing here touches a database, so the runtime can build records without SQLAlchemy.
Encoding arrays to JSON happens in :func:`to_row`, which the background writer calls, never the
request path.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidInputError

__all__ = [
    "MAX_METADATA_BYTES",
    "RESERVED_METADATA_KEYS",
    "PredictionRecord",
    "encode_tensors",
    "new_record_id",
    "to_row",
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

    ``inputs`` and ``outputs`` are referenced, not copied: the caller must not mutate them after
    handing the record to :meth:`PredictionLog.record`.
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


def encode_tensors(tensors: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Named arrays as JSON-ready ``{name: {"shape", "datatype", "data"}}`` (data flattened)."""
    encoded: dict[str, Any] = {}
    for name, value in tensors.items():
        array = np.asarray(value)
        if array.dtype.kind in "SUO":
            data: list[Any] = [_text(v) for v in array.reshape(-1)]
        else:
            data = array.reshape(-1).tolist()
        encoded[name] = {"shape": list(array.shape), "datatype": array.dtype.str, "data": data}
    return encoded


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _summary(tensors: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Shape and dtype of each array, without the data: what is kept above the size limit."""
    return {
        name: {"shape": list(np.shape(value)), "datatype": np.asarray(value).dtype.str}
        for name, value in tensors.items()
    }


def _json_dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=_default).encode()


def _fast_dumps() -> Callable[[Any], bytes] | None:
    try:
        import orjson
    except ImportError:
        return None
    option = orjson.OPT_SERIALIZE_NUMPY

    def dumps(value: Any) -> bytes:
        return orjson.dumps(value, default=_default, option=option)  # type: ignore[no-any-return]

    return dumps


def _default(value: Any) -> Any:
    if isinstance(value, np.ndarray):  # orjson hands over arrays it cannot write itself
        raise TypeError(f"array of {value.dtype} left to the general encoder")
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


_dumps = _fast_dumps() or _json_dumps


def _tensors_json(tensors: Mapping[str, np.ndarray]) -> bytes:
    # orjson writes numeric arrays itself, several times faster than tolist() + json; arrays it
    # does not take (text, float16, big-endian, non-contiguous) go the slow, general way.
    if _dumps is not _json_dumps:
        try:
            return _dumps(
                {
                    name: {"shape": a.shape, "datatype": a.dtype.str, "data": a.reshape(-1)}
                    for name, a in tensors.items()
                }
            )
        except (TypeError, AttributeError):  # AttributeError: not an ndarray
            pass
    return _dumps(encode_tensors(tensors))


def to_row(record: PredictionRecord, max_input_bytes: int) -> dict[str, Any]:
    """The database row for ``record``; inputs above ``max_input_bytes`` keep only a summary."""
    encoded = _tensors_json(record.inputs)
    size = len(encoded)
    digest = hashlib.sha256(encoded).hexdigest()
    truncated = size > max_input_bytes
    inputs_json = (_dumps(_summary(record.inputs)) if truncated else encoded).decode()
    outputs = None if record.outputs is None else _tensors_json(record.outputs).decode()
    return {
        "record_id": record.record_id or new_record_id(),
        "request_id": record.request_id,
        "model": record.model,
        "version": record.version,
        "ts": float(record.time),
        "inputs": inputs_json,
        "inputs_sha256": digest,
        "inputs_bytes": size,
        "inputs_truncated": truncated,
        "outputs": outputs,
        "latency_ms": float(record.latency_ms),
        "status": record.status,
        "error": record.error,
        "metadata": _dumps(dict(record.metadata or {})).decode(),
    }


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
