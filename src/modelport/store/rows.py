"""Records → database rows, :data:`ROW_COLUMNS` in order, encoded by the writer.

The writer turns each record the request path left in the :mod:`.inbox` into a row: tensors as
compact JSON (orjson writes numeric arrays itself), the inputs' SHA-256, the metadata, and
keeps a batch's rows as one flat list of fields (:data:`ROW_WIDTH` per row), which is what a
multi-row INSERT binds. The spool keeps rows as JSON objects: :func:`row_as_dict` and
:func:`row_from_dict` convert.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat
from typing import Any

import numpy as np

from ._json import dumps, fast
from .inbox import Call, Fields, Tensor
from .records import new_record_id, new_record_ids

__all__ = [
    "ROW_COLUMNS",
    "ROW_WIDTH",
    "call_rows",
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
        int(truncated),  # 0/1: sqlite3 binds int at once, bool through its adapter lookup
        None if outputs is None else tensors_json(outputs).decode(),
        float(latency),
        status,
        error,
        meta or "{}",
    )


def call_rows(call: Call, max_input_bytes: int) -> list[Any] | None:
    """The rows of a model call's records as one flat list of fields, or None when the call is
    not the common case this encodes at once (then encode :meth:`Call.records` one by one).

    The common case is the batcher's: several requests of one row each and numeric tensors.
    Each tensor becomes JSON in one call for all its rows, cut at the rows' boundaries, so a
    record costs a few joins and a hash instead of a JSON document of its own; the text is
    the same :func:`row_of` writes (the tests compare them).
    """
    ids = call.request_ids
    n = len(ids)
    if n < 2 or not fast or call.rows.count(1) != n:
        return None
    inputs = _row_texts(call.inputs, n)
    outputs = _row_texts(call.outputs, n) if inputs is not None else None
    if inputs is None or outputs is None:
        return None
    started, meta = call.started, call.metadata
    if None in ids:  # callers gone: their rows are not recorded
        keep = [k for k in range(n) if ids[k] is not None]
        ids, meta = [ids[k] for k in keep], [meta[k] for k in keep]
        started = [started[k] for k in keep]
        inputs, outputs = [inputs[k] for k in keep], [outputs[k] for k in keep]
        n = len(keep)
    sizes = [len(encoded) for encoded in inputs]
    texts = [encoded.decode() for encoded in inputs]
    truncated = [0] * n
    if max(sizes, default=0) > max_input_bytes:
        summary = dumps(_summary(_one_row(call.inputs))).decode()
        texts = [summary if size > max_input_bytes else t for size, t in zip(sizes, texts)]
        truncated = [int(size > max_input_bytes) for size in sizes]
    sha256 = hashlib.sha256
    ts = float(call.ts)
    # Column by column into the flat row list: extended slices fill it in C.
    flat: list[Any] = [None] * (n * ROW_WIDTH)
    columns: tuple[list[Any], ...] = (
        new_record_ids(n),
        ids,
        [call.model] * n,
        [call.version] * n,
        [ts] * n,
        texts,
        [sha256(encoded).hexdigest() for encoded in inputs],
        sizes,
        truncated,
        [encoded.decode() for encoded in outputs],
        [(ts - start) * 1000.0 for start in started],
        ["ok"] * n,
        [None] * n,
        [m or "{}" for m in meta],
    )
    for k, column in enumerate(columns):
        flat[k::ROW_WIDTH] = column
    return flat


def _row_texts(tensors: list[Tensor], n: int) -> list[bytes] | None:
    """Each of the ``n`` rows of ``tensors`` as the JSON :func:`tensors_json` writes for that
    row alone; None if a tensor is not numeric, not ``n`` rows, or not one orjson writes."""
    if not tensors:
        return [b"{}"] * n
    import orjson

    heads: list[bytes] = []
    bodies: list[bytes | None] = []
    for name, dt, shape, data in tensors:
        if type(data) is not bytes or not shape or shape[0] != n:
            return None
        head = dumps({name: {"shape": (1, *shape[1:]), "datatype": dt, "data": ()}})
        heads.append(head[1:-3])  # `"name":{…,"data":[`
        width = math.prod(shape[1:])
        if not width:
            bodies.append(None)
            continue
        try:
            text = orjson.dumps(
                np.frombuffer(data, dtype=dt).reshape(n, width), option=orjson.OPT_SERIALIZE_NUMPY
            )
        except TypeError:  # float16 on old orjson, big-endian, complex: row_of's way
            return None
        bodies.append(text[2:-2])  # numbers hold no "],[": it separates the rows of [[…],[…]]
    if len(tensors) == 1 and bodies[0] is not None:
        # One tensor: its rows joined into one text of all the rows' JSON, a newline apart
        # (compact JSON holds none), then split: two calls in C for the whole call.
        before, after = b"{" + heads[0], b"]}}"
        rows = (before + bodies[0].replace(b"],[", after + b"\n" + before) + after).split(b"\n")
        return rows if len(rows) == n else None
    columns: list[Iterable[bytes]] = []
    before = b"{"
    for head, body in zip(heads, bodies):
        columns.append(repeat(before + head))
        parts = repeat(b"", n) if body is None else body.split(b"],[")
        if body is not None and len(parts) != n:  # type: ignore[arg-type]
            return None
        columns.append(parts)
        before = b"]},"
    columns.append(repeat(b"]}}"))
    return [b"".join(row) for row in zip(*columns)]


def _one_row(tensors: list[Tensor]) -> list[Tensor]:
    return [(name, dt, (1, *shape[1:]), data) for name, dt, shape, data in tensors]


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
