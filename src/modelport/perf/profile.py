"""Batching defaults from the model itself: time one call at a few batch sizes and pick the
largest batch worth its latency, as Triton's Model Analyzer does offline, in well under a
second at start.

The rule: a request that arrives while a batch runs waits for it, then runs in the next, so
its latency is up to two calls. Among the timed sizes whose call fits in half the latency
budget, ``max_batch_size`` is the smallest that gives at least :data:`NEAR` of the best rows a
second of them (past it, bigger batches only add latency). Each size's time is the fastest of
a few calls, and the choice compares every size with the best rather than each with the one
before: on a shared machine a call slowed by a neighbour must not cut the search short (one
such reading once made W2 of ``python -m bench``, 4x faster at 64 rows, serve at 4).
``max_queue_delay_ms`` is how long the
batcher waits for the callers of the last batch to come back: a tenth of the budget at most,
and no longer than a call at batch 1 takes (so a lone caller's wait never doubles its
latency), between 0.1 and 2 ms.

Settings a user wrote (``batching:`` in ``modelport.yaml``) always win: :func:`startup_batching`
returns None for them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..config import BatchingConfig
from ..model import Model, batch_rows

__all__ = [
    "DEFAULT_BUDGET_MS",
    "GPU_SIZES",
    "NEAR",
    "SIZES",
    "BatchTiming",
    "choose_batching",
    "explicit_batching",
    "startup_batching",
    "time_batches",
]

DEFAULT_BUDGET_MS = 50.0
"""The p99 latency a served model should keep when nothing else is said."""
NEAR = 0.95
"""A batch size is big enough when it gives at least this share of the best rows a second."""
SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
GPU_SIZES = (*SIZES, 512)
"""On a GPU a call's cost barely grows with the batch: the timings go further."""


@dataclass(frozen=True)
class BatchTiming:
    """One batch size, timed."""

    size: int
    seconds: float
    """Median seconds of one ``predict_batch`` call at this size."""

    @property
    def rows_per_s(self) -> float:
        return self.size / self.seconds if self.seconds > 0 else float("inf")


def time_batches(
    model: Model,
    sizes: tuple[int, ...] = SIZES,
    *,
    budget_ms: float = DEFAULT_BUDGET_MS,
    repeats: int = 5,
    max_seconds: float = 2.0,
) -> list[BatchTiming]:
    """The fastest of ``repeats`` calls of ``model.predict_batch`` at each size, on the
    model's own examples (``warmup.inputs`` in ``modelport.yaml``, their rows repeated to each
    size) or else inputs generated from its signature; sizes stop growing once a call takes
    more than the budget, or after ``max_seconds`` in all.

    Real examples matter for sequence models: generated text is one word, and a batch of
    one-word rows gains little from growing, where real sentences gain a lot."""
    model.ensure_loaded()
    examples = model.config.warmup.get("inputs")
    real = model.to_inputs(examples) if examples is not None else None
    began = time.perf_counter()
    out: list[BatchTiming] = []
    for size in sizes:
        inputs = model.example_inputs(size) if real is None else _repeat(real, size)
        model.predict_batch(inputs)  # warm: allocations, kernels
        calls = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.predict_batch(inputs)
            calls.append(time.perf_counter() - start)
        out.append(BatchTiming(size, min(calls)))  # noise only ever adds time
        if calls and out[-1].seconds * 1000 > budget_ms:
            break
        if time.perf_counter() - began > max_seconds:
            break
    return out


def _repeat(inputs: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """``size`` rows: the rows of ``inputs`` in turn."""
    rows = np.arange(size) % batch_rows(inputs)
    return {name: array[rows] for name, array in inputs.items()}


def choose_batching(
    timings: list[BatchTiming], budget_ms: float = DEFAULT_BUDGET_MS
) -> dict[str, Any]:
    """``{"max_batch_size", "max_queue_delay_ms"}`` for these timings (see the module)."""
    if not timings:
        raise ValueError("no timings to choose from")
    fits = [t for t in timings if 2 * t.seconds * 1000 <= budget_ms] or [timings[0]]
    top = max(t.rows_per_s for t in fits)
    best = min((t for t in fits if t.rows_per_s >= NEAR * top), key=lambda t: t.size)
    single_ms = timings[0].seconds * 1000
    delay = min(2.0, budget_ms / 10, max(0.1, single_ms))
    return {"max_batch_size": best.size, "max_queue_delay_ms": round(delay, 3)}


def explicit_batching(model: Model) -> bool:
    """Whether someone set this model's batching: a ``batching:`` limit in the
    ``modelport.yaml`` that applies to it, or values other than the defaults (a
    :class:`~modelport.config.ModelConfig` made in code)."""
    if {"max_batch_size", "max_queue_delay_ms"} & model.config.batching_set:
        return True
    if model.preferred_batch_size:  # the model's class knows its batch size
        return True
    defaults = BatchingConfig()
    batching = model.config.batching
    return (batching.max_batch_size, batching.max_queue_delay_ms) != (
        defaults.max_batch_size,
        defaults.max_queue_delay_ms,
    )


def startup_batching(
    model: Model, budget_ms: float = DEFAULT_BUDGET_MS, sizes: tuple[int, ...] = SIZES
) -> BatchingConfig | None:
    """The batching to serve ``model`` with when nobody set it (None when somebody did):
    its current batching with the size and delay chosen from a few timed calls; None too
    for a model that cannot be timed on generated inputs."""
    if explicit_batching(model):
        return None
    try:
        timings = time_batches(model, sizes, budget_ms=budget_ms)
    except Exception:  # no signature to make inputs from, or a model that cannot batch
        return None
    return replace(model.batching, **choose_batching(timings, budget_ms))
