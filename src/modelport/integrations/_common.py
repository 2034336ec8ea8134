"""What every pipeline integration shares.

- :class:`ModelSpec`: where a model is and how to load it; small and picklable, it is what
  travels to workers, never the loaded model.
- A per-process cache, so each worker process loads a model once however many tasks,
  partitions or bundles it runs.
- Conversions between table columns and the model's named arrays, and batch helpers.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

from ..errors import ConfigError, InvalidInputError, PredictionError
from ..model import Model, Outputs
from ..signature import TensorSpec

__all__ = [
    "Columns",
    "ModelSpec",
    "OutputInfo",
    "cache_info",
    "clear_cache",
    "column_array",
    "conform",
    "describe_outputs",
    "gather_inputs",
    "input_columns",
    "predict_in_chunks",
    "split_rows",
    "stack_rows",
]

Columns: TypeAlias = str | Sequence[str] | Mapping[str, str | Sequence[str]] | None
"""Which table columns feed which model input.

``None``: columns named like the inputs, or, for a single-input model, every column.
A name or list of names: those columns, side by side, make the single input.
A mapping: input name to its column, or to the columns that are stacked into it.
"""


@dataclass(frozen=True)
class ModelSpec:
    """A model's path and :func:`modelport.load` options; what is shipped to workers."""

    path: str
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, source: str | os.PathLike[str] | ModelSpec, **options: Any) -> ModelSpec:
        """A spec for ``source`` (a path, or a spec to which ``options`` are added)."""
        if isinstance(source, ModelSpec):
            merged = {**dict(source.options), **options}
            return cls(source.path, tuple(sorted(merged.items())))
        if not isinstance(source, (str, os.PathLike)):
            raise ConfigError(
                f"expected a model path or ModelSpec, got {type(source).__name__}; pipelines "
                "ship the path to every worker and load the model there"
            )
        path = Path(source).resolve()
        return cls(str(path), tuple(sorted(options.items())))

    def load(self) -> Model:
        """The loaded model, from this process's cache when it was loaded here before."""
        key = (self.path, repr(self.options))
        with _lock:
            model = _cache.get(key)
            if model is None:
                from ..loader import load

                model = load(self.path, **dict(self.options))
                _cache[key] = model
                _loads[self.path] = _loads.get(self.path, 0) + 1
            return model

    def batch_size(self) -> int:
        """The model's ``max_batch_size`` hint (at least 1), read without loading weights."""
        from ..loader import resolve

        return max(1, resolve(Path(self.path), **dict(self.options)).batching.max_batch_size)


_lock = threading.Lock()
_cache: dict[tuple[str, str], Model] = {}
_loads: dict[str, int] = {}


def cache_info(path: str | os.PathLike[str] | None = None) -> dict[str, int]:
    """This process's id, how many models it holds, and how many loads it has done (all of
    them, or only those of the artifact at ``path``)."""
    with _lock:
        loads = sum(_loads.values()) if path is None else _loads.get(str(Path(path).resolve()), 0)
        return {"pid": os.getpid(), "models": len(_cache), "loads": loads}


def clear_cache() -> None:
    """Forget every cached model in this process."""
    with _lock:
        _cache.clear()
        _loads.clear()


# -- outputs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputInfo:
    """One output's numpy dtype and per-row shape (the shape without the batch dimension)."""

    name: str
    dtype: np.dtype[Any]
    row_shape: tuple[int, ...]


def describe_outputs(model: Model) -> list[OutputInfo]:
    """Each output's dtype and row shape: from the signature, or by running one example row.

    Engines need these before any data flows (Spark return types, Dask ``meta``).
    """
    sig = model.signature
    if sig and sig.outputs and all(_known(s) for s in sig.outputs):
        return [OutputInfo(s.name, s.dtype, tuple(s.shape[1:])) for s in sig.outputs]
    probe = model.predict_batch(model.example_inputs(1))
    return [OutputInfo(n, a.dtype, tuple(a.shape[1:])) for n, a in probe.items()]


def select_outputs(model: Model, output: str | None) -> list[OutputInfo]:
    """:func:`describe_outputs`, or only ``output`` (a clear error if the model lacks it)."""
    infos = describe_outputs(model)
    if output is None:
        return infos
    chosen = [i for i in infos if i.name == output]
    if not chosen:
        names = [i.name for i in infos]
        raise ConfigError(f"model {model.name!r} has no output {output!r}; it has {names}")
    return chosen


def _known(spec: TensorSpec) -> bool:
    return len(spec.shape) >= 1 and all(d >= 0 for d in spec.shape[1:])


# -- columns to inputs -----------------------------------------------------------------------


