"""Run a modelport model inside data engines: Beam, Spark, Flink, Ray and Dask.

Each engine has its own module (``modelport.integrations.beam`` and so on) that imports the
engine only when used; install it with its extra, e.g. ``pip install "modelport[spark]"``.
What they share lives here: a picklable :class:`ModelSpec` that travels to workers, and a
per-process model cache (:func:`cache_info`) so each worker loads a model once.
"""

from __future__ import annotations

from ._common import Columns, ModelSpec, cache_info, clear_cache

__all__ = ["Columns", "ModelSpec", "cache_info", "clear_cache"]
