"""What every pipeline integration shares.

- :class:`ModelSpec`: where a model is and how to load it; small and picklable, it is what
  travels to workers, never the loaded model.
- A per-process cache, so each worker process loads a model once however many tasks,
  partitions or bundles it runs.
- A :class:`Plan` (made on the driver) of how a table's rows meet the model: as tensors, or
  as payloads for its own ``preprocess``/``postprocess``; and :func:`run_plan`, which runs
  it on a batch, finding bad rows by splitting failed batches in halves.
- Conversions between table columns and the model's named arrays, and batch helpers.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias, TypeVar

import numpy as np

from ..errors import (
    ArtifactError,
    ConfigError,
    InvalidInputError,
    MissingDependencyError,
    ModelportError,
    PredictionError,
)
from ..model import Model, Outputs, as_bytes, maybe_single
from ..signature import TensorSpec

__all__ = [
    "ERROR_COLUMN",
    "Columns",
    "Contract",
    "Failures",
    "ModelSpec",
    "OnError",
    "OutputInfo",
    "Plan",
    "Predicted",
    "TableTypes",
    "answer_cell",
    "answer_row",
    "answer_type",
    "arrow_array",
    "cache_info",
    "check_options",
    "clear_cache",
    "column_array",
    "conform",
    "describe_answers",
    "describe_outputs",
    "gather_inputs",
    "input_columns",
    "isolate",
    "make_plan",
    "plain",
    "predict_in_chunks",
    "predict_isolated",
    "predict_prepared",
    "prepare",
    "run_plan",
    "split_rows",
    "stack_rows",
    "udf_columns",
]

T = TypeVar("T")

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


# -- options ---------------------------------------------------------------------------------

Contract = Literal["payload", "tensors"]
"""How rows meet the model: ``"payload"`` (the default) runs the model's own ``preprocess`` and
``postprocess`` on each row where it defines them, as ``model(payload)`` does; ``"tensors"``
feeds columns straight to ``predict_batch`` and writes its output tensors."""
OnError = Literal["raise", "null", "column"]
"""What a bad row does: ``"raise"`` fails the job naming it; ``"null"`` gives it null outputs;
``"column"`` does too, and writes its reason into an ``error`` column (null for good rows)."""
ERROR_COLUMN = "error"
"""The column (after ``prefix``) that ``on_error="column"`` writes each row's reason into."""
_CONTRACTS = ("payload", "tensors")
_ON_ERROR = ("raise", "null", "column")
_FATAL = (ConfigError, MissingDependencyError, ArtifactError)
"""Errors about the model or the job, not a row: never isolated, always raised."""


def check_options(contract: str, on_error: str) -> None:
    """Refuse an unknown ``contract`` or ``on_error`` before any data flows."""
    if contract not in _CONTRACTS:
        raise ConfigError(f"contract={contract!r}: expected one of {list(_CONTRACTS)}")
    if on_error not in _ON_ERROR:
        raise ConfigError(f"on_error={on_error!r}: expected one of {list(_ON_ERROR)}")


def custom_preprocess(model: Model) -> bool:
    """Whether the model defines its own per-payload :meth:`~modelport.Model.preprocess`."""
    return type(model).preprocess is not Model.preprocess


def custom_postprocess(model: Model) -> bool:
    """Whether the model defines its own per-payload :meth:`~modelport.Model.postprocess`."""
    return type(model).postprocess is not Model.postprocess


# -- outputs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputInfo:
    """One result column: a numpy dtype and per-row shape (the shape without the batch
    dimension); for a column of ``postprocess`` answers, dtype object and a ``sample`` value
    (what the model answered for an example), from which engines type the column."""

    name: str
    dtype: np.dtype[Any]
    row_shape: tuple[int, ...]
    sample: Any = None

    @property
    def answer(self) -> bool:
        """Whether the column holds ``postprocess`` answers rather than output tensors."""
        return self.sample is not None


