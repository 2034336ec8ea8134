"""Run a modelport model inside data engines: Beam, Spark, Flink, Ray and Dask.

Each engine has its own module (``modelport.integrations.beam`` and so on) that imports the
engine only when used; install it with its extra, e.g. ``pip install "modelport[spark]"``.
What they share lives here: a picklable :class:`ModelSpec` that travels to workers, a
per-process model cache (:func:`cache_info`) so each worker loads a model once, and the
options every engine takes: ``columns=`` (:data:`Columns`), ``contract=`` (:data:`Contract`:
the model's own ``preprocess``/``postprocess`` per row, or raw tensors) and ``on_error=``
(:data:`OnError`: what a bad row does).
"""

from __future__ import annotations

from ._common import ERROR_COLUMN, Columns, Contract, ModelSpec, OnError, cache_info, clear_cache

__all__ = [
    "ERROR_COLUMN",
    "Columns",
    "Contract",
    "ModelSpec",
    "OnError",
    "cache_info",
    "clear_cache",
]
