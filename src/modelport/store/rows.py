"""Records → database rows (:data:`CALL_COLUMNS`, a row per model call) and back to requests.

The writer turns each run the request path left in the :mod:`.inbox` into one row of
``modelport_calls``: a model call's requests packed together (their ids, rows, latencies and
metadata as JSON arrays; the call's stacked tensors as compact JSON, which orjson writes
from the arrays in one go), or a lone record as a call of one request. A batch's rows are
one flat list of fields (:data:`CALL_WIDTH` per row), what the inserts bind.
:func:`requests_of` splits a stored row back into one item per request for the readers. The
spool keeps rows as JSON objects (:func:`row_as_dict`, :func:`row_from_dict`); spooled rows
of schema version 1 (a row per request, :data:`LEGACY_COLUMNS`) still replay.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ._json import dumps
from .inbox import Call, Fields, Tensor
from .records import new_record_id
from .schema import calls, predictions

__all__ = [
    "CALL_COLUMNS",
    "CALL_WIDTH",
    "LEGACY_COLUMNS",
    "REQUESTS",
    "call_row",
    "is_legacy",
    "record_row",
    "requests_in",
    "requests_of",
    "row_as_dict",
    "row_from_dict",
    "rows_in",
    "tensors_json",
]

CALL_COLUMNS = tuple(c.name for c in calls.columns if c.name != "id")
"""The columns of ``modelport_calls`` a row fills, in order (``id`` is the database's)."""

CALL_WIDTH = len(CALL_COLUMNS)
REQUESTS = CALL_COLUMNS.index("requests")
"""Where a row holds how many requests it packs."""

LEGACY_COLUMNS = tuple(c.name for c in predictions.columns if c.name != "id")
"""Schema version 1's ``modelport_predictions`` columns: what spools of that version hold."""

Row = list[Any]


def call_row(call: Call, max_input_bytes: int) -> Row | None:
    """The row of a model call's recorded requests; None if none is recorded.

    Requests without an id (their callers gone, or sampled out) leave their rows out of the
    stored tensors. Raises ``ValueError`` when several requests' rows do not add up to the
    tensors' first dimension (they could not be told apart).
    """
    ids, rows = call.request_ids, call.rows
    inputs, outputs, started, meta = call.inputs, call.outputs, call.started, call.metadata
    n = len(ids)
    if n > 1:
        total = sum(rows)
        for name, _, shape, _ in (*inputs, *outputs):
            if shape[:1] != (total,):
                raise ValueError(
                    f"tensor {name!r} has shape {list(shape)}, but the call's {n} requests "
                    f"have {total} rows"
                )
    if None in ids:
        keep = [k for k in range(n) if ids[k] is not None]
        if not keep:
            return None
        if n > 1:
            inputs, outputs = _take(inputs, rows, keep), _take(outputs, rows, keep)
        ids, rows = [ids[k] for k in keep], [rows[k] for k in keep]
        started, meta = [started[k] for k in keep], [meta[k] for k in keep]
    ts = float(call.ts)
    latencies = [(ts - start) * 1000.0 for start in started]
    return _row(new_record_id(), call.model, call.version, ts, ids, rows, inputs, outputs,
                latencies, "ok", None, meta, max_input_bytes)  # fmt: skip


def record_row(fields: Fields, max_input_bytes: int) -> Row:
    """The row of one record of the inbox: a call of one request, its tensors whole."""
    record_id, request_id, model, version, ts, latency, status, error, meta, inputs, outputs = (
        fields
    )
    first = inputs[0][2] if inputs else ()
    rows = [first[0] if first else 1]
    return _row(record_id or new_record_id(), model, version, float(ts), [request_id], rows,
                inputs, outputs, [float(latency)], status, error, [meta],
                max_input_bytes)  # fmt: skip


def _row(
    call_id: str,
    model: str,
    version: str,
    ts: float,
    ids: list[Any],
    rows: list[int],
    inputs: list[Tensor],
    outputs: list[Tensor] | None,
    latencies: list[float],
    status: str,
    error: str | None,
    meta: list[str | None],
    max_input_bytes: int,
) -> Row:
    encoded = tensors_json(inputs)
    size = len(encoded)
    # The limit is per request: a call keeps its inputs whole while they average at most
    # max_input_bytes a request (for a lone request, exactly the limit).
    truncated = size > max_input_bytes * len(ids)
    return [
        call_id,
        model,
        version,
        ts,
        len(ids),
        dumps(ids).decode(),
        dumps(rows).decode(),
        (dumps(_summary(inputs)) if truncated else encoded).decode(),
        hashlib.sha256(encoded).hexdigest(),
        size,
        int(truncated),  # 0/1: sqlite3 binds int at once, bool through its adapter lookup
        None if outputs is None else tensors_json(outputs).decode(),
        dumps(latencies).decode(),
        status,
        error,
        f"[{','.join([m or '{}' for m in meta])}]",  # each is JSON text already
    ]


def _take(tensors: list[Tensor], rows: list[int], keep: list[int]) -> list[Tensor]:
    """The rows of the requests ``keep`` of each tensor, the others cut out."""
    starts = [0]
    for r in rows:
        starts.append(starts[-1] + r)
    kept_rows = sum(rows[k] for k in keep)
    out: list[Tensor] = []
    for name, dtype, shape, data in tensors:
        per_row = len(data) // shape[0] if shape[0] else 0
        cuts = [(starts[k] * per_row, starts[k + 1] * per_row) for k in keep]
        joined: bytes | list[str]
        if isinstance(data, bytes):
            joined = b"".join([data[a:b] for a, b in cuts])
        else:
            joined = [v for a, b in cuts for v in data[a:b]]
        out.append((name, dtype, (kept_rows, *shape[1:]), joined))
    return out


def requests_of(row: Mapping[Any, Any]) -> Iterator[dict[str, Any]]:
    """One item per request of a stored call row: ``request_id, version, ts, inputs,
    inputs_truncated, outputs`` (JSON texts, each request's own rows), ``latency_ms, status,
    metadata`` (a dict), as version 1 stored a request."""
    ids = json.loads(row["request_ids"])
    latencies = json.loads(row["latency_ms"])
    metas = json.loads(row["metadata"])
    truncated = bool(row["inputs_truncated"])
    n = len(ids)
    ins: list[str]
    outs: list[Any]
    if n == 1:  # whole tensors: a lone request's outputs need not have its input rows
        ins, outs = [row["inputs"]], [row["outputs"]]
    else:
        rows = json.loads(row["rows"])
        ins = _split(json.loads(row["inputs"]), rows)
        outs = [None] * n if row["outputs"] is None else _split(json.loads(row["outputs"]), rows)
    version, ts, status = row["version"], row["ts"], row["status"]
    for k in range(n):
        yield {
            "request_id": ids[k],
            "version": version,
            "ts": ts,
            "inputs": ins[k],
            "inputs_truncated": truncated,
            "outputs": outs[k],
            "latency_ms": latencies[k],
            "status": status,
            "metadata": metas[k],
        }


def _split(tensors: dict[str, Any], rows: list[int]) -> list[str]:
    """Each request's rows of the stacked ``{name: {shape, datatype[, data]}}`` as JSON."""
    parts: list[dict[str, Any]] = [{} for _ in rows]
    for name, tensor in tensors.items():
        rest = tensor["shape"][1:]
        data = tensor.get("data")
        width = math.prod(rest)
        first = 0
        for k, r in enumerate(rows):
            part: dict[str, Any] = {"shape": [r, *rest], "datatype": tensor["datatype"]}
            if data is not None:
                part["data"] = data[first * width : (first + r) * width]
            parts[k][name] = part
            first += r
    return [dumps(part).decode() for part in parts]


def row_as_dict(row: Sequence[Any]) -> dict[str, Any]:
    """``row`` as ``{column: value}`` (how the spool writes it)."""
    return dict(zip(CALL_COLUMNS, row))


def row_from_dict(row: Mapping[str, Any], columns: Sequence[str] = CALL_COLUMNS) -> Row:
    """A spooled ``{column: value}`` back to a row of ``columns`` (:data:`LEGACY_COLUMNS` for
    one spooled by schema version 1: see :func:`is_legacy`)."""
    return [row[c] for c in columns]


def is_legacy(row: Mapping[str, Any]) -> bool:
    """Whether a spooled row is schema version 1's (one request, ``record_id``) rather than a
    call's."""
    return "record_id" in row


def rows_in(flat: Sequence[Any]) -> list[Sequence[Any]]:
    """The rows of a flat list of row fields."""
    return [flat[k : k + CALL_WIDTH] for k in range(0, len(flat), CALL_WIDTH)]


def requests_in(flat: Sequence[Any]) -> int:
    """How many requests the rows of a flat list of row fields hold."""
    return sum(flat[REQUESTS::CALL_WIDTH])


def tensors_json(tensors: list[Tensor]) -> bytes:
    """``{name: {"shape", "datatype", "data"}}`` as JSON, data flattened."""
    try:  # orjson writes numeric arrays itself, several times faster than tolist() + json
        return dumps({name: {"shape": shape, "datatype": dt, "data": _values(dt, data)}
                      for name, dt, shape, data in tensors})  # fmt: skip
    except TypeError:  # arrays orjson (or json) does not take: float16, big-endian, complex
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
