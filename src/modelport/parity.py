"""How far one model's outputs are from another's: what ``modelport export`` checks an ONNX
file against, and what half precision is measured against at load."""

from __future__ import annotations

import numpy as np

__all__ = ["max_difference"]


def max_difference(original: np.ndarray, other: np.ndarray, rtol: float = 0.0) -> float:
    """The largest absolute difference between ``other`` and ``original``, less ``rtol *
    |original|`` element by element: 0 for equal labels or text, inf where the shapes (or
    the labels) differ."""
    a, b = np.asarray(original), np.asarray(other)
    if a.shape != b.shape and a.size == b.size:
        b = b.reshape(a.shape)  # e.g. [n, 1] against [n]
    if a.shape != b.shape:
        return float("inf")
    if a.dtype.kind in "OSUb" or b.dtype.kind in "OSUb":
        return 0.0 if np.array_equal(a.astype(str), b.astype(str)) else float("inf")
    if a.size == 0:
        return 0.0
    wide = a.astype(np.float64)
    gap = np.abs(wide - b.astype(np.float64))
    if rtol:
        gap -= rtol * np.abs(wide)
    return float(np.max(gap))
