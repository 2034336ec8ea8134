"""Dask: predictions over Dask DataFrames and Arrays, one partition (block) at a time.

Only the :class:`~modelport.integrations.ModelSpec` travels with the task graph; each worker
process loads the model once, on its first partition, and keeps it for the rest.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._deps import require
from ..errors import ConfigError
from ._common import (
    Columns,
    ModelSpec,
    OutputInfo,
    conform,
    describe_outputs,
    gather_inputs,
    input_columns,
    predict_in_chunks,
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
    **options: Any,
) -> Any:
    """A Dask DataFrame with one column per model output (named ``prefix + output``).

    ``columns`` says which columns feed which input (see :data:`Columns`). Outputs with one
    value per row become plain columns; wider outputs become object columns of row arrays.
    Each partition is predicted in slices of ``batch_size`` rows (default: the model's
    ``max_batch_size`` hint). ``options`` go to :func:`modelport.load` on every worker.
    """
    require("dask.dataframe", "dask")
    spec = ModelSpec.of(source, **options)
    model = spec.load()
    mapping = input_columns(model, columns, [str(c) for c in frame.columns])
    outputs = describe_outputs(model)
    names = [prefix + o.name for o in outputs]
    clash = [n for n in names if keep_columns and n in frame.columns]
    if clash:
        raise ConfigError(
            f"output column(s) {clash} already exist in the frame; pass prefix= to rename them"
        )
    size = batch_size or spec.batch_size()
    meta = _predict_partition(
        frame._meta, spec, mapping, outputs, prefix, keep_columns, size, loaded=model
    )
    return frame.map_partitions(
        _predict_partition, spec, mapping, outputs, prefix, keep_columns, size, meta=meta
    )


def _predict_partition(
    part: Any,
    spec: ModelSpec,
    mapping: Mapping[str, Sequence[str]],
    outputs: Sequence[OutputInfo],
    prefix: str,
    keep_columns: bool,
    size: int,
    loaded: Any = None,
) -> Any:
    import pandas as pd

    if len(part) == 0:
        results = {o.name: np.empty((0, *o.row_shape), o.dtype) for o in outputs}
    else:
        model = loaded or spec.load()
        inputs = gather_inputs(model, mapping, lambda c: part[c].to_numpy())
        results = predict_in_chunks(model, inputs, size)
    columns = {prefix + o.name: _column(results[o.name], o.dtype, part.index, pd) for o in outputs}
    if keep_columns:
        return part.assign(**columns)
    return pd.DataFrame(columns, index=part.index)


def _column(array: np.ndarray, dtype: np.dtype[Any], index: Any, pd: Any) -> Any:
    if array.ndim == 1:
        return pd.Series(array, index=index, dtype=dtype)
    return pd.Series(list(array), index=index, dtype=object)


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
    input_name = model.single_input_name()
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
    if model.signature:
        model.signature.check_inputs(inputs)
    return predict_in_chunks(model, inputs, size)[output]