def describe_outputs(model: Model) -> list[OutputInfo]:
    """Each request output's dtype and row shape: from the served signature (the request
    signature, else the framework's), or by running one example row.

    Engines need these before any data flows (Spark return types, Dask ``meta``).
    """
    sig = model.served_signature
    if sig and sig.outputs and all(_known(s) for s in sig.outputs):
        return [OutputInfo(s.name, s.dtype, tuple(s.shape[1:])) for s in sig.outputs]
    probe = model.predict_batch(model.example_inputs(1))
    return [OutputInfo(n, a.dtype, tuple(a.shape[1:])) for n, a in probe.items()]


def describe_answers(model: Model) -> list[OutputInfo]:
    """The columns of the model's ``postprocess`` answer for one row, found by answering an
    example row (see :func:`answer_row`)."""
    try:
        outputs = model.predict_batch(model.example_inputs(1))
    except Exception as exc:
        raise ConfigError(
            f"model {model.name!r}: its answer's columns are found by answering an example "
            f"row, which failed ({type(exc).__name__}: {exc}); pass contract='tensors' to "
            "write its output tensors instead"
        ) from exc
    failure: Exception | None = None
    for single in (False, True):
        try:
            row = answer_row(model.postprocess(maybe_single(outputs, single)), 1)
        except Exception as exc:
            failure = failure or exc
            continue
        empty = [k for k, v in row.items() if v is None]
        if empty:
            raise ConfigError(
                f"model {model.name!r}: postprocess answered None for {empty} on an example "
                "row, so the columns' types are unknown; pass contract='tensors'"
            )
        return [OutputInfo(k, np.dtype(object), (), v) for k, v in row.items()]
    raise ConfigError(
        f"model {model.name!r}: postprocess failed on an example row "
        f"({type(failure).__name__}: {failure}); pass contract='tensors' to write its output "
        "tensors instead"
    ) from failure


def answer_row(answer: Any, rows: int) -> dict[str, Any]:
    """One table row's columns from ``postprocess``'s answer to that row's payload.

    A list of one item is that item (an answer per request row, for one row); a mapping
    gives one column per key, an array value whose first dimension is the payload's one
    request row becoming that row; anything else is one column, ``prediction``.
    """
    if isinstance(answer, (list, tuple)) and len(answer) == 1:
        answer = answer[0]
    if isinstance(answer, Mapping):
        return {str(k): _one_row(v, rows) for k, v in answer.items()}
    return {"prediction": _one_row(answer, rows)}


def _one_row(value: Any, rows: int) -> Any:
    if rows == 1 and isinstance(value, np.ndarray) and value.ndim and value.shape[0] == 1:
        return value[0]
    return value


def select_outputs(infos: list[OutputInfo], output: str | None, model: Model) -> list[OutputInfo]:
    """``infos``, or only ``output`` (a clear error if the model lacks it)."""
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


def input_names(model: Model) -> list[str]:
    """The inputs a table's columns feed: those of the served (request) signature."""
    sig = model.served_signature
    return sig.input_names if sig else []


def input_columns(model: Model, columns: Columns, available: Sequence[str]) -> dict[str, list[str]]:
    """Resolve ``columns`` into ``{input name: [column, ...]}``, checked against the table."""
    names = input_names(model)
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
    _check_available(mapping, available)
    return mapping


def udf_columns(
    model: Model, contract: Contract, columns: Sequence[str] | None
) -> tuple[Columns, list[str]]:
    """``(mapping, argument names)`` for a UDF over argument columns (Spark's, Flink's): for a
    model that takes payloads, one ``payload`` argument, or the columns ``columns`` names;
    otherwise one argument per input, named after it or by ``columns``."""
    if contract == "payload" and custom_preprocess(model):
        names = list(columns) if columns else ["payload"]
        return (names if columns else names[0]), names
    inputs = input_names(model) or [model.single_input_name(model.served_signature)]
    names = list(columns) if columns else inputs
    if len(names) != len(inputs):
        raise ConfigError(
            f"columns= names {len(names)} argument(s) {names}; model {model.name!r} takes "
            f"one per input {inputs}"
        )
    return dict(zip(inputs, names)), names


