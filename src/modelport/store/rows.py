"""Records → database rows, :data:`ROW_COLUMNS` in order, encoded by the writer.

The writer turns each record the request path left in the :mod:`.inbox` into a row: arrays as
compact JSON (orjson writes numeric arrays itself), the inputs' SHA-256, the metadata, and
keeps a batch's rows as one flat list of fields (:data:`ROW_WIDTH` per row), which is what a
multi-row INSERT binds. The spool keeps rows as JSON objects: :func:`row_as_dict` and
:func:`row_from_dict` convert.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .inbox import Fields
from .records import new_record_id

__all__ = [
    "ROW_COLUMNS",
    "ROW_WIDTH",
    "encode_tensors",
    "row_as_dict",
    "row_from_dict",
    "row_of",
    "rows_in",
]

ROW_COLUMNS = (
    "record_id",
    "request_id",
    "model",
    "version",
    "ts",
    "inputs",
    "inputs_sha256",
    "inputs_bytes",
    "inputs_truncated",
    "outputs",
    "latency_ms",
    "status",
    "error",
    "metadata",
)
"""The columns of ``modelport_predictions`` a row fills, in order (``id`` is the database's)."""

ROW_WIDTH = len(ROW_COLUMNS)

Row = tuple[Any, ...]


def row_of(fields: Fields, max_input_bytes: int) -> Row:
    """The row for one record of the inbox; inputs whose JSON is above ``max_input_bytes``
    keep a summary."""
    record_id, request_id, model, version, ts, latency, status, error, meta, inputs, outputs = (
        fields
    )
    encoded = _tensors_json(inputs)
    size = len(encoded)
    truncated = size > max_input_bytes
    return (
        record_id or new_record_id(),
        request_id,
        model,
        version,
        float(ts),
        (_dumps(_summary(inputs)) if truncated else encoded).decode(),
        hashlib.sha256(encoded).hexdigest(),
        size,
        truncated,
        None if outputs is None else _tensors_json(outputs).decode(),
        float(latency),
        status,
        error,
        _dumps(dict(meta)).decode() if meta else "{}",
    )


def row_as_dict(row: Sequence[Any]) -> dict[str, Any]:
    """``row`` as ``{column: value}`` (how the spool writes it)."""
    return dict(zip(ROW_COLUMNS, row))


def row_from_dict(row: Mapping[str, Any]) -> Row:
    """A spooled ``{column: value}`` back to a row."""
    return tuple(row[c] for c in ROW_COLUMNS)


def rows_in(flat: Sequence[Any]) -> list[Sequence[Any]]:
    """The rows of a flat list of row fields."""
    return [flat[k : k + ROW_WIDTH] for k in range(0, len(flat), ROW_WIDTH)]


def encode_tensors(tensors: Mapping[str, np.ndarray] | Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Named arrays as JSON-ready ``{name: {"shape", "datatype", "data"}}`` (data flattened)."""
    pairs = tensors.items() if isinstance(tensors, Mapping) else tensors
    encoded: dict[str, Any] = {}
    for name, value in pairs:
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


def _summary(tensors: list[tuple[str, Any]]) -> dict[str, Any]:
    """Shape and dtype of each array, without the data: what is kept above the size limit."""
    return {
        name: {"shape": list(np.shape(value)), "datatype": np.asarray(value).dtype.str}
        for name, value in tensors
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


def _tensors_json(tensors: list[tuple[str, Any]]) -> bytes:
    # orjson writes numeric arrays itself, several times faster than tolist() + json; arrays it
    # does not take (text, float16, big-endian, non-contiguous) go the slow, general way.
    if _dumps is not _json_dumps:
        try:
            return _dumps(
                {
                    name: {"shape": a.shape, "datatype": a.dtype.str, "data": a.reshape(-1)}
                    for name, a in tensors
                }
            )
        except (TypeError, AttributeError):  # AttributeError: not an ndarray
            pass
    return _dumps(encode_tensors(tensors))
