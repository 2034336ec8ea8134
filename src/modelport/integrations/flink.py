"""Apache Flink (PyFlink): a vectorized (pandas) UDF that loads the model in ``open()``.

Flink hands a vectorized UDF one Arrow batch at a time, cut from the bundle of records the
Python worker holds (``python.fn-execution.arrow.batch.size`` rows at most, default 1000), so
predictions are batched without buffering state of our own. :func:`predict_table` adds the
prediction columns to a Table; :func:`predict_stream` does the same for a DataStream, through
the Table bridge. Only the :class:`~modelport.integrations.ModelSpec` is serialised into the
job; each Python worker process loads the model once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._deps import require
from ..errors import ConfigError, PredictionError
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

__all__ = ["ModelFunction", "flink_type", "model_udf", "predict_stream", "predict_table"]

_udf = require("pyflink.table.udf", "flink")
_ScalarFunction: Any = _udf.ScalarFunction

# numpy kind+size -> (Flink DataTypes factory, numpy dtype Flink receives); no unsigned types.
_FLINK_TYPES = {
    "b1": ("BOOLEAN", "bool"),
    "i1": ("TINYINT", "int8"),
    "i2": ("SMALLINT", "int16"),
    "i4": ("INT", "int32"),
    "i8": ("BIGINT", "int64"),
    "u1": ("SMALLINT", "int16"),
    "u2": ("INT", "int32"),
    "u4": ("BIGINT", "int64"),
    "f2": ("FLOAT", "float32"),
    "f4": ("FLOAT", "float32"),
    "f8": ("DOUBLE", "float64"),
    "O": ("BYTES", "object"),
}


def _key(dtype: np.dtype[Any]) -> str:
    return "O" if dtype.kind in "OSU" else f"{dtype.kind}{dtype.itemsize}"


def flink_type(info: OutputInfo) -> Any:
    """The Flink data type of one output's rows: a scalar, or arrays nested per dimension; for
    a column of ``postprocess`` answers, the type of the example answer's value."""
    types = require("pyflink.table", "flink").DataTypes
    if info.answer:
        return answer_type(info.sample, info.name, _flink_types(types))
    if _key(info.dtype) not in _FLINK_TYPES:
        raise ConfigError(f"output {info.name!r}: Flink cannot carry numpy {info.dtype} values")
    result = getattr(types, _FLINK_TYPES[_key(info.dtype)][0])()
    for _ in info.row_shape:
        result = types.ARRAY(result)
    return result


class ModelFunction(_ScalarFunction):  # type: ignore[misc]
    """A vectorized scalar function: one pandas Series per column the plan reads, in order.

    Returns a DataFrame with one column per output (a ROW), or the Series of ``output``.
    """

    def __init__(self, plan: Plan, output: str | None) -> None:
        self.plan = plan
        self.output = output
        self.model: Any = None

    def open(self, function_context: Any) -> None:
        """Load the model (once per Python worker process)."""
        self.model = self.plan.spec.load()

    def eval(self, *series: Any) -> Any:
        """Predict one Arrow batch."""
        import pandas as pd

        names = self.plan.columns
        if len(series) != len(names):
            raise ConfigError(
                f"model {self.model.name!r} takes {len(names)} column(s) {names}, the UDF was "
                f"called with {len(series)}"
            )
        by_name = {n: part.to_numpy() for n, part in zip(names, series)}
        result = run_plan(self.model, self.plan, by_name.__getitem__, len(series[0]))
        _refuse_nan(self.plan, result)
        bad = result.bad
        columns = {o.name: _to_column(result.values[o.name], o, bad, pd) for o in self.plan.outputs}
        if self.plan.on_error == "column":
            columns[ERROR_COLUMN] = pd.Series(result.errors, dtype=object)
        if self.output is not None:
            return columns[self.output]
        return pd.DataFrame(columns)


def _refuse_nan(plan: Plan, result: Predicted) -> None:
    """Make each row with a NaN output a bad row: a pandas UDF cannot return NaN to Flink
    (PyFlink turns it into NULL, and then cannot collect an array holding that NULL)."""
    rows = len(result.errors)
    for info in plan.outputs:
        array = result.values[info.name]
        if info.answer or array.dtype.kind != "f" or not rows:
            continue
        nan = np.isnan(array.reshape(rows, -1)).any(axis=1) & ~result.bad
        for row in np.flatnonzero(nan):
            message = (
                f"output {info.name!r} is NaN, which a Flink pandas UDF cannot return (PyFlink "
                "makes it NULL)"
            )
            if plan.on_error == "raise":
                raise PredictionError(
                    f"{message}; on_error='null' writes NULL instead "
                    f"(row {row} of a batch of {rows})"
                )
            result.errors[int(row)] = f"PredictionError: {message}"