def payload_columns(
    columns: Columns, available: Sequence[str]
) -> tuple[dict[str, list[str]], bool]:
    """``({payload key: [column, ...]}, bare)`` for a model that takes payloads: ``None``,
    every column under its own name; a list, those columns; a mapping, key to column(s); one
    name, that column's value alone as the payload (``bare``)."""
    if columns is None:
        mapping = {c: [c] for c in available}
    elif isinstance(columns, str):
        mapping = {columns: [columns]}
    elif isinstance(columns, Mapping):
        mapping = {str(k): [c] if isinstance(c, str) else list(c) for k, c in columns.items()}
    else:
        mapping = {c: [c] for c in columns}
    _check_available(mapping, available)
    return mapping, isinstance(columns, str)


def _check_available(mapping: Mapping[str, Sequence[str]], available: Sequence[str]) -> None:
    absent = [c for cols in mapping.values() for c in cols if c not in available]
    if absent:
        raise InvalidInputError(f"no column(s) {absent} in the table; it has {list(available)}")
    if not mapping or any(not cols for cols in mapping.values()):
        raise InvalidInputError(f"columns= maps an input to no column: {dict(mapping)}")


def gather_inputs(
    model: Model,
    mapping: Mapping[str, Sequence[str]],
    column: Callable[[str], Any],
) -> dict[str, np.ndarray]:
    """Build the named inputs from ``column(name)`` values, conformed to the signature.

    Errors name the table's column(s) as well as the input they feed.
    """
    inputs: dict[str, np.ndarray] = {}
    sig = model.served_signature
    for name, cols in mapping.items():
        label = _label(cols)
        try:
            parts = [column_array(column(c), c) for c in cols]
            array = parts[0] if len(parts) == 1 else np.column_stack(parts)
            array = conform(model, name, array)
            spec = sig.input(name) if sig else None
            if spec is not None:
                spec.check(array)
        except InvalidInputError as exc:
            raise InvalidInputError(_relabel(str(exc), name, label)) from None
        except ValueError as exc:  # numpy refusing to stack the columns
            raise InvalidInputError(f"{label} (input {name!r}): {exc}") from None
        inputs[name] = array
    if sig:
        sig.check_inputs(inputs)
    return inputs


def _label(cols: Sequence[str]) -> str:
    return f"column {cols[0]!r}" if len(cols) == 1 else f"columns {list(cols)}"


def _relabel(message: str, name: str, label: str) -> str:
    own = f"input {name!r}: "
    if message.startswith(own):
        return f"{label} (input {name!r}): {message[len(own) :]}"
    return message


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
    """Cast ``array`` to input ``name``'s datatype (text for BYTES as UTF-8, as
    ``model(payload)`` sends it) and unflatten rows to its shape."""
    sig = model.served_signature
    spec = sig.input(name) if sig else None
    if spec is None:
        return array
    rows = array.shape[0] if array.ndim else 1
    tail = spec.shape[1:]
    if spec.shape and array.ndim != len(spec.shape) and all(d >= 0 for d in tail):
        size = int(np.prod(tail)) if tail else 1
        if array.size == rows * size:
            array = array.reshape((rows, *tail))
    if spec.datatype == "BYTES":
        return as_bytes(array.astype(object, copy=False))
    if array.dtype != spec.dtype:
        if array.dtype.kind in "OSU":
            raise InvalidInputError(f"input {name!r}: expected {spec.datatype} numbers, got text")
        array = array.astype(spec.dtype)
    return array


def _check(model: Model, inputs: Mapping[str, np.ndarray]) -> None:
    sig = model.served_signature
    if sig:
        sig.check_inputs(inputs)


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
            raw = {
                model.single_input_name(model.served_signature): np.stack(
                    [np.asarray(r) for r in rows]
                )
            }
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


