"""Open Inference Protocol datatypes and their numpy equivalents."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InvalidInputError

__all__ = ["DATATYPES", "from_numpy", "itemsize", "to_numpy"]

# V2 datatype -> numpy dtype. BYTES is an object array of ``bytes``; BF16 has no numpy type and
# travels as its raw 16 bits (uint16 view) until a runtime that understands it converts it.
_TO_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BF16": np.dtype(np.uint16),
    "BYTES": np.dtype(object),
}
DATATYPES: frozenset[str] = frozenset(_TO_NUMPY)

_FROM_NUMPY: dict[str, str] = {
    "b": "BOOL",
    "u1": "UINT8",
    "u2": "UINT16",
    "u4": "UINT32",
    "u8": "UINT64",
    "i1": "INT8",
    "i2": "INT16",
    "i4": "INT32",
    "i8": "INT64",
    "f2": "FP16",
    "f4": "FP32",
    "f8": "FP64",
}


def to_numpy(datatype: str) -> np.dtype[Any]:
    """The numpy dtype that carries V2 ``datatype``."""
    try:
        return _TO_NUMPY[datatype]
    except KeyError:
        raise InvalidInputError(
            f"unknown datatype {datatype!r}; expected one of {', '.join(sorted(DATATYPES))}"
        ) from None


def from_numpy(dtype: np.dtype[Any]) -> str:
    """The V2 datatype for a numpy dtype (strings and objects are BYTES)."""
    if dtype.kind in "OSU":
        return "BYTES"
    key = "b" if dtype.kind == "b" else f"{dtype.kind}{dtype.itemsize}"
    try:
        return _FROM_NUMPY[key]
    except KeyError:
        raise InvalidInputError(
            f"numpy dtype {dtype} has no Open Inference Protocol datatype"
        ) from None


def itemsize(datatype: str) -> int:
    """Bytes per element of a fixed-size datatype (0 for BYTES)."""
    return 0 if datatype == "BYTES" else _TO_NUMPY[datatype].itemsize
