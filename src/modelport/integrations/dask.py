"""Dask: predictions over Dask DataFrames and Arrays, one partition (block) at a time.

Only the :class:`~modelport.integrations.ModelSpec` travels with the task graph; each worker
process loads the model once, on its first partition, and keeps it for the rest.
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
    arrow_array,
    check_options,
    conform,
    describe_outputs,
    make_plan,
    predict_in_chunks,
    run_plan,
)

__all__ = ["predict_array", "predict_frame"]


def predict_frame(
    frame: Any,
    source: str | os.PathLike[str] | ModelSpec,
    *,
    columns: Columns = None,
    prefix: str = "",
    keep_columns: bool = True,
    batch_size: int | None = None,
    contract: Contract = "payload",
    on_error: OnError = "raise",
    **options: Any,
) -> Any:
    """A Dask DataFrame with the model's answer as columns, each named ``prefix + name``.

    For a model with its own ``preprocess`` (and ``contract="payload"``, the default), each
    row becomes a payload ``{column: value}`` of the columns ``columns`` names (all by
    default; one name: that column's value alone); otherwise ``columns`` says which columns
    feed which input (see :data:`Columns`). The columns added are the outputs, or the keys of
    ``postprocess``'s answer, plus ``error`` with ``on_error="column"``. Outputs with one value
    per row are plain columns; wider outputs, answers, and every column when bad rows may be
    null (``on_error`` other than ``"raise"``), are pyarrow-backed, so ``to_parquet`` writes
    them as they are. Each partition is predicted in slices of ``batch_size`` rows (default:
    the model's ``max_batch_size`` hint). ``options`` go to :func:`modelport.load` on every
    worker.
    """
    require("dask.dataframe", "dask")
    check_options(contract, on_error)
    spec = ModelSpec.of(source, **options)
    model = spec.load()
    plan = make_plan(
        spec,
        model,
        columns,
        [str(c) for c in frame.columns],
        contract=contract,
        on_error=on_error,
        batch_size=batch_size,
    )
    clash = [n for n in plan.result_names(prefix) if keep_columns and n in frame.columns]
    if clash:
        raise ConfigError(
            f"output column(s) {clash} already exist in the frame; pass prefix= to rename them"
        )
    meta = _predict_partition(frame._meta, plan, prefix, keep_columns, loaded=model)
    return frame.map_partitions(_predict_partition, plan, prefix, keep_columns, meta=meta)


def _predict_partition(
    part: Any, plan: Plan, prefix: str, keep_columns: bool, loaded: Any = None
) -> Any:
    import pandas as pd

    model = loaded or plan.spec.load()
    result = run_plan(model, plan, lambda c: part[c].to_numpy(), len(part))
    columns = {
        prefix + o.name: _column(result.values[o.name], o, result.bad, plan, part.index)
        for o in plan.outputs
    }
    if plan.on_error == "column":
        pa = require("pyarrow", "dask")
        columns[prefix + ERROR_COLUMN] = pd.Series(
            pd.arrays.ArrowExtensionArray(pa.array(result.errors, pa.string())), index=part.index
        )
    if keep_columns:
        return part.assign(**columns)
    return pd.DataFrame(columns, index=part.index)


def _column(array: np.ndarray, info: OutputInfo, bad: np.ndarray, plan: Plan, index: Any) -> Any:
    import pandas as pd

    if not info.answer and array.ndim == 1 and plan.on_error == "raise":
        return pd.Series(array, index=index, dtype=array.dtype)
    return pd.Series(pd.arrays.ArrowExtensionArray(arrow_array(array, info, bad)), index=index)


def predict_array(
    array: Any,
    source: str | os.PathLike[str] | ModelSpec,
    *,
    output: str | None = None,
    batch_size: int | None = None,
    **options: Any,
) -> Any:
    """A Dask Array of one output of a single-input model, block by block along axis 0.

    The array is rechunked so that only the first (batch) axis is split. ``output`` picks
    the output when the model has several.
    """
    da = require("dask.array", "dask")
    spec = ModelSpec.of(source, **options)
    model = spec.load()
    input_name = model.single_input_name(model.served_signature)
    infos = {o.name: o for o in describe_outputs(model)}
    if output is None:
        if len(infos) != 1:
            raise ConfigError(
                f"model {model.name!r} has outputs {list(infos)}; pick one with output="
            )
        output = next(iter(infos))
    if output not in infos:
        raise ConfigError(f"model {model.name!r} has no output {output!r}; it has {list(infos)}")
    info = infos[output]
    if array.ndim > 1:
        array = array.rechunk({axis: -1 for axis in range(1, array.ndim)})
    ndim = 1 + len(info.row_shape)
    chunks = (array.chunks[0], *((d,) for d in info.row_shape))
    extra: dict[str, Any] = {}
    if ndim < array.ndim:
        extra["drop_axis"] = list(range(ndim, array.ndim))
    elif ndim > array.ndim:
        extra["new_axis"] = list(range(array.ndim, ndim))
    return da.map_blocks(
        _predict_block,
        array,
        spec,
        input_name,
        output,
        batch_size or spec.batch_size(),
        dtype=info.dtype,
        chunks=chunks,
        meta=np.empty((0,) * ndim, info.dtype),
        **extra,
    )


def _predict_block(
    block: np.ndarray, spec: ModelSpec, input_name: str, output: str, size: int
) -> np.ndarray:
    model = spec.load()
    if block.shape[0] == 0:
        info = next(o for o in describe_outputs(model) if o.name == output)
        return np.empty((0, *info.row_shape), info.dtype)
    inputs = {input_name: conform(model, input_name, block)}
    if model.served_signature:
        model.served_signature.check_inputs(inputs)
    return predict_in_chunks(model, inputs, size)[output]
