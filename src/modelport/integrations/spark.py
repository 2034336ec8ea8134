"""Apache Spark: a pandas UDF that runs a modelport model, and a DataFrame helper.

The UDF carries only a :class:`~modelport.integrations.ModelSpec` and its plan; each Python
worker process loads the model once (Spark reuses its Python workers across tasks) and
predicts Arrow batches in slices of the model's ``max_batch_size`` hint. A plain pandas UDF is
used rather than ``pyspark.ml.functions.predict_batch_udf``, which needs a tensor shape for
every array column and cannot return outputs of more than two dimensions.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
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
    Predicted,
    TableTypes,
    answer_cell,
    answer_type,
    check_options,
    make_plan,
    run_plan,
    udf_columns,
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
    "U": ("StringType", "object"),
}


def _key(dtype: np.dtype[Any]) -> str:
    if dtype.kind == "U":
        return "U"
    return "O" if dtype.kind in "OS" else f"{dtype.kind}{dtype.itemsize}"


def spark_type(info: OutputInfo) -> Any:
    """The Spark SQL type of one output's rows: a scalar, or arrays nested per dimension; for
    a column of ``postprocess`` answers, the type of the example answer's value."""
    types = require("pyspark.sql.types", "spark")
    if info.answer:
        return answer_type(info.sample, info.name, _spark_types(types))
    if _key(info.dtype) not in _SPARK_TYPES:
        raise ConfigError(f"output {info.name!r}: Spark cannot carry numpy {info.dtype} values")
    result = getattr(types, _SPARK_TYPES[_key(info.dtype)][0])()
    for _ in info.row_shape:
        result = types.ArrayType(result, containsNull=False)
    return result


def _spark_types(types: Any) -> TableTypes:
    return TableTypes(
        "Spark",
        types.BooleanType,
        types.LongType,
        types.DoubleType,
        types.StringType,
        types.BinaryType,
        types.ArrayType,
        lambda value: types.MapType(types.StringType(), value),
        spark_type,
    )


def _return_type(plan: Plan, output: str | None) -> Any:
    types = require("pyspark.sql.types", "spark")
    if output is not None:
        return spark_type(plan.outputs[0])
    fields = [types.StructField(o.name, spark_type(o)) for o in plan.outputs]
    if plan.on_error == "column":
        fields.append(types.StructField(ERROR_COLUMN, types.StringType()))
    return types.StructType(fields)


def predict_udf(
    source: str | os.PathLike[str] | ModelSpec,
    *,
    output: str | None = None,
    batch_size: int | None = None,
    columns: Sequence[str] | None = None,
    contract: Contract = "payload",
    on_error: OnError = "raise",
    **options: Any,
) -> Any:
    """A pandas UDF running the model's contract on its argument columns.

    For a model without its own ``preprocess``, or with ``contract="tensors"``: one column
    per model input, in the served signature's order (an array column, flat or nested; join
    scalar columns into one with ``pyspark.sql.functions.array``). For a model with its own
    ``preprocess``: one column whose value is each row's payload, or the columns named in
    ``columns`` (each row's payload is then ``{name: value}``). ``columns`` also names the
    arguments in error messages.

    The UDF returns a struct with one field per output (or per key of ``postprocess``'s
    answer), plus ``error`` with ``on_error="column"``; or only ``output``'s value when one is
    named. The model is loaded on the driver once to read its outputs; ``options`` go to
    :func:`modelport.load` everywhere.
    """
    require("pyspark.sql.functions", "spark")
    check_options(contract, on_error)
    spec = ModelSpec.of(source, **options)
    model = spec.load()
    mapping, names = udf_columns(model, contract, columns)
    plan = make_plan(
        spec,
        model,
        mapping,
        names,
        contract=contract,
        on_error=on_error,
        batch_size=batch_size,
        output=output,
    )
    return _udf(plan, output)


