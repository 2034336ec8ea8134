"""Predict on a whole file: columns to model inputs, chunk by chunk, outputs to a file."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import InvalidInputError, ModelportError, PredictionError
from ..model import Model
from ..signature import TensorSpec
from .readers import Columns, open_reader
from .writers import open_writer

__all__ = ["columns_to_inputs", "predict_file"]


def predict_file(
    model: Model,
    source: Path,
    destination: Path,
    *,
    batch_size: int = 1024,
    keep: Sequence[str] = (),
    on_rows: Callable[[int], None] | None = None,
    on_start: Callable[[int | None], None] | None = None,
) -> int:
    """Run ``model`` over every row of ``source``; write its outputs to ``destination``.

    Formats follow the extensions (see ``READERS`` and ``WRITERS``). At most ``batch_size``
    rows are in memory at once. Input columns named in ``keep`` (e.g. an id) are copied to
    the output ahead of the model's outputs. ``on_start`` receives the row count when the
    format knows it (else None), ``on_rows`` the size of each finished chunk. Returns the
    number of rows.
    """
    if source.resolve() == destination.resolve():
        raise InvalidInputError(f"{destination}: the output would overwrite the input")
    reader = open_reader(source, batch_size)
    with open_writer(destination) as writer:
        if on_start is not None:
            on_start(reader.num_rows)
        done = 0
        sig = model.served_signature
        names = set(sig.input_names) if sig else set()
        passed = [k for k in keep if k not in names]  # an id is not a feature
        for chunk in reader:
            kept = _kept(chunk, keep, source)
            features = {k: v for k, v in chunk.items() if k not in passed} if passed else chunk
            inputs = columns_to_inputs(model, features, source)
            rows = _rows(chunk)
            outputs = _predict(model, inputs, source, done, rows)
            if kept:
                clash = [k for k in kept if k in outputs]
                if clash:
                    raise InvalidInputError(
                        f"cannot keep column(s) {clash}: the model has outputs so named"
                    )
                outputs = {**kept, **outputs}
            writer.write(outputs)
            done += rows
            if on_rows is not None:
                on_rows(rows)
    return done


def _rows(chunk: Columns) -> int:
    return len(next(iter(chunk.values()))) if chunk else 0


def _kept(chunk: Columns, keep: Sequence[str], source: Path) -> Columns:
    missing = [k for k in keep if k not in chunk]
    if missing:
        raise InvalidInputError(
            f"{source}: no column(s) {missing} to keep; columns found: {', '.join(chunk)}"
        )
    return {k: chunk[k] for k in keep}


def _predict(
    model: Model, inputs: dict[str, np.ndarray], source: Path, start: int, rows: int
) -> dict[str, np.ndarray]:
    try:
        outputs = model.predict_batch(inputs)
    except ModelportError:
        raise
    except Exception as exc:
        raise PredictionError(
            f"{source}: rows {start + 1}-{start + rows}: model {model.name!r} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    for name, values in outputs.items():
        if values.ndim == 0 or values.shape[0] != rows:
            raise PredictionError(
                f"model {model.name!r}: output {name!r} has shape {list(values.shape)} for "
                f"{rows} input rows; batch outputs need one entry per row"
            )
    return outputs


def columns_to_inputs(model: Model, columns: Columns, source: Path) -> dict[str, np.ndarray]:
    """Map a file's columns onto the model's inputs.

    A multi-input model takes the columns named like its inputs. A single-input model takes
    the column named like its input, else the file's only column, else its numeric columns
    stacked into one ``[rows, k]`` matrix (in the order of the model's ``feature_names`` when
    it has them, otherwise in file order).
    """
    sig = model.served_signature
    specs = sig.inputs if sig else ()
    if len(specs) > 1:
        return {s.name: _cast(s, _column(columns, s.name, source), source, s.name) for s in specs}
    spec = specs[0] if specs else None
    name = spec.name if spec else model.single_input_name(sig)
    label: str | None
    if name in columns:
        label, values = name, columns[name]
    elif len(columns) == 1:
        label, values = next(iter(columns.items()))
    else:
        label, values = None, _stack(model, columns, spec, source)
    return {name: _cast(spec, values, source, label) if spec else values}


def _column(columns: Columns, name: str, source: Path) -> np.ndarray:
    if name not in columns:
        raise InvalidInputError(
            f"{source}: missing column {name!r} for the model input of that name; "
            f"columns found: {', '.join(columns) or '(none)'}"
        )
    return columns[name]


def _stack(model: Model, columns: Columns, spec: TensorSpec | None, source: Path) -> np.ndarray:
    names: Sequence[str] = list(columns)
    features = getattr(model, "feature_names", None)
    if features:
        missing = [f for f in features if f not in columns]
        if not missing:
            names = features
        elif len(missing) < len(features):  # the file uses the model's names, but not all
            raise InvalidInputError(
                f"{source}: missing column(s) {missing} that the model was trained on; "
                f"columns found: {', '.join(columns)}"
            )
    want = spec.shape[1] if spec and len(spec.shape) == 2 and spec.shape[1] > 0 else None
    if want is not None and want != len(names):
        raise InvalidInputError(
            f"{source}: the model input {spec.name if spec else ''!r} takes {want} features "
            f"per row; the file has {len(names)} columns: {', '.join(names)} "
            "(pass columns that are not features, such as an id, through with --keep)"
        )
    for name in names:
        values = columns[name]
        if values.ndim != 1 or values.dtype.kind not in "biuf":
            raise InvalidInputError(_not_numeric(source, name, values, spec))
    return np.column_stack([columns[n] for n in names])


def _cast(spec: TensorSpec, values: np.ndarray, source: Path, label: str | None) -> np.ndarray:
    if spec.shape and values.ndim != len(spec.shape):
        if values.ndim == 1 and len(spec.shape) == 2 and spec.shape[1] in (1, -1):
            values = values.reshape(-1, 1)
        else:
            raise InvalidInputError(
                f"{source}: {_where(label)} has shape {list(values.shape[1:])} per row; the "
                f"model input {spec.name!r} takes {list(spec.shape[1:])}"
            )
    if spec.datatype == "BYTES" or values.dtype == spec.dtype:
        return values
    if values.dtype.kind not in "biuf":
        raise InvalidInputError(_not_numeric(source, label, values, spec))
    return values.astype(spec.dtype)


def _where(column: str | None) -> str:
    return f"column {column!r}" if column else "the input"


def _not_numeric(
    source: Path, column: str | None, values: np.ndarray, spec: TensorSpec | None
) -> str:
    sample = next((v for v in values.reshape(-1)[:100] if isinstance(v, (str, bytes))), None)
    found = f"text such as {sample!r}" if sample is not None else f"{values.dtype} values"
    wants = f"{spec.datatype} numbers for input {spec.name!r}" if spec else "numbers"
    return f"{source}: {_where(column)} is not numeric ({found}); the model takes {wants}"
