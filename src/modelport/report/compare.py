"""Figures per version, and a shadow candidate against the primary it mirrored.

Canary answers are traffic logged under the candidate's version, so :class:`VersionFigures`
per version compares a canary with the live version. Shadow answers are logged under the
candidate's version with ``metadata={"shadow": true, "primary_version": ..., "agrees": ...}``
and the primary's request id; they are not traffic, and :class:`Comparison` sets them against
the primary's answers to the same requests (feedback, keyed by request id, applies to both).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = ["Comparison", "Pair", "Tally", "VersionFigures", "compare", "resolve_task", "scores"]

TaskName = Literal["classification", "regression"]
Pair = tuple[Any, Any, str]
"""One row's (prediction values, ground truth, output dtype kind or ``"vector"``)."""


@dataclass
class VersionFigures:
    """Requests, errors, latency and quality on feedback of one version's answers."""

    version: str
    requests: int
    errors: int
    latency_ms: dict[str, float]
    """``p50``, ``p90``, ``p99``; empty without requests."""
    feedback_rows: int = 0
    accuracy: float | None = None
    mae: float | None = None
    rmse: float | None = None


@dataclass
class Comparison:
    """A shadow ``candidate_version`` against ``primary_version`` on the requests it mirrored."""

    candidate_version: str
    primary_version: str
    mirrored: int
    """Shadow answers logged (the candidate's requests, failed ones included)."""
    compared: int
    """Both versions answered, so the outputs were compared."""
    agreed: int
    candidate: VersionFigures
    primary: VersionFigures
    """The primary's answers to the same requests (those found in the report period)."""

    @property
    def agreement(self) -> float | None:
        """Share of compared requests where the outputs agreed; None if none were compared."""
        return self.agreed / self.compared if self.compared else None


@dataclass
class Tally:
    """Accumulates one version's (or one side's) rows."""

    latency: list[float] = field(default_factory=list)
    errors: int = 0
    pairs: list[Pair] = field(default_factory=list)

    def add(self, latency_ms: float, ok: bool, pairs: Sequence[Pair] = ()) -> None:
        self.latency.append(latency_ms)
        self.errors += not ok
        self.pairs.extend(pairs)

    def figures(self, version: str, task: TaskName | None) -> VersionFigures:
        out = VersionFigures(
            version, len(self.latency), self.errors, percentiles(np.asarray(self.latency))
        )
        score = scores(self.pairs, task)
        if score is not None and score.size:
            out.feedback_rows = int(score.size)
            if task == "classification":
                out.accuracy = float(score.mean())
            else:
                out.mae = float(score.mean())
                out.rmse = float(np.sqrt(np.mean(score**2)))
        return out


@dataclass
class _ShadowSide:
    candidate: Tally = field(default_factory=Tally)
    primary: Tally = field(default_factory=Tally)
    compared: int = 0
    agreed: int = 0


def compare(
    shadows: Sequence[tuple[str, str, str, float, bool, bool | None, list[Pair]]],
    traffic: dict[tuple[str, str], tuple[float, bool, list[Pair]]],
    task: TaskName | None,
) -> list[Comparison]:
    """Comparisons from shadow rows ``(request_id, candidate, primary, latency_ms, ok, agrees,
    pairs)`` and the primary rows of the period, ``(request_id, version) → (latency_ms, ok,
    pairs)``."""
    sides: dict[tuple[str, str], _ShadowSide] = {}
    for request_id, candidate, primary, latency, ok, agrees, pairs in shadows:
        side = sides.setdefault((candidate, primary), _ShadowSide())
        side.candidate.add(latency, ok, pairs)
        if agrees is not None:
            side.compared += 1
            side.agreed += bool(agrees)
        found = traffic.get((request_id, primary))
        if found is not None:
            side.primary.add(*found)
    return [
        Comparison(
            candidate,
            primary,
            mirrored=len(side.candidate.latency),
            compared=side.compared,
            agreed=side.agreed,
            candidate=side.candidate.figures(candidate, task),
            primary=side.primary.figures(primary, task),
        )
        for (candidate, primary), side in sorted(sides.items())
    ]


def resolve_task(pairs: Sequence[Pair], task: str) -> TaskName | None:
    """The task ``auto`` means for these pairs: labels or class outputs → classification."""
    if task in ("classification", "regression"):
        return task  # type: ignore[return-value]
    if not pairs:
        return None
    kinds = {p[2] for p in pairs}
    is_label = any(isinstance(p[1], str | bool) for p in pairs)
    classify = is_label or bool(kinds & {"vector", "i", "u", "b", "S", "U", "O"})
    return "classification" if classify else "regression"


def scores(pairs: Sequence[Pair], task: TaskName | None) -> np.ndarray | None:
    """Per pair: 1.0/0.0 for a right/wrong class, or the absolute error; None if the pairs do
    not fit ``task`` (a label where a number is needed)."""
    if task is None:
        return None
    if task == "classification":
        return np.asarray([_correct(p[0], p[1]) for p in pairs], dtype=np.float64)
    try:
        pred = np.asarray([float(np.asarray(p[0], dtype=np.float64)[0]) for p in pairs])
        truth = np.asarray([float(p[1]) for p in pairs])
    except (TypeError, ValueError):
        return None
    return np.asarray(np.abs(pred - truth))


def _correct(prediction: np.ndarray, truth: Any) -> bool:
    predicted: Any = int(np.argmax(prediction)) if prediction.size > 1 else prediction[0]
    if isinstance(predicted, float) and predicted.is_integer():
        predicted = int(predicted)
    if isinstance(truth, bool) or isinstance(predicted, bool):
        return bool(predicted) == bool(truth)
    if isinstance(truth, str) or isinstance(predicted, str):
        return str(predicted) == str(truth)
    return bool(predicted == truth)


def percentiles(values: np.ndarray) -> dict[str, float]:
    """``p50``, ``p90``, ``p99`` of ``values``; empty for none."""
    if values.size == 0:
        return {}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99)}