def _udf(plan: Plan, output: str | None) -> Any:
    functions = require("pyspark.sql.functions", "spark")
    pd = require("pandas", "spark")
    fn = _udf_body(plan, output)
    # pyspark picks the UDF's kind from its type hints; these are built at run time.
    iterator: Any = Iterator
    tuple_of: Any = tuple  # pyspark (4.0+) reads tuple[...] like typing.Tuple[...]
    many = len(plan.columns) > 1
    fn.__annotations__ = {
        "batches": iterator[tuple_of[pd.Series, ...]] if many else iterator[pd.Series],
        "return": iterator[pd.Series] if output is not None else iterator[pd.DataFrame],
    }
    return functions.pandas_udf(fn, _return_type(plan, output))


def _udf_body(plan: Plan, output: str | None) -> Any:
    names = plan.columns

    def predict(batches: Any) -> Any:
        import pandas as pd

        model = plan.spec.load()
        for batch in batches:
            series = batch if isinstance(batch, tuple) else (batch,)
            if len(series) != len(names):
                raise ConfigError(
                    f"model {model.name!r} takes {len(names)} column(s) {names}, the UDF was "
                    f"called with {len(series)}"
                )
            by_name = {n: part.to_numpy() for n, part in zip(names, series)}
            result = run_plan(model, plan, by_name.__getitem__, len(series[0]))
            columns = _columns(plan, result, pd)
            yield columns[output] if output is not None else pd.DataFrame(columns)

    return predict


def _columns(plan: Plan, result: Predicted, pd: Any) -> dict[str, Any]:
    bad = result.bad
    columns = {o.name: _to_column(result.values[o.name], o, bad, pd) for o in plan.outputs}
    if plan.on_error == "column":
        columns[ERROR_COLUMN] = pd.Series(result.errors, dtype=object)
    return columns


def _to_column(array: np.ndarray, info: OutputInfo, bad: np.ndarray, pd: Any) -> Any:
    if info.answer:
        return pd.Series([answer_cell(v) for v in array], dtype=object)
    target = _SPARK_TYPES.get(_key(array.dtype), ("", "object"))[1]
    if array.dtype != np.dtype(target):
        array = array.astype(target)
    if bad.any():  # nulls: an object column, None in each bad row
        cells = array.tolist() if array.ndim == 1 else list(array)
        return pd.Series([None if b else c for c, b in zip(cells, bad)], dtype=object)
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
    contract: Contract = "payload",
    on_error: OnError = "raise",
    **options: Any,
) -> Any:
    """``frame`` with the model's answer as columns, each named ``prefix + name``.

    For a model with its own ``preprocess`` (and ``contract="payload"``, the default), each
    row becomes a payload ``{column: value}`` of the columns ``columns`` names (all by
    default; one name: that column's value alone); otherwise ``columns`` says which columns
    feed which input (see :data:`~modelport.integrations.Columns`). The columns added are
    the outputs, or the keys of ``postprocess``'s answer, plus ``error`` with
    ``on_error="column"``.
    """
    functions = require("pyspark.sql.functions", "spark")
    check_options(contract, on_error)
    spec = ModelSpec.of(source, **options)
    model = spec.load()
    plan = make_plan(
        spec,
        model,
        columns,
        list(frame.columns),
        contract=contract,
        on_error=on_error,
        batch_size=batch_size,
    )
    added = plan.result_names(prefix)
    clash = [c for c in added if c in frame.columns]
    if clash:
        raise ConfigError(
            f"output column(s) {clash} already exist in the frame; pass prefix= to rename them"
        )
    udf = _udf(plan, None)
    hidden = "__modelport_predictions__"
    with_struct = frame.withColumn(hidden, udf(*[functions.col(f"`{c}`") for c in plan.columns]))
    return with_struct.select(
        *[functions.col(f"`{c}`") for c in frame.columns],
        *[functions.col(f"{hidden}.`{f}`").alias(prefix + f) for f in plan.result_names()],
    )