def _to_column(array: np.ndarray, info: OutputInfo, bad: np.ndarray, pd: Any) -> Any:
    if info.answer:
        return pd.Series([None if b else answer_cell(v) for v, b in zip(array, bad)], dtype=object)
    target = np.dtype(_FLINK_TYPES.get(_key(array.dtype), ("", "object"))[1])
    if array.dtype != target:
        array = array.astype(target)
    if bad.any():
        cells = array.tolist() if array.ndim == 1 else list(array)
        return pd.Series([None if b else c for c, b in zip(cells, bad)], dtype=object)
    if array.ndim == 1:
        return pd.Series(array)
    if array.ndim == 2:
        return pd.Series(list(array))
    return pd.Series(array.tolist())


def _flink_types(types: Any) -> TableTypes:
    return TableTypes(
        "Flink",
        types.BOOLEAN,
        types.BIGINT,
        types.DOUBLE,
        types.STRING,
        types.BYTES,
        types.ARRAY,
        lambda value: types.MAP(types.STRING(), value),
        flink_type,
    )


def _result_type(plan: Plan, output: str | None) -> Any:
    types = require("pyflink.table", "flink").DataTypes
    if output is not None:
        return flink_type(plan.outputs[0])
    fields = [types.FIELD(o.name, flink_type(o)) for o in plan.outputs]
    if plan.on_error == "column":
        fields.append(types.FIELD(ERROR_COLUMN, types.STRING()))
    return types.ROW(fields)


def model_udf(
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
    per model input, in the served signature's order. For a model with its own
    ``preprocess``: one column whose value is each row's payload, or the columns named in
    ``columns`` (each row's payload is then ``{name: value}``). ``columns`` also names the
    arguments in error messages. Its result is a ROW with one field per output (or per key
    of ``postprocess``'s answer), plus ``error`` with ``on_error="column"``; or only
    ``output``'s value when one is named. The model is loaded here once to read its
    outputs; ``options`` go to :func:`modelport.load` in every worker.
    """
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
    return _udf_of(plan, output)


def _udf_of(plan: Plan, output: str | None) -> Any:
    return _udf.udf(
        ModelFunction(plan, output), result_type=_result_type(plan, output), func_type="pandas"
    )


def predict_table(
    table: Any,
    source: str | os.PathLike[str] | ModelSpec,
    *,
    columns: Columns = None,
    prefix: str = "",
    batch_size: int | None = None,
    contract: Contract = "payload",
    on_error: OnError = "raise",
    **options: Any,
) -> Any:
    """``table`` with the model's answer as columns, each named ``prefix + name``.

    For a model with its own ``preprocess`` (and ``contract="payload"``, the default), each
    row becomes a payload ``{column: value}`` of the columns ``columns`` names (all by
    default; one name: that column's value alone); otherwise ``columns`` says which columns
    feed which input (see :data:`~modelport.integrations.Columns`). The columns added are
    the outputs, or the keys of ``postprocess``'s answer, plus ``error`` with
    ``on_error="column"``.
    """
    expressions = require("pyflink.table.expressions", "flink")
    check_options(contract, on_error)
    spec = ModelSpec.of(source, **options)
    model = spec.load()
    available = list(table.get_schema().get_field_names())
    plan = make_plan(
        spec,
        model,
        columns,
        available,
        contract=contract,
        on_error=on_error,
        batch_size=batch_size,
    )
    clash = [c for c in plan.result_names(prefix) if c in available]
    if clash:
        raise ConfigError(
            f"output column(s) {clash} already exist in the table; pass prefix= to rename them"
        )
    hidden = "__modelport_predictions__"
    udf = _udf_of(plan, None)
    with_row = table.add_columns(udf(*[expressions.col(c) for c in plan.columns]).alias(hidden))
    return with_row.select(
        *[expressions.col(c) for c in available],
        *[expressions.col(hidden).get(f).alias(prefix + f) for f in plan.result_names()],
    )


def predict_stream(
    stream: Any,
    source: str | os.PathLike[str] | ModelSpec,
    *,
    table_env: Any = None,
    columns: Columns = None,
    prefix: str = "",
    batch_size: int | None = None,
    contract: Contract = "payload",
    on_error: OnError = "raise",
    **options: Any,
) -> Any:
    """A DataStream of Rows: each input Row's fields plus the model's answer's fields (see
    :func:`predict_table`).

    The stream's elements must be named Rows (``Types.ROW_NAMED``). ``table_env`` is the
    ``StreamTableEnvironment`` to bridge through (one is created on the stream's environment
    when omitted).
    """
    if table_env is None:
        table = require("pyflink.table", "flink")
        table_env = table.StreamTableEnvironment.create(stream.get_execution_environment())
    predicted = predict_table(
        table_env.from_data_stream(stream),
        source,
        columns=columns,
        prefix=prefix,
        batch_size=batch_size,
        contract=contract,
        on_error=on_error,
        **options,
    )
    return table_env.to_data_stream(predicted)
