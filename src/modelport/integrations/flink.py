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
from ..errors import ConfigError
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
    """The Flink data type of one output's rows: a scalar, or arrays nested per dimension."""
    types = require("pyflink.table", "flink").DataTypes
    if _key(info.dtype) not in _FLINK_TYPES:
        raise ConfigError(f"output {info.name!r}: Flink cannot carry numpy {info.dtype} values")
    result = getattr(types, _FLINK_TYPES[_key(info.dtype)][0])()
    for _ in info.row_shape:
        result = types.ARRAY(result)
    return result


class ModelFunction(_ScalarFunction):  # type: ignore[misc]
    """A vectorized scalar function: one pandas Series per model input, in signature order.

    Returns a DataFrame with one column per output (a ROW), or the Series of ``output``.
    """

    def __init__(
        self,
        spec: ModelSpec,
        inputs: Sequence[str],
        outputs: Sequence[OutputInfo],
        output: str | None,
        batch_size: int,
    ) -> None:
        self.spec = spec
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.output = output
        self.batch_size = batch_size
        self.model: Any = None

    def open(self, function_context: Any) -> None:
        """Load the model (once per Python worker process)."""
        self.model = self.spec.load()

    def eval(self, *series: Any) -> Any:
        """Predict one Arrow batch."""
        import pandas as pd

        if len(series) != len(self.inputs):
            raise ConfigError(
                f"model {self.model.name!r} takes {len(self.inputs)} input column(s) "
                f"{self.inputs}, the UDF was called with {len(series)}"
            )
        inputs = {
            n: conform(self.model, n, column_array(s.to_numpy(), n))
            for n, s in zip(self.inputs, series)
        }
        if self.model.signature:
            self.model.signature.check_inputs(inputs)
        results = predict_in_chunks(self.model, inputs, self.batch_size)
        columns = {o.name: _to_column(results[o.name], pd) for o in self.outputs}
        if self.output is not None:
            return columns[self.output]
        return pd.DataFrame(columns)


def _to_column(array: np.ndarray, pd: Any) -> Any:
    target = np.dtype(_FLINK_TYPES.get(_key(array.dtype), ("", "object"))[1])
    if array.dtype != target:
        array = array.astype(target)
    if array.ndim == 1:
        return pd.Series(array)
    if array.ndim == 2:
        return pd.Series(list(array))
    return pd.Series(array.tolist())


def model_udf(
    source: str | os.PathLike[str] | ModelSpec,
    *,
    output: str | None = None,
    batch_size: int | None = None,
    **options: Any,
) -> Any:
    """A pandas UDF running the model; call it with one column per input (signature order).

    Its result is a ROW with one field per output, or only ``output``'s value when one is
    named. The model is loaded here once to read its outputs; ``options`` go to
    :func:`modelport.load` in every worker.
    """
    types = require("pyflink.table", "flink").DataTypes
    spec = ModelSpec.of(source, **options)
    model = spec.load()
    infos = select_outputs(model, output)
    if output is not None:
        result_type = flink_type(infos[0])
    else:
        result_type = types.ROW([types.FIELD(i.name, flink_type(i)) for i in infos])
    inputs = model.signature.input_names if model.signature else [model.single_input_name()]
    function = ModelFunction(spec, inputs, infos, output, batch_size or spec.batch_size())
    return _udf.udf(function, result_type=result_type, func_type="pandas")


def predict_table(
    table: Any,
    source: str | os.PathLike[str] | ModelSpec,
    *,
    columns: Columns = None,
    prefix: str = "",
    batch_size: int | None = None,
    **options: Any,
) -> Any:
    """``table`` with one column per model output, named ``prefix + output``.

    ``columns`` says which columns feed which input (see
    :data:`~modelport.integrations.Columns`); several columns for one input are joined
    into an array.
    """
    expressions = require("pyflink.table.expressions", "flink")
    spec = ModelSpec.of(source, **options)
    model = spec.load()
    available = list(table.get_schema().get_field_names())
    mapping = input_columns(model, columns, available)
    outputs = [o.name for o in describe_outputs(model)]
    clash = [prefix + o for o in outputs if prefix + o in available]
    if clash:
        raise ConfigError(
            f"output column(s) {clash} already exist in the table; pass prefix= to rename them"
        )
    names = model.signature.input_names if model.signature else list(mapping)
    args = [
        expressions.col(mapping[n][0])
        if len(mapping[n]) == 1
        else expressions.array(*[expressions.col(c) for c in mapping[n]])
        for n in names
    ]
    hidden = "__modelport_predictions__"
    udf = model_udf(spec, batch_size=batch_size)
    with_row = table.add_columns(udf(*args).alias(hidden))
    return with_row.select(
        *[expressions.col(c) for c in available],
        *[expressions.col(hidden).get(o).alias(prefix + o) for o in outputs],
    )


def predict_stream(
    stream: Any,
    source: str | os.PathLike[str] | ModelSpec,
    *,
    table_env: Any = None,
    columns: Columns = None,
    prefix: str = "",
    batch_size: int | None = None,
    **options: Any,
) -> Any:
    """A DataStream of Rows: each input Row's fields plus one field per model output.

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
        **options,
    )
    return table_env.to_data_stream(predicted)
