"""The garbage collector of a serving process.

Python's cyclic collector runs a young collection every 700 allocations more than
deallocations, and every tenth (then hundredth) one a wider one, each walking the objects of
its generations. A server allocates a few hundred objects per request, and under load its
heap holds every open connection's protocol, every waiting request's task and future: the
wider collections walk all of them, over and over. With 2,048 connections and 1,536 of them
refused, those collections took about a fifth of the server's CPU (goodput while shedding
67-68 % of capacity; 81-90 % with this tuning, ``python -m bench.overload``).

So a serving process freezes what it holds at start (modules, the app, the loaded models:
never garbage) out of the collector's sight, and collects the young generation every
:data:`GEN0_THRESHOLD` allocations. Reference counting still frees nearly everything at once;
only cycles wait longer, bounded by the threshold.
"""

from __future__ import annotations

import gc
import logging

__all__ = ["GEN0_THRESHOLD", "tune_gc"]

log = logging.getLogger("modelport.server")

GEN0_THRESHOLD = 50_000
"""Net allocations between young collections (Python's default: 700)."""
GEN1_THRESHOLD = 50
GEN2_THRESHOLD = 100


def tune_gc() -> None:
    """Freeze the objects alive now and raise the collection thresholds (once per process)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
    log.info(
        "garbage collector tuned for serving",
        extra={"frozen_objects": gc.get_freeze_count(), "thresholds": list(gc.get_threshold())},
    )
