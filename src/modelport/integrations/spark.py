"""Apache Spark: a pandas UDF that runs a modelport model, and a DataFrame helper.

The UDF carries only a :class:`~modelport.integrations.ModelSpec`; each Python worker
process loads the model once (Spark reuses its Python workers across tasks) and predicts
Arrow batches in slices of the model's ``max_batch_size`` hint. A plain pandas UDF is used
rather than ``pyspark.ml.functions.predict_batch_udf``, which needs a tensor shape for every
array column and cannot return outputs of more than two dimensions.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .._deps import require
from ..errors import ConfigError
from ..model import Model
from ._common import (
    Columns,
    ModelSpec,
    OutputInfo,
    column_array,
    conform,
    describe_outputs,
    input_columns,
    predict_in_chunks,
    select_outputs,
)

__all__ = ["predict_udf", "spark_type", "with_predictions"]

# numpy kind+size -> (Spark type name, numpy dtype Spark receives); Spark has no unsigned types.
_SPARK_TYPES = {
    "b1": ("BooleanType", "bool"),
    "i1": ("ByteType", "int8"),
    "i2": ("ShortType", "int16"),
    "i4": ("IntegerType", "int32"),
    "i8": ("LongType", "int64"),
    "u1": ("ShortType", "int16"),
    "u2": ("IntegerType", "int32"),
    "u4": ("LongType", "int64"),
    "f2": ("FloatType", "float32"),
    "f4": ("FloatType", "float32"),
    "f8": ("DoubleType", "float64"),
    "O": ("BinaryType", "object"),
}


def spark_type(info: OutputInfo) -> Any:
    """The Spark SQL type of one output's rows: a scalar, or arrays nested per dimension."""
    types = require("pyspark.sql.types", "spark")
    key = "O" if info.dtype.kind in "OSU" else f"{info.dtype.kind}{info.dtype.itemsize}"
    if key not in _SPARK_TYPES:
        raise ConfigError(f"output {info.name!r}: Spark cannot carry numpy {info.dtype} values")
    result = getattr(types, _SPARK_TYPES[key][0])()
    for _ in info.row_shape:
        result = types.ArrayType(result, containsNull=False)
    return result


def predict_udf(
    source: str | os.PathLike[str] | ModelSpec,
    *,
    output: str | None = None,
    batch_size: int | None = None,
    **options: Any,
) -> Any:
    """A pandas UDF: call it with one column per model input, in the signature's order.

    A column is a scalar column, or an array column (flat or nested; flat arrays are
    reshaped to the input's declared shape). Join several scalar columns into one input
    with ``pyspark.sql.functions.array``. The UDF returns a struct with one field per
    output, or only ``output``'s value when one is named. The model is loaded on the driver
    once to read its outputs; ``options`` go to :func:`modelport.load` everywhere.
    """
    functions = require("pyspark.sql.functions", "spark")
    types = require("pyspark.sql.types", "spark")
    pd = require("pandas", "spark")
    spec = ModelSpec.of(source, **options)
    model = spec.load()
    infos = select_outputs(model, output)
    if output is not None:
        return_type = spark_type(infos[0])
    else:
        return_type = types.StructType([types.StructField(i.name, spark_type(i)) for i in infos])
    inputs = model.signature.input_names if model.signature else [model.single_input_name()]
    fn = _udf_body(spec, inputs, infos, output, batch_size or spec.batch_size())
    # pyspark picks the UDF's kind from its type hints; these are built at run time.
    iterator: Any = Iterator
    tuple_of: Any = tuple  # pyspark (4.0+) reads tuple[...] like typing.Tuple[...]
    fn.__annotations__ = {
        "batches": iterator[tuple_of[pd.Series, ...]] if len(inputs) > 1 else iterator[pd.Series],
        "return": iterator[pd.Series] if output is not None else iterator[pd.DataFrame],
    }
    return functions.pandas_udf(fn, return_type)


def _udf_body(
    spec: ModelSpec,
    names: Sequence[str],
    infos: Sequence[OutputInfo],
    output: str | None,
    size: int,
) -> Any:
    def predict(batches: Any) -> Any:
        import pandas as pd

        model = spec.load()
        for batch in batches:
            series = batch if isinstance(batch, tuple) else (batch,)
            if len(series) != len(names):
                raise ConfigError(
                    f"model {model.name!r} takes {len(names)} input column(s) {list(names)}, "
                    f"the UDF was called with {len(series)}"
                )
            results = _predict_series(model, names, series, size)
            columns = {i.name: _to_column(results[i.name], i, pd) for i in infos}
            yield columns[output] if output is not None else pd.DataFrame(columns)

    return predict


def _predict_series(
    model: Model, names: Sequence[str], series: Sequence[Any], size: int
) -> dict[str, np.ndarray]:
    inputs = {n: conform(model, n, column_array(s.to_numpy(), n)) for n, s in zip(names, series)}
    if model.signature:
        model.signature.check_inputs(inputs)
    return predict_in_chunks(model, inputs, size)


def _to_column(array: np.ndarray, info: OutputInfo, pd: Any) -> Any:
    key = "O" if array.dtype.kind in "OSU" else f"{array.dtype.kind}{array.dtype.itemsize}"
    target = _SPARK_TYPES.get(key, ("", "object"))[1]
    if array.dtype != np.dtype(target):
        array = array.astype(target)
    if array.ndim == 1:
        return pd.Series(array)
    if array.ndim == 2:
        return pd.Series(list(array))
    return pd.Series(array.tolist())


def with_predictions(
    frame: Any,
    source: str | os.PathLike[str] | ModelSpec,
    *,
    columns: Columns = None,
    prefix: str = "",
    batch_size: int | None = None,
    **options: Any,
) -> Any:
    """``frame`` with one column per model output, named ``prefix + output``.

    ``columns`` says which columns feed which input (see
    :data:`~modelport.integrations.Columns`); several columns for one input are joined with
    ``array()``.
    """
    functions = require("pyspark.sql.functions", "spark")
    spec = ModelSpec.of(source, **options)
    model = spec.load()
    mapping = input_columns(model, columns, list(frame.columns))
    outputs = [prefix + o.name for o in describe_outputs(model)]
    clash = [c for c in outputs if c in frame.columns]
    if clash:
        raise ConfigError(
            f"output column(s) {clash} already exist in the frame; pass prefix= to rename them"
        )
    names = model.signature.input_names if model.signature else list(mapping)
    args = [
        functions.col(mapping[n][0]) if len(mapping[n]) == 1 else functions.array(*mapping[n])
        for n in names
    ]
    udf = predict_udf(spec, batch_size=batch_size)
    hidden = "__modelport_predictions__"
    with_struct = frame.withColumn(hidden, udf(*args))
    fields = [o.name for o in describe_outputs(model)]
    return with_struct.select(
        *[functions.col(f"`{c}`") for c in frame.columns],
        *[functions.col(f"{hidden}.`{f}`").alias(prefix + f) for f in fields],
    )
