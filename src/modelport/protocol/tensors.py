"""Tensor data ↔ numpy for the V2 wire formats: JSON ``data`` lists and raw binary buffers.

Each array is built in one numpy call; only BYTES tensors, which are Python objects by
nature, are walked element by element.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from ..datatypes import from_numpy, itemsize, to_numpy
from ..errors import InvalidInputError

__all__ = [
    "array_from_binary",
    "array_from_json",
    "array_to_binary",
    "array_to_json",
    "element_count",
    "serialize_bytes",
]

_ALLOWED_KINDS = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}
_UINT32 = struct.Struct("<I")


def element_count(name: str, shape: Any) -> int:
    """The number of elements of ``shape``; raise unless it is a list of integers >= 0."""
    if not isinstance(shape, list) or not all(
        type(d) is int and d >= 0
        for d in shape  # bool is an int; reject it
    ):
        raise InvalidInputError(
            f"input {name!r}: shape must be a list of integers >= 0, got {shape!r}"
        )
    return math.prod(shape)


def array_from_json(name: str, datatype: str, shape: list[int], data: Any) -> np.ndarray:
    """The array for a JSON ``data`` field (flat or nested) of a V2 tensor: a list, or the
    flat array :func:`~modelport.protocol.fastjson.parse_infer` already made of it."""
    count = element_count(name, shape)
    dtype = to_numpy(datatype)
    try:
        raw = data if isinstance(data, np.ndarray) else np.asarray(data)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInputError(f"input {name!r}: data is not a regular array: {exc}") from None
    if raw.size != count:
        raise InvalidInputError(
            f"input {name!r}: shape {shape} holds {count} elements, data has {raw.size}"
        )
    if datatype == "BYTES":
        if raw.size and raw.dtype.kind != "U":
            raise InvalidInputError(f"input {name!r}: BYTES data must be strings")
        flat = raw.reshape(-1)
        out = np.empty(count, dtype=object)
        out[:] = [s.encode("utf-8") for s in flat.tolist()]
        return out.reshape(shape)
    if datatype == "BF16":
        raw = _checked(name, datatype, raw, "f")
        return _float32_to_bf16(raw.astype(np.float32)).reshape(shape)
    raw = _checked(name, datatype, raw, dtype.kind)
    if dtype.kind in "iu" and raw.size:
        info = np.iinfo(dtype)
        if raw.min() < info.min or raw.max() > info.max:
            raise InvalidInputError(
                f"input {name!r}: values outside the range of {datatype} [{info.min}, {info.max}]"
            )
    return raw.astype(dtype, copy=False).reshape(shape)


def _checked(name: str, datatype: str, raw: np.ndarray, kind: str) -> np.ndarray:
    if raw.size and raw.dtype.kind not in _ALLOWED_KINDS[kind]:
        got = "text" if raw.dtype.kind in "US" else "null or mixed values"
        if raw.dtype.kind in "fiub":
            got = from_numpy(raw.dtype)
        raise InvalidInputError(f"input {name!r}: expected {datatype} data, got {got}")
    return raw


def array_from_binary(
    name: str, datatype: str, shape: list[int], buffer: bytes | memoryview
) -> np.ndarray:
    """The array for a raw little-endian binary tensor (no copy for fixed-size types)."""
    count = element_count(name, shape)
    if datatype == "BYTES":
        return _deserialize_bytes(name, buffer, count).reshape(shape)
    dtype = to_numpy(datatype)
    expected = count * dtype.itemsize
    if len(buffer) != expected:
        raise InvalidInputError(
            f"input {name!r}: shape {shape} of {datatype} needs {expected} bytes of binary "
            f"data, got {len(buffer)}"
        )
    return np.frombuffer(buffer, dtype=dtype.newbyteorder("<")).reshape(shape)


def _deserialize_bytes(name: str, buffer: bytes | memoryview, count: int) -> np.ndarray:
    if count * _UINT32.size > len(buffer):  # before allocating `count` slots for a lying shape
        raise InvalidInputError(
            f"input {name!r}: {len(buffer)} bytes of BYTES binary data cannot hold the "
            f"{count} length-prefixed elements of its shape"
        )
    out = np.empty(count, dtype=object)
    view = memoryview(buffer)
    offset = 0
    for i in range(count):
        if offset + 4 > len(view):
            raise InvalidInputError(
                f"input {name!r}: BYTES binary data ends after {i} of {count} elements"
            )
        (length,) = _UINT32.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidInputError(
                f"input {name!r}: BYTES element {i} claims {length} bytes, "
                f"only {len(view) - offset} left"
            )
        out[i] = bytes(view[offset : offset + length])
        offset += length
    if offset != len(view):
        raise InvalidInputError(
            f"input {name!r}: {len(view) - offset} bytes of binary data left over after "
            f"{count} BYTES elements"
        )
    return out


def serialize_bytes(array: np.ndarray) -> bytes:
    """BYTES tensor → 4-byte little-endian length + bytes, per element, row-major."""
    parts: list[bytes] = []
    for item in array.reshape(-1).tolist():
        b = item if isinstance(item, bytes) else str(item).encode("utf-8")
        parts.append(_UINT32.pack(len(b)))
        parts.append(b)
    return b"".join(parts)


def array_to_json(array: np.ndarray, datatype: str) -> Any:
    """A flat value for the JSON ``data`` field (numpy arrays are serialised by orjson)."""
    if datatype == "BYTES":
        try:
            return [
                v.decode("utf-8") if isinstance(v, bytes) else str(v)
                for v in array.reshape(-1).tolist()
            ]
        except UnicodeDecodeError:
            raise InvalidInputError(
                "an output holds bytes that are not UTF-8 text; request it with "
                '"parameters": {"binary_data": true}'
            ) from None
    if datatype == "BF16":
        return _bf16_to_float32(array).reshape(-1)
    return np.ascontiguousarray(array).reshape(-1)


def array_to_binary(array: np.ndarray, datatype: str) -> bytes:
    """The raw little-endian bytes of a tensor, as the binary extension carries it."""
    if datatype == "BYTES":
        return serialize_bytes(array)
    if itemsize(datatype) > 1 and array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.ascontiguousarray(array).tobytes()


def _float32_to_bf16(values: np.ndarray) -> np.ndarray:
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    # Round to nearest even on the 16 bits dropped.
    rounded = bits + (0x7FFF + ((bits >> 16) & 1))
    return (rounded >> 16).astype(np.uint16)


def _bf16_to_float32(values: np.ndarray) -> np.ndarray:
    return (values.astype(np.uint32) << 16).view(np.float32)