def input_columns(model: Model, columns: Columns, available: Sequence[str]) -> dict[str, list[str]]:
    """Resolve ``columns`` into ``{input name: [column, ...]}``, checked against the table."""
    names = model.signature.input_names if model.signature else []
    if not names:
        raise ConfigError(f"model {model.name!r} declares no inputs to map columns onto")
    if columns is None:
        if all(n in available for n in names):
            mapping = {n: [n] for n in names}
        elif len(names) == 1:
            mapping = {names[0]: list(available)}
        else:
            raise InvalidInputError(
                f"model {model.name!r} expects inputs {names} and the table has columns "
                f"{list(available)}; name the columns with columns={{input: column(s)}}"
            )
    elif isinstance(columns, Mapping):
        unknown = [k for k in columns if k not in names]
        if unknown:
            raise InvalidInputError(
                f"columns= names input(s) {unknown} that model {model.name!r} lacks; "
                f"it expects {names}"
            )
        missing_inputs = [n for n in names if n not in columns]
        if missing_inputs:
            raise InvalidInputError(
                f"columns= gives no column for input(s) {missing_inputs} of model {model.name!r}"
            )
        mapping = {n: [c] if isinstance(c, str) else list(c) for n, c in columns.items()}
    else:
        if len(names) != 1:
            raise InvalidInputError(
                f"model {model.name!r} has inputs {names}; map columns to each with "
                "columns={input: column(s)}"
            )
        mapping = {names[0]: [columns] if isinstance(columns, str) else list(columns)}
    absent = [c for cols in mapping.values() for c in cols if c not in available]
    if absent:
        raise InvalidInputError(f"no column(s) {absent} in the table; it has {list(available)}")
    if any(not cols for cols in mapping.values()):
        raise InvalidInputError(f"columns= maps an input to no column: {mapping}")
    return mapping


def gather_inputs(
    model: Model,
    mapping: Mapping[str, Sequence[str]],
    column: Callable[[str], Any],
) -> dict[str, np.ndarray]:
    """Build the named inputs from ``column(name)`` values, conformed to the signature."""
    inputs: dict[str, np.ndarray] = {}
    for name, cols in mapping.items():
        parts = [column_array(column(c), c) for c in cols]
        array = parts[0] if len(parts) == 1 else np.column_stack(parts)
        inputs[name] = conform(model, name, array)
    _check(model, inputs)
    return inputs


def column_array(values: Any, label: str) -> np.ndarray:
    """A column's values as one array; cells holding lists or arrays become rows."""
    array = np.asarray(values)
    if array.dtype == object and array.size and not isinstance(array.flat[0], (str, bytes)):
        # A column whose cells are lists or arrays: one row each.
        try:
            array = np.stack([np.asarray(v) for v in array])
        except ValueError as exc:
            raise InvalidInputError(f"column {label!r}: rows differ in length ({exc})") from None
    return array


def conform(model: Model, name: str, array: np.ndarray) -> np.ndarray:
    """Cast ``array`` to input ``name``'s datatype and unflatten rows to its shape."""
    spec = model.signature.input(name) if model.signature else None
    if spec is None:
        return array
    rows = array.shape[0] if array.ndim else 1
    tail = spec.shape[1:]
    if spec.shape and array.ndim != len(spec.shape) and all(d >= 0 for d in tail):
        size = int(np.prod(tail)) if tail else 1
        if array.size == rows * size:
            array = array.reshape((rows, *tail))
    if spec.datatype == "BYTES":
        return array.astype(object, copy=False)
    if array.dtype != spec.dtype:
        if array.dtype.kind in "OSU":
            raise InvalidInputError(f"input {name!r}: expected {spec.datatype} numbers, got text")
        array = array.astype(spec.dtype)
    return array


def _check(model: Model, inputs: Mapping[str, np.ndarray]) -> None:
    if model.signature:
        model.signature.check_inputs(inputs)


# -- batches -------------------------------------------------------------------------------


def stack_rows(model: Model, rows: Sequence[Any]) -> dict[str, np.ndarray]:
    """Stack examples (one row each: an array, or a mapping of input name to array) into inputs."""
    if not rows:
        raise InvalidInputError("an empty batch has no rows to predict")
    first = rows[0]
    if isinstance(first, Mapping):
        names = list(first)
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping) or list(row) != names:
                got = list(row) if isinstance(row, Mapping) else type(row).__name__
                raise InvalidInputError(f"row {i} has inputs {got}; row 0 has {names}")
        try:
            raw = {n: np.stack([np.asarray(r[n]) for r in rows]) for n in names}
        except ValueError as exc:
            raise InvalidInputError(f"rows differ in shape: {exc}") from None
    else:
        try:
            raw = {model.single_input_name(): np.stack([np.asarray(r) for r in rows])}
        except ValueError as exc:
            raise InvalidInputError(f"rows differ in shape: {exc}") from None
    inputs = {n: conform(model, n, a) for n, a in raw.items()}
    _check(model, inputs)
    return inputs


def predict_in_chunks(model: Model, inputs: Mapping[str, np.ndarray], size: int) -> Outputs:
    """``predict_batch`` over ``size``-row slices, concatenated; row counts checked."""
    rows = _rows(inputs)
    size = max(1, size)
    if rows <= size:
        return _predict(model, inputs, rows)
    parts = [
        _predict(model, {n: a[i : i + size] for n, a in inputs.items()}, min(size, rows - i))
        for i in range(0, rows, size)
    ]
    return {n: np.concatenate([p[n] for p in parts]) for n in parts[0]}


def _rows(inputs: Mapping[str, np.ndarray]) -> int:
    return next((a.shape[0] for a in inputs.values() if a.ndim), 1)


def _predict(model: Model, inputs: Mapping[str, np.ndarray], rows: int) -> Outputs:
    outputs = model.predict_batch(inputs)
    wrong = {n: a.shape for n, a in outputs.items() if not a.ndim or a.shape[0] != rows}
    if wrong:
        raise PredictionError(
            f"model {model.name!r} returned outputs {wrong} for a batch of {rows} rows; "
            "each output needs one row per input row"
        )
    return outputs


def split_rows(outputs: Outputs) -> list[dict[str, np.ndarray]]:
    """``{name: [n, ...]}`` into ``n`` rows of ``{name: [...]}``."""
    rows = _rows(outputs)
    return [{n: a[i] for n, a in outputs.items()} for i in range(rows)]