# -- bad rows ----------------------------------------------------------------------------------


class Failures:
    """The rows of a batch that failed, each with its exception, in row order.

    With ``fail_fast`` (``on_error="raise"``), the first one is raised at once, its message
    extended with ``where(row)`` (which row, and what it held).
    """

    def __init__(self, fail_fast: bool, where: Callable[[int], str]) -> None:
        self.fail_fast = fail_fast
        self.where = where
        self.errors: dict[int, BaseException] = {}

    def add(self, row: int, exc: BaseException) -> None:
        """Record ``row``'s failure (or raise it, failing fast)."""
        if isinstance(exc, _FATAL):
            raise exc
        if self.fail_fast:
            if isinstance(exc, ModelportError):
                raise type(exc)(f"{exc} ({self.where(row)})") from exc
            raise PredictionError(f"{reason(exc)} ({self.where(row)})") from exc
        self.errors[row] = exc

    def messages(self, rows: int) -> list[str | None]:
        """Each row's reason, or None for a good row."""
        out: list[str | None] = [None] * rows
        for row, exc in self.errors.items():
            out[row] = reason(exc)
        return out


def reason(exc: BaseException) -> str:
    """A row's failure as one line: the error's type and message."""
    return f"{type(exc).__name__}: {exc}"


def isolate(
    run: Callable[[np.ndarray], T], positions: np.ndarray, failed: Callable[[int, Exception], None]
) -> list[tuple[np.ndarray, T]]:
    """``run`` on every position, split in halves (recursively) while it fails, so that each
    good position succeeds in exactly one call; each bad one is passed to ``failed``."""
    try:
        return [(positions, run(positions))]
    except _FATAL:
        raise
    except Exception as exc:
        if len(positions) == 1:
            failed(int(positions[0]), exc)
            return []
        half = len(positions) // 2
        return isolate(run, positions[:half], failed) + isolate(run, positions[half:], failed)


