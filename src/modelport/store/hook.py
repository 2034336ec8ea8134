"""The bridge from the runtime's completed predictions to the prediction log."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .log import PredictionLog

if TYPE_CHECKING:
    from ..runtime.dataplane import DataPlane
    from ..runtime.runner import Prediction

__all__ = ["attach", "observer"]


def observer(log: PredictionLog) -> Callable[[Prediction], None]:
    """A runner observer that hands each prediction to ``log`` (never blocks, never raises)."""

    def observe(p: Prediction) -> None:
        log.record_prediction(p)

    return observe


def attach(
    dataplane: DataPlane, url: str, *, sample_rate: float = 1.0, metrics_registry: Any = None
) -> PredictionLog:
    """Open the log at ``url``, record every prediction of ``dataplane`` in it, and expose its
    counters in ``metrics_registry`` (a prometheus_client registry) if given."""
    log = PredictionLog.open(url, sample_rate=sample_rate)
    dataplane.log_to(log)
    if metrics_registry is not None:
        from .metrics import PredictionLogCollector

        metrics_registry.register(PredictionLogCollector(log))
    return log
