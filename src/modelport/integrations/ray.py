"""Ray Data: a callable class for ``Dataset.map_batches``, run by a pool of actors.

Each actor loads the model once, in its constructor, and predicts every batch it is given.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .._deps import require
from ..errors import ConfigError
from ._common import (
    ERROR_COLUMN,
    Columns,
    Contract,
    ModelSpec,
    OnError,
    OutputInfo,
    Plan,
    check_options,
    make_plan,
    run_plan,
)

__all__ = ["ModelPredictor", "predict_dataset"]


class ModelPredictor:
    """``batch -> batch`` for ``map_batches(..., batch_format="numpy")``.

    The batch is a dict of column arrays; the result is the batch (unless ``keep_columns``
    is false) with the model's answer as columns, each named ``prefix + name``: one per
    output, or per key of ``postprocess``'s answer for a model with its own ``preprocess``/
    ``postprocess`` (``contract="payload"``, the default), plus ``error`` with
    ``on_error="column"``. ``columns`` picks the columns the model reads (see
    :data:`~modelport.integrations.Columns`; by default every column, the ids included).
    A bad row's outputs are None (NaN rows for wider float outputs).
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | ModelSpec,
        *,
        columns: Columns = None,
        prefix: str = "",
        keep_columns: bool = True,
        batch_size: int | None = None,
        contract: Contract = "payload",
        on_error: OnError = "raise",
        **options: Any,
    ) -> None:
        check_options(contract, on_error)
        self.spec = ModelSpec.of(source, **options)
        self.model = self.spec.load()
        self.columns = columns
        self.prefix = prefix
        self.keep_columns = keep_columns
        self.batch_size = batch_size or max(1, self.model.batching.max_batch_size)
        self.contract: Contract = contract
        self.on_error: OnError = on_error
        self._plans: dict[tuple[str, ...], Plan] = {}

    def plan(self, available: list[str]) -> Plan:
        """The plan for a batch with these columns (made once per set of columns)."""
        key = tuple(available)
        if key not in self._plans:
            self._plans[key] = make_plan(
                self.spec,
                self.model,
                self.columns,
                available,
                contract=self.contract,
                on_error=self.on_error,
                batch_size=self.batch_size,
            )
        return self._plans[key]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        plan = self.plan(list(batch))
        rows = len(next(iter(batch.values()))) if batch else 0
        result = run_plan(self.model, plan, batch.__getitem__, rows)
        out = dict(batch) if self.keep_columns else {}
        added = {o.name: _column(result.values[o.name], o, result.bad) for o in plan.outputs}
        if plan.on_error == "column":
            added[ERROR_COLUMN] = np.array(result.errors, dtype=object)
        for name, array in added.items():
            column = self.prefix + name
            if column in out:
                raise ConfigError(
                    f"output column {column!r} already exists in the dataset; "
                    "pass prefix= to rename the outputs"
                )
            out[column] = array
        return out


def _column(array: np.ndarray, info: OutputInfo, bad: np.ndarray) -> np.ndarray:
    if not bad.any():
        return array
    if array.ndim > 1 and array.dtype.kind == "f":
        array = array.copy()
        array[bad] = np.nan  # Ray's tensor columns hold no nulls
        return array
    cells = np.empty(len(array), dtype=object)
    cells[:] = [None if b else v for v, b in zip(array if array.ndim > 1 else array.tolist(), bad)]
    return cells


def predict_dataset(
    dataset: Any,
    source: str | os.PathLike[str] | ModelSpec,
    *,
    columns: Columns = None,
    prefix: str = "",
    keep_columns: bool = True,
    batch_size: int | None = None,
    concurrency: int = 1,
    num_cpus: float = 1.0,
    contract: Contract = "payload",
    on_error: OnError = "raise",
    **options: Any,
) -> Any:
    """``dataset.map_batches`` with a pool of ``concurrency`` :class:`ModelPredictor` actors.

    ``batch_size`` defaults to the model's ``max_batch_size`` hint, read without loading the
    weights on the driver. ``options`` go to :func:`modelport.load` in every actor.
    """
    require("ray.data", "ray")
    check_options(contract, on_error)
    spec = ModelSpec.of(source, **options)
    size = batch_size or spec.batch_size()
    return dataset.map_batches(
        ModelPredictor,
        fn_constructor_args=(spec,),
        fn_constructor_kwargs={
            "columns": columns,
            "prefix": prefix,
            "keep_columns": keep_columns,
            "batch_size": size,
            "contract": contract,
            "on_error": on_error,
        },
        batch_size=size,
        batch_format="numpy",
        concurrency=concurrency,
        num_cpus=num_cpus,
    )
