"""Admission: how many inference requests a server process works on at once, over HTTP and
gRPC together, and the refusal of the rest before their bodies are read.

Under overload a refusal must cost next to nothing: a request refused after its JSON is parsed
costs about what an answered one does, and closed-loop clients send the next one at once, so
the refusals eat the CPU the answers need (goodput falls to a few percent of capacity). With a
cap (``max_concurrency``), a request past it is refused as soon as its headers are in, with a
pre-encoded 503 (HTTP) or ``RESOURCE_EXHAUSTED`` (gRPC), and those admitted wait at most about
``cap / capacity`` (Little's law): a bound that holds however many clients come.
"""

from __future__ import annotations

from ..protocol.codec import dumps

__all__ = ["Admission"]


class Admission:
    """A counter of requests in flight with a cap (None: no cap). One event loop uses it."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.in_flight = 0
        self.refused = 0
        """Requests refused since start (for ``/metrics``)."""
        message = f"server overloaded: {limit} requests in flight (max_concurrency); retry later"
        self.refusal = dumps({"error": message})
        """The JSON body of an HTTP refusal, encoded once."""

    @property
    def full(self) -> bool:
        return self.limit is not None and self.in_flight >= self.limit

    def enter(self, force: bool = False) -> bool:
        """Take a place, or False (and count a refusal) when all are taken (unless ``force``)."""
        if self.limit is not None and self.in_flight >= self.limit and not force:
            self.refused += 1
            return False
        self.in_flight += 1
        return True

    def leave(self, *_: object) -> None:
        """Give a place back (usable as a done callback)."""
        self.in_flight -= 1
