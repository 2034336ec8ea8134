"""Traffic policies for a model's candidate version: canary and shadow.

- :class:`Canary` sends ``percent`` % of the requests that name no version to the candidate;
  the caller gets the candidate's answer for those.
- :class:`Shadow` leaves every answer to the live version and mirrors each request to the
  candidate off the caller's path (:class:`ShadowMirror`): the candidate's outputs are compared
  with the live version's, counted (:class:`ShadowStats`) and recorded in the prediction log
  with ``metadata={"shadow": true, "primary_version": ..., "agrees": ...}``. A slow or failing
  candidate never reaches the caller; past ``max_pending`` mirrored requests in flight, further
  copies are dropped (and counted) rather than queued without bound.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import InvalidInputError
from .runner import ModelRunner, Prediction

if TYPE_CHECKING:
    from ..store import PredictionLog

__all__ = ["Canary", "Policy", "Shadow", "ShadowMirror", "ShadowStats", "outputs_agree", "percent"]

log = logging.getLogger("modelport.runtime")

DEFAULT_MAX_PENDING = 256


@dataclass(frozen=True)
class Canary:
    """``percent`` % of unversioned requests go to ``version``."""

    version: str
    percent: float
    kind: ClassVar[str] = "canary"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": self.version, "percent": self.percent}


@dataclass(frozen=True)
class Shadow:
    """Every request is mirrored to ``version``; callers only see the live version."""

    version: str
    kind: ClassVar[str] = "shadow"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": self.version}


Policy = Canary | Shadow


def percent(value: Any) -> float:
    """A canary share: a number in (0, 100], else :class:`InvalidInputError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"canary percent must be a number in (0, 100], got {value!r}")
    if not math.isfinite(value) or not 0 < value <= 100:
        raise InvalidInputError(f"canary percent must be in (0, 100], got {value!r}")
    return float(value)


def outputs_agree(
    primary: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    *,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> bool:
    """Same output names and shapes; floats equal within tolerance, everything else exactly."""
    if primary.keys() != candidate.keys():
        return False
    for name, a in primary.items():
        a, b = np.asarray(a), np.asarray(candidate[name])
        if a.shape != b.shape:
            return False
        if a.dtype.kind in "fc" and b.dtype.kind in "fc":
            if not np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True):
                return False
        elif not np.array_equal(a, b):
            return False
    return True


@dataclass
class ShadowStats:
    """Counters of one shadow run (since the policy was set)."""

    mirrored: int = 0
    """Requests copied to the candidate."""
    compared: int = 0
    """Both versions answered: the agreement rate's denominator."""
    agreed: int = 0
    errors: int = 0
    """The candidate raised (the caller never saw it)."""
    dropped: int = 0
    """Copies skipped because ``max_pending`` were still in flight."""
    seconds: float = 0.0
    """The candidate's total latency over compared requests."""
    primary_seconds: float = 0.0
    """The live version's total latency over the same requests."""

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = asdict(self)
        out["agreement"] = self.agreement
        n = self.compared
        out["mean_ms"] = 1000 * self.seconds / n if n else None
        out["primary_mean_ms"] = 1000 * self.primary_seconds / n if n else None
        return out


class ShadowMirror:
    """Mirror each prediction of the live version to ``candidate`` and compare the answers.

    :meth:`observe` is a runner observer for the live version: it only schedules a task.
    """

    def __init__(
        self,
        candidate: ModelRunner,
        *,
        prediction_log: Callable[[], PredictionLog | None] = lambda: None,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self.candidate = candidate
        self.stats = ShadowStats()
        self._log = prediction_log
        self._max_pending = max_pending
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def observe(self, p: Prediction) -> None:
        if self._closed or p.version == self.candidate.version:
            return
        if len(self._tasks) >= self._max_pending:
            self.stats.dropped += 1
            return
        self.stats.mirrored += 1
        task = asyncio.get_running_loop().create_task(self._mirror(p))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _mirror(self, p: Prediction) -> None:
        inputs = dict(p.inputs)
        rows = next((int(a.shape[0]) if a.ndim else 1 for a in inputs.values()), 1)
        started = time.perf_counter()
        outputs: Mapping[str, np.ndarray] | None = None
        error: str | None = None
        try:
            outputs = await self.candidate.batcher.submit(inputs, rows)
        except Exception as exc:
            self.stats.errors += 1
            error = f"{type(exc).__name__}: {exc}"
            if self.stats.errors == 1 or self.stats.errors % 1000 == 0:
                log.warning(
                    "shadow version failed",
                    extra={
                        "model": p.model,
                        "version": self.candidate.version,
                        "errors": self.stats.errors,
                        "error": error,
                    },
                )
        seconds = time.perf_counter() - started
        agrees: bool | None = None
        if outputs is not None and p.error is None:
            agrees = outputs_agree(p.outputs, outputs)
            self.stats.compared += 1
            self.stats.agreed += agrees
            self.stats.seconds += seconds
            self.stats.primary_seconds += p.duration
        self._record(p, outputs, seconds, error, agrees)

    def _record(
        self,
        p: Prediction,
        outputs: Mapping[str, np.ndarray] | None,
        seconds: float,
        error: str | None,
        agrees: bool | None,
    ) -> None:
        prediction_log = self._log()
        if prediction_log is None:
            return
        from ..store.records import PredictionRecord

        prediction_log.record(
            PredictionRecord(
                request_id=p.id,
                model=p.model,
                version=self.candidate.version,
                inputs=p.inputs,
                outputs=outputs,
                latency_ms=seconds * 1000.0,
                status="ok" if error is None else error.split(":", 1)[0],
                error=error,
                metadata={
                    **(p.metadata or {}),
                    "shadow": True,
                    "primary_version": p.version,
                    "agrees": agrees,
                },
            )
        )

    async def close(self, timeout: float = 10.0) -> None:
        """Stop mirroring; wait up to ``timeout`` s for copies in flight, then cancel them."""
        self._closed = True
        if not self._tasks:
            return
        tasks = list(self._tasks)
        _, late = await asyncio.wait(tasks, timeout=timeout)
        for task in late:
            task.cancel()
        if late:
            await asyncio.gather(*late, return_exceptions=True)