def short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(plain(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def plain(value: Any) -> Any:
    """A cell as plain Python (lists, numbers, text, bytes), as a JSON payload holds it."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


@dataclass(frozen=True)
class TableTypes:
    """One engine's column types, to type the values of a model's ``postprocess`` answers."""

    engine: str
    boolean: Callable[[], Any]
    integer: Callable[[], Any]
    double: Callable[[], Any]
    string: Callable[[], Any]
    binary: Callable[[], Any]
    array: Callable[[Any], Any]
    text_map: Callable[[Any], Any]
    """A map from text to the values' type (a dict answer)."""
    tensor: Callable[[OutputInfo], Any]
    """The type of an array value (as the engine types a model output)."""


def answer_type(value: Any, name: str, types: TableTypes) -> Any:
    """The engine's type for one value of an answer (an example row's): numbers, text, bytes,
    arrays, lists and dicts (maps), nested."""
    if isinstance(value, (bool, np.bool_)):
        return types.boolean()
    if isinstance(value, (int, np.integer)):
        return types.integer()
    if isinstance(value, (float, np.floating)):
        return types.double()
    if isinstance(value, str):
        return types.string()
    if isinstance(value, (bytes, bytearray)):
        return types.binary()
    if isinstance(value, np.ndarray):
        return types.tensor(OutputInfo(name, value.dtype, value.shape))
    if isinstance(value, (list, tuple)) and value:
        return types.array(answer_type(value[0], name, types))
    if isinstance(value, Mapping) and value:
        return types.text_map(answer_type(next(iter(value.values())), name, types))
    raise ConfigError(
        f"answer {name!r}: {types.engine} cannot type {type(value).__name__} value {value!r} "
        "(from the model's postprocess on an example row); pass contract='tensors'"
    )


def answer_cell(value: Any) -> Any:
    """An answer's value as plain Python, as the engines' Arrow conversions take it."""
    if isinstance(value, Mapping):
        return {str(k): answer_cell(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


# -- the contract on a batch of payloads --------------------------------------------------------


@dataclass
class Prepared:
    """One payload after ``preprocess``: its request tensors and row count."""

    inputs: dict[str, np.ndarray]
    single: bool
    rows: int


def prepare(model: Model, payload: Any) -> Prepared:
    """``model.preprocess(payload)`` as request tensors (as ``model(payload)`` makes them)."""
    inputs, single = model.request_inputs(model.preprocess(payload))
    rows = _rows(inputs)
    if not rows:
        raise InvalidInputError("preprocess made no request rows of this payload")
    return Prepared(inputs, single, rows)


def predict_prepared(
    model: Model, items: Mapping[int, Prepared], size: int, failures: Failures
) -> dict[int, Outputs]:
    """Each prepared payload's request outputs, predicted together in batches of about
    ``size`` rows (payloads whose tensors differ in trailing shape apart); a failing batch is
    split until each bad payload is found and recorded in ``failures``."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for position, item in items.items():
        key = tuple(
            (n, a.dtype.kind if a.dtype.kind in "OSU" else a.dtype.str, a.shape[1:])
            for n, a in sorted(item.inputs.items())
        )
        groups.setdefault(key, []).append(position)
    results: dict[int, Outputs] = {}
    for members in groups.values():
        chunk: list[int] = []
        rows = 0
        for position in [*members, -1]:
            if position >= 0 and (not chunk or rows + items[position].rows <= size):
                chunk.append(position)
                rows += items[position].rows
                continue
            if chunk:
                _run_group(model, items, np.array(chunk), results, failures)
            chunk, rows = ([position], items[position].rows) if position >= 0 else ([], 0)
    return results


def _run_group(
    model: Model,
    items: Mapping[int, Prepared],
    positions: np.ndarray,
    results: dict[int, Outputs],
    failures: Failures,
) -> None:
    def run(chosen: np.ndarray) -> list[Outputs]:
        parts = [items[int(p)] for p in chosen]
        inputs = {n: np.concatenate([p.inputs[n] for p in parts]) for n in parts[0].inputs}
        outputs = _predict(model, inputs, sum(p.rows for p in parts))
        bounds = np.cumsum([0, *(p.rows for p in parts)])
        return [
            {n: a[bounds[i] : bounds[i + 1]] for n, a in outputs.items()} for i in range(len(parts))
        ]

    for chosen, outs in isolate(run, positions, failures.add):
        results.update({int(p): o for p, o in zip(chosen, outs)})


def predict_isolated(
    model: Model,
    build: Callable[[np.ndarray], Mapping[str, np.ndarray]],
    rows: int,
    size: int,
    failures: Failures,
) -> list[tuple[np.ndarray, Outputs]]:
    """``predict_batch(build(rows))`` in slices of ``size`` rows; a failing slice (in
    ``build`` or in the model) is split until each bad row is found and recorded."""

    def run(chosen: np.ndarray) -> Outputs:
        inputs = build(chosen)
        return _predict(model, inputs, len(chosen))

    pieces: list[tuple[np.ndarray, Outputs]] = []
    for start in range(0, rows, max(1, size)):
        positions = np.arange(start, min(rows, start + max(1, size)))
        pieces += isolate(run, positions, failures.add)
    return pieces


# -- the contract on a table's rows -------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How a table's rows go through a model and come out as columns: decided once on the
    driver (:func:`make_plan`), shipped to the workers with the :class:`ModelSpec`."""

    spec: ModelSpec
    sources: tuple[tuple[str, tuple[str, ...]], ...]
    """Model input (or payload key) → the column(s) that make it, in argument order."""
    payloads: bool
    """Each row is a payload for the model's ``preprocess`` (else columns are tensors)."""
    bare: bool
    """A payload is its row's one column value, not ``{column: value}``."""
    answers: bool
    """The model's ``postprocess`` answers each row; its answer's keys are the columns."""
    outputs: tuple[OutputInfo, ...]
    on_error: OnError
    batch_size: int

    @property
    def columns(self) -> list[str]:
        """The table columns the model reads, in order, each once."""
        return list(dict.fromkeys(c for _, cols in self.sources for c in cols))

    def result_names(self, prefix: str = "") -> list[str]:
        """The columns this plan adds: one per output, then ``error`` with
        ``on_error="column"``; each with ``prefix``."""
        names = [prefix + o.name for o in self.outputs]
        if self.on_error == "column":
            names.append(prefix + ERROR_COLUMN)
        return names


def make_plan(
    spec: ModelSpec,
    model: Model,
    columns: Columns,
    available: Sequence[str],
    *,
    contract: Contract = "payload",
    on_error: OnError = "raise",
    batch_size: int | None = None,
    output: str | None = None,
) -> Plan:
    """The plan for ``model`` on a table with columns ``available``."""
    check_options(contract, on_error)
    payloads = contract == "payload" and custom_preprocess(model)
    answers = contract == "payload" and custom_postprocess(model)
    if payloads:
        mapping, bare = payload_columns(columns, available)
    else:
        mapping, bare = input_columns(model, columns, available), False
    infos = describe_answers(model) if answers else describe_outputs(model)
    infos = select_outputs(infos, output, model)
    return Plan(
        spec=spec,
        sources=tuple((k, tuple(v)) for k, v in mapping.items()),
        payloads=payloads,
        bare=bare,
        answers=answers,
        outputs=tuple(infos),
        on_error=on_error,
        batch_size=batch_size or spec.batch_size(),
    )


@dataclass
class Predicted:
    """A batch's results: one array of ``rows`` values per output column (a bad row's values
    are zeros or None), and each row's reason or None (:attr:`errors`)."""

    values: dict[str, np.ndarray]
    errors: list[str | None]

    @property
    def bad(self) -> np.ndarray:
        """A mask of the rows that failed."""
        return np.array([e is not None for e in self.errors], dtype=bool)


def run_plan(model: Model, plan: Plan, column: Callable[[str], Any], rows: int) -> Predicted:
    """The model on ``rows`` table rows (``column(name)`` gives a column's values): each good
    row's outputs, and each bad row's reason (raised at once with ``on_error="raise"``)."""
    raw = {c: np.asarray(column(c)) for c in plan.columns}

    def where(row: int) -> str:
        cells = {c: short(raw[c][row], 40) for c in plan.columns}
        return f"row {row} of a batch of {rows}: {', '.join(f'{k}={v}' for k, v in cells.items())}"

    failures = Failures(plan.on_error == "raise", where)
    values = _Values(plan.outputs, rows)
    per_row: dict[int, Outputs] = {}
    singles: dict[int, bool] = {}
    if plan.payloads:
        items: dict[int, Prepared] = {}
        for row in range(rows):
            try:
                items[row] = prepare(model, _payload(plan, raw, row))
            except Exception as exc:
                failures.add(row, exc)
        singles = {row: item.single for row, item in items.items()}
        per_row = predict_prepared(model, items, plan.batch_size, failures)
        if not plan.answers:
            for row, outs in sorted(per_row.items()):
                if items[row].rows != 1:
                    failures.add(row, _many_rows(items[row].rows))
                    continue
                values.put(np.array([row]), outs)
    else:
        mapping = {name: cols for name, cols in plan.sources}
        pieces = predict_isolated(
            model,
            lambda chosen: gather_inputs(model, mapping, lambda c: raw[c][chosen]),
            rows,
            plan.batch_size,
            failures,
        )
        for chosen, outs in pieces:
            if plan.answers:
                per_row.update(
                    {
                        int(r): {n: a[i : i + 1] for n, a in outs.items()}
                        for i, r in enumerate(chosen)
                    }
                )
            else:
                values.put(chosen, outs)
    if plan.answers:
        for row, outs in sorted(per_row.items()):
            try:
                answer = model.postprocess(maybe_single(outs, singles.get(row, False)))
                cells = answer_row(answer, _rows(outs))
                extra = [k for k in cells if k not in values.arrays]
                if extra:
                    raise PredictionError(
                        f"postprocess answered key(s) {extra} that the example row's answer "
                        f"did not have ({[o.name for o in plan.outputs]})"
                    )
            except Exception as exc:
                failures.add(row, exc)
                continue
            for name, cell in cells.items():
                cells_of = values.arrays[name]
                assert cells_of is not None
                cells_of[row] = cell
    return Predicted(values.done(), failures.messages(rows))


def arrow_array(array: np.ndarray, info: OutputInfo, bad: np.ndarray) -> Any:
    """A column as a pyarrow array, null in the ``bad`` rows: tensors as (nested) lists of
    their dtype, answers typed from the example answer (dicts as structs)."""
    import pyarrow as pa

    mask = pa.array(bad, pa.bool_())
    if info.answer:
        kind = pa.array([plain(info.sample)]).type
        return pa.array([None if b else plain(v) for v, b in zip(array, bad)], kind)
    if array.dtype.kind in "OSU":  # text or bytes: Arrow infers their type
        return pa.array([None if b else plain(v) for v, b in zip(array, bad)])
    shape = array.shape[1:]
    if not shape:
        return pa.array(array, mask=bad)
    values = pa.array(array.reshape(-1))
    for level in range(len(shape) - 1, -1, -1):  # the innermost dimension first
        count = len(array) * int(np.prod(shape[:level]))
        offsets = pa.array(np.arange(count + 1, dtype=np.int32) * shape[level])
        values = pa.ListArray.from_arrays(offsets, values, mask=mask if level == 0 else None)
    return values


def _payload(plan: Plan, raw: Mapping[str, np.ndarray], row: int) -> Any:
    if plan.bare:
        return plain(raw[plan.sources[0][1][0]][row])
    return {
        key: plain(raw[cols[0]][row]) if len(cols) == 1 else [plain(raw[c][row]) for c in cols]
        for key, cols in plan.sources
    }


def _many_rows(rows: int) -> InvalidInputError:
    return InvalidInputError(
        f"preprocess made {rows} request rows of one table row; without a postprocess that "
        "answers them as one, a table row must make one request row"
    )


class _Values:
    """The result columns of a batch, filled piece by piece: answer columns hold objects;
    tensor columns take their dtype and row shape from the first rows the model returns."""

    def __init__(self, outputs: Sequence[OutputInfo], rows: int) -> None:
        self.outputs = outputs
        self.rows = rows
        self.arrays: dict[str, np.ndarray | None] = {
            o.name: np.empty(rows, dtype=object) if o.answer else None for o in outputs
        }

    def put(self, chosen: np.ndarray, outs: Mapping[str, np.ndarray]) -> None:
        """Rows ``chosen`` of every tensor column, from ``outs`` (one row each)."""
        for info in self.outputs:
            if info.name not in outs:
                raise PredictionError(f"the model returned {sorted(outs)}, not {info.name!r}")
            got = outs[info.name]
            target = self.arrays[info.name]
            if target is None:
                target = np.zeros((self.rows, *got.shape[1:]), dtype=got.dtype)
            elif target.shape[1:] != got.shape[1:]:
                raise PredictionError(
                    f"output {info.name!r} has rows of shape {list(got.shape[1:])} here and "
                    f"{list(target.shape[1:])} for other rows of the batch"
                )
            elif got.dtype != target.dtype:
                target = target.astype(np.result_type(target.dtype, got.dtype))
            target[chosen] = got
            self.arrays[info.name] = target

    def done(self) -> dict[str, np.ndarray]:
        """The columns; one no row filled has the declared dtype and shape."""
        return {
            o.name: a if a is not None else np.zeros((self.rows, *o.row_shape), dtype=o.dtype)
            for o, a in zip(self.outputs, self.arrays.values())
        }
