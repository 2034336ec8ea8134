"""The bridge from the runtime's completed predictions to the prediction log."""

from __future__ import annotations

from typing import Any, Protocol

from .log import PredictionLog

__all__ = ["attach"]


class Loggable(Protocol):
    """What the log is attached to (the runtime's ``DataPlane``, which the store sits below)."""

    def log_to(self, log: PredictionLog) -> None:
        """Record every prediction in ``log`` from now on."""
        ...


def attach(
    dataplane: Loggable,
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
