"""Load and warm up one model version, off the event loop, before it takes traffic.

A new version warms up on sample inputs: the ``warmup.inputs`` of its ``modelport.yaml`` and
the last requests the live version answered (it must answer them, with one output row per
input row); without either, on inputs generated from its signature, where a failure is only
logged, as at startup. ``warmup: {enabled: false}`` skips all of it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence

import numpy as np

from ..model import Model
from .runner import ModelRunner

__all__ = ["ModelFactory", "StageError", "fresh", "prepare"]

log = logging.getLogger("modelport.runtime")

ModelFactory = Callable[[], Model]
"""Builds a fresh, unloaded :class:`Model` for one version (e.g. resolves its directory)."""


class StageError(Exception):
    """Loading or warming up failed: ``stage`` says which, ``error`` why."""

    def __init__(self, stage: str, error: BaseException) -> None:
        super().__init__(stage)
        self.stage = stage
        self.error = error


def fresh(model: Model) -> ModelFactory:
    """A factory for a new, unloaded copy of ``model`` (holding no reference to it)."""
    return functools.partial(type(model), model.path, config=model.config, **model.options)


def prepare(runner: ModelRunner, samples: Sequence[dict[str, np.ndarray]]) -> None:
    """Load and warm up ``runner``'s model in this thread; raise :class:`StageError`."""
    model = runner.model
    try:
        model.ensure_loaded()
    except Exception as exc:
        raise StageError("load", exc) from exc
    runner.choose_batching()
    warmup = dict(model.config.warmup)
    if warmup.get("enabled", True) is False:
        return
    batches: list[dict[str, np.ndarray]] = list(samples)
    try:
        if "inputs" in warmup:
            batches.insert(0, model.to_inputs(warmup["inputs"]))
    except Exception as exc:
        raise StageError("warm up", exc) from exc
    generated = not batches
    if generated:
        try:
            batches = [model.example_inputs(1)]
        except Exception:
            return  # no signature and no traffic yet: nothing to warm up on
    for inputs in batches:
        try:
            _check_rows(inputs, model.predict_batch(inputs))
        except Exception as exc:
            if generated:
                # As at startup: a model may not take made-up inputs and still serve.
                log.warning(
                    "warm-up on generated inputs failed; going on",
                    extra={"model": model.name, "version": model.version, "reason": str(exc)},
                )
                return
            raise StageError("warm up", exc) from exc


def _check_rows(inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> None:
    rows = next((int(a.shape[0]) for a in inputs.values() if a.ndim), None)
    for key, array in outputs.items():
        if rows is not None and (array.ndim == 0 or array.shape[0] != rows):
            raise ValueError(
                f"output {key!r} has {array.shape[0] if array.ndim else 0} rows "
                f"for {rows} input rows"
            )
