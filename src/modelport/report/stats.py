"""Drift statistics: Population Stability Index and the two-sample Kolmogorov-Smirnov test.

numpy only, so the report needs no scipy; the tests check both against scipy and by hand.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "PSI_DRIFTED",
    "PSI_MODERATE",
    "kolmogorov_sf",
    "ks_2samp",
    "psi",
    "psi_edges",
    "verdict",
]

PSI_EPSILON = 1e-4
"""Floor for a bin's share, so an empty bin gives a large but finite PSI."""
PSI_MODERATE = 0.1
"""PSI above which a feature has moved moderately (the customary credit-scoring threshold)."""
PSI_DRIFTED = 0.25
"""PSI above which a feature has drifted."""


def verdict(psi_value: float) -> str:
    """``stable`` (PSI ≤ 0.1), ``moderate`` (≤ 0.25) or ``drifted``."""
    if psi_value > PSI_DRIFTED:
        return "drifted"
    return "moderate" if psi_value > PSI_MODERATE else "stable"


def psi_edges(reference: np.ndarray, bins: int = 10) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (duplicates merged, for discrete data)."""
    qs = np.quantile(np.asarray(reference, dtype=np.float64), np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(qs)


def psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """PSI = Σ (c - r)·ln(c / r) over ``bins`` quantile bins of ``reference``.

    A bin holds values ``edge[i-1] < v <= edge[i]``, the outer bins are open-ended, and shares
    are floored at :data:`PSI_EPSILON`. Rules of thumb: < 0.1 stable, 0.1-0.25 moderate,
    > 0.25 significant shift.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if ref.size == 0 or cur.size == 0:
        return math.nan
    edges = psi_edges(ref, bins)
    r = np.bincount(np.searchsorted(edges, ref, side="left"), minlength=edges.size + 1) / ref.size
    c = np.bincount(np.searchsorted(edges, cur, side="left"), minlength=edges.size + 1) / cur.size
    r = np.maximum(r, PSI_EPSILON)
    c = np.maximum(c, PSI_EPSILON)
    return float(np.sum((c - r) * np.log(c / r)))


def ks_2samp(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Two-sided two-sample KS: the statistic ``D = sup |F_ref - F_cur|`` and Smirnov's
    limiting p-value ``P(K > D·sqrt(n·m / (n + m)))`` (``scipy.stats.kstwobign``)."""
    a = np.sort(np.asarray(reference, dtype=np.float64))
    b = np.sort(np.asarray(current, dtype=np.float64))
    if a.size == 0 or b.size == 0:
        return math.nan, math.nan
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / a.size
    cdf_b = np.searchsorted(b, grid, side="right") / b.size
    d = float(np.max(np.abs(cdf_a - cdf_b)))
    en = a.size * b.size / (a.size + b.size)
    return d, kolmogorov_sf(math.sqrt(en) * d)


def kolmogorov_sf(x: float) -> float:
    """Survival function of the Kolmogorov distribution, ``P(K > x)``."""
    if x <= 0:
        return 1.0
    if x < 1.0:
        # Jacobi form; converges fast for small x where the alternating series does not.
        s = sum(math.exp(-((2 * k - 1) ** 2) * math.pi**2 / (8 * x * x)) for k in range(1, 20))
        return max(0.0, min(1.0, 1.0 - math.sqrt(2 * math.pi) / x * s))
    s = sum((-1) ** (k - 1) * math.exp(-2 * k * k * x * x) for k in range(1, 101))
    return max(0.0, min(1.0, 2.0 * float(s)))
