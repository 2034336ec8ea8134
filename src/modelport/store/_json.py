"""Compact JSON for the prediction log: orjson when installed (it writes numeric arrays itself),
else the standard library; anything else JSON cannot hold is written as its ``str``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["dumps", "fast"]


def _default(value: Any) -> Any:
    if isinstance(value, np.ndarray):  # orjson hands over arrays it cannot write itself
        raise TypeError(f"array of {value.dtype} left to the general encoder")
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _json_dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), default=_default).encode()


def _orjson_dumps() -> Callable[[Any], bytes] | None:
    try:
        import orjson
    except ImportError:
        return None
    option = orjson.OPT_SERIALIZE_NUMPY

    def dumps(value: Any) -> bytes:
        return orjson.dumps(value, default=_default, option=option)  # type: ignore[no-any-return]

    return dumps


_fast = _orjson_dumps()
fast = _fast is not None
"""Whether :func:`dumps` writes numeric arrays itself (orjson)."""
dumps: Callable[[Any], bytes] = _fast or _json_dumps
"""``value`` as compact JSON bytes."""
