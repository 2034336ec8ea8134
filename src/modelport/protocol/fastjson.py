"""A V2 JSON body with its numeric tensors parsed straight into arrays (pysimdjson).

``json.loads`` (orjson) turns a tensor of 1,024 floats into 1,024 Python floats that numpy then
reads back one by one: about two thirds of the cost of decoding such a request. simdjson parses
the document lazily, and ``Array.as_buffer`` writes a numeric array's values (nested arrays
flattened) into one typed buffer in C. :func:`parse_infer` returns what ``loads`` would, but
with each numeric tensor's ``data`` as a flat ``float64``/``int64``/``uint64`` array, which
:func:`~modelport.protocol.tensors.array_from_json` takes as it takes a list.

Anything unusual (simdjson not installed, a parse error, mixed or out-of-range values, ragged
nesting, BOOL and BYTES data) is left to the ordinary path: ``parse_infer`` returns None, or
keeps that tensor's ``data`` as a list, so every error message stays the same.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

__all__ = ["available", "parse_infer"]

simdjson: Any
try:
    import simdjson
except ImportError:  # an optional speed-up: the serve extra installs it where wheels exist
    simdjson = None

_local = threading.local()
_TYPES = {"f": ("d", np.float64), "i": ("i", np.int64), "u": ("u", np.uint64)}
_KINDS = {
    **dict.fromkeys(("FP16", "FP32", "FP64", "BF16"), "f"),
    **dict.fromkeys(("INT8", "INT16", "INT32", "INT64"), "i"),
    **dict.fromkeys(("UINT8", "UINT16", "UINT32", "UINT64"), "u"),
}


def available() -> bool:
    """Whether pysimdjson is installed (else :func:`parse_infer` always returns None)."""
    return simdjson is not None


def _parser() -> Any:
    parser = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = simdjson.Parser()
    return parser


def parse_infer(body: bytes | memoryview) -> dict[str, Any] | None:
    """The JSON object of a V2 infer body, numeric ``inputs[].data`` as flat arrays; None
    when the ordinary parser should handle the body (see the module's docstring)."""
    if simdjson is None or not body:
        return None
    try:
        doc = _parser().parse(bytes(body))
    except (ValueError, RuntimeError):
        # Invalid JSON (the ordinary path words the error), or a parser still referenced
        # by an earlier document's proxies: start a fresh one next time.
        _local.parser = None
        return None
    try:
        if not isinstance(doc, simdjson.Object):
            return None
        out: dict[str, Any] = {}
        for key in doc.keys():  # noqa: SIM118 (a simdjson Object is not a dict)
            value = doc[key]
            if key == "inputs" and isinstance(value, simdjson.Array):
                out[key] = [_tensor(item) for item in value]
            else:
                out[key] = _plain(value)
        return out
    finally:
        del doc  # no proxy may outlive the parse: the parser is reused


def _plain(value: Any) -> Any:
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    if isinstance(value, simdjson.Array):
        return value.as_list()
    return value


def _tensor(item: Any) -> Any:
    if not isinstance(item, simdjson.Object):
        return _plain(item)
    out = {}
    datatype = item.get("datatype")
    kind = _KINDS.get(datatype) if isinstance(datatype, str) else None
    for key in item.keys():  # noqa: SIM118
        value = item[key]
        if key == "data" and kind is not None and isinstance(value, simdjson.Array):
            out[key] = _numbers(value, kind)
        else:
            out[key] = _plain(value)
    return out


def _numbers(array: Any, kind: str) -> Any:
    of_type, dtype = _TYPES[kind]
    if not _regular(array):
        return array.as_list()
    try:
        return np.frombuffer(array.as_buffer(of_type=of_type), dtype=dtype)
    except (TypeError, ValueError):  # mixed types, out of range: the ordinary path says so
        return array.as_list()


def _regular(array: Any) -> bool:
    """Flat, or nested with every sub-array of one level the same length (not ragged)."""
    if not len(array) or not isinstance(array[0], simdjson.Array):
        return True
    width = len(array[0])
    return all(isinstance(a, simdjson.Array) and len(a) == width and _regular(a) for a in array)
