"""FP32/FP64 typed contents ↔ numpy through the protobuf wire bytes, without a Python step per
element: a packed ``repeated float``/``double`` field is the array's little-endian bytes behind
one tag and one length, so numpy reads and writes it directly (100x faster than iterating
the repeated field for a 1 MiB tensor).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["FIXED", "read_fixed", "write_fixed"]

# V2 datatype -> (InferTensorContents field number, wire dtype, wire type of one element).
FIXED: dict[str, tuple[int, np.dtype[Any], int]] = {
    "FP32": (6, np.dtype("<f4"), 5),
    "FP64": (7, np.dtype("<f8"), 1),
}
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_fixed(contents: Any, datatype: str) -> np.ndarray:
    """The values of ``datatype``'s field of an ``InferTensorContents``, as a flat array."""
    number, dtype, element_wire = FIXED[datatype]
    data = contents.SerializeToString()
    chunks: list[bytes] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            _, pos = _varint(data, pos)
            continue
        size = {_I64: 8, _I32: 4}.get(wire)
        if size is None:  # length-delimited
            size, pos = _varint(data, pos)
        if field == number and wire in (_LEN, element_wire):
            chunks.append(data[pos : pos + size])
        pos += size
    return np.frombuffer(b"".join(chunks), dtype=dtype)


def write_fixed(contents: Any, datatype: str, array: np.ndarray) -> None:
    """Append ``array``'s values to ``datatype``'s field of an ``InferTensorContents``."""
    number, dtype, _ = FIXED[datatype]
    data = np.ascontiguousarray(array, dtype=dtype).tobytes()
    if data:
        contents.MergeFromString(bytes([number << 3 | _LEN]) + _encode_varint(len(data)) + data)
