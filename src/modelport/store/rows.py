"""Records → database rows, :data:`ROW_COLUMNS` in order, encoded by the writer.

The writer turns each record the request path left in the :mod:`.inbox` into a row: tensors as
compact JSON (orjson writes numeric arrays itself), the inputs' SHA-256, the metadata, and
keeps a batch's rows as one flat list of fields (:data:`ROW_WIDTH` per row), which is what a
multi-row INSERT binds. The spool keeps rows as JSON objects: :func:`row_as_dict` and
:func:`row_from_dict` convert.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._json import dumps, fast
from .inbox import Fields, Tensor
from .records import new_record_id

__all__ = [
    "ROW_COLUMNS",
    "ROW_WIDTH",
    "row_as_dict",
    "row_from_dict",
    "row_of",
    "rows_in",
    "tensors_json",
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
    encoded = tensors_json(inputs)
    size = len(encoded)
    truncated = size > max_input_bytes
    return (
        record_id or new_record_id(),
        request_id,
        model,
        version,
        float(ts),
        (dumps(_summary(inputs)) if truncated else encoded).decode(),
        hashlib.sha256(encoded).hexdigest(),
        size,
        truncated,
        None if outputs is None else tensors_json(outputs).decode(),
        float(latency),
        status,
        error,
        meta or "{}",
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


def tensors_json(tensors: list[Tensor]) -> bytes:
    """``{name: {"shape", "datatype", "data"}}`` as JSON, data flattened."""
    if fast:  # orjson writes numeric arrays itself, several times faster than tolist() + json
        try:
            return dumps({name: {"shape": shape, "datatype": dt, "data": _values(dt, data)}
                          for name, dt, shape, data in tensors})  # fmt: skip
        except TypeError:  # arrays orjson does not take: float16, big-endian, complex
            pass
    return dumps(
        {
            name: {"shape": shape, "datatype": dt, "data": _values(dt, data, as_list=True)}
            for name, dt, shape, data in tensors
        }
    )


def _values(dt: str, data: bytes | list[str], as_list: bool = False) -> Any:
    if isinstance(data, list):
        return data
    array = np.frombuffer(data, dtype=dt)
    return array.tolist() if as_list else array


def _summary(tensors: list[Tensor]) -> dict[str, Any]:
    """Shape and dtype of each array, without the data: what is kept above the size limit."""
    return {name: {"shape": shape, "datatype": dt} for name, dt, shape, _ in tensors}
