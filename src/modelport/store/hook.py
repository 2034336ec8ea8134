"""The bridge from the runtime's completed predictions to the prediction log."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .log import PredictionLog

if TYPE_CHECKING:
    from ..runtime.dataplane import DataPlane

__all__ = ["attach"]


def attach(
    dataplane: DataPlane,
    url: str,
    *,
    sample_rate: float = 1.0,
    writer: str = "process",
    metrics_registry: Any = None,
) -> PredictionLog:
    """Open the log at ``url`` (``writer``: see :meth:`PredictionLog.open`), record every
    prediction of ``dataplane`` in it, and expose its counters in ``metrics_registry`` (a
    prometheus_client registry) if given."""
    log = PredictionLog.open(url, sample_rate=sample_rate, writer=writer)
    dataplane.log_to(log)
    if metrics_registry is not None:
        from .metrics import PredictionLogCollector

        metrics_registry.register(PredictionLogCollector(log))
    return log
