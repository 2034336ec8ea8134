"""Export PyTorch, Keras/TensorFlow and scikit-learn models to ONNX, then prove the result agrees.

:func:`to_onnx` converts with the framework's own exporter (``torch.onnx``, Keras'
``export(format="onnx")``, ``tf2onnx`` for SavedModels, ``skl2onnx``), runs the ONNX file
with onnxruntime on sample inputs, compares every output with the original model's, and
reports the largest absolute difference. Where a difference exceeds the tolerance
(``tolerance + rtol * |original|``) it raises :class:`~modelport.errors.ExportError` and
removes the file, so a failed export never leaves a model that looks usable.

A Hugging Face directory exports its network (``torch.export``, dynamic batch and sequence
axes) to ``model.onnx`` beside the weights, checked on real texts tokenised in batches of
several lengths (see :meth:`~modelport.frameworks.huggingface.HuggingFaceModel.export_samples`).
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._deps import require
from ..errors import ExportError, ModelportError
from ..model import Inputs, Model, as_input_dict
from ..parity import max_difference

__all__ = ["DEFAULT_RTOL", "DEFAULT_SAMPLES", "ExportReport", "default_output", "to_onnx"]

DEFAULT_SAMPLES = 8
"""Rows generated from the signature when no sample inputs are given."""
DEFAULT_RTOL: dict[str, float] = {"huggingface": 1e-3}
"""The relative tolerance by framework when none is given (else 0): float32 transformer
outputs after a dozen layers differ by about 1e-6 of their magnitude, and some are large."""


@dataclass(frozen=True)
class ExportReport:
    """What an export produced and how closely the ONNX model matches the original."""

    source: str
    path: Path
    framework: str
    opset: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    rows: int
    """Sample rows compared (the samples, and their first row alone as batch 1)."""
    max_abs_diff: float
    tolerance: float
    diffs: Mapping[str, float] = field(default_factory=dict)
    """Largest absolute difference per output (labels: 0 if all equal, else inf)."""
    rtol: float = 0.0
    """Relative tolerance: a difference may be ``tolerance + rtol * |original|``."""
    shapes: tuple[tuple[int, ...], ...] = ()
    """The shape of each sample batch compared (its first input's)."""

    def __str__(self) -> str:
        per_output = ", ".join(f"{n}={d:.3g}" for n, d in self.diffs.items())
        shapes = ", ".join("x".join(map(str, s)) for s in self.shapes)
        batches = f" in {len(self.shapes)} batches ({shapes})" if len(self.shapes) > 2 else ""
        return (
            f"exported {self.source} ({self.framework}) to {self.path} (ONNX opset {self.opset})\n"
            f"inputs: {', '.join(self.inputs)}; outputs: {', '.join(self.outputs)}\n"
            f"parity on {self.rows} row{'s' if self.rows != 1 else ''}{batches}: "
            f"max abs diff {self.max_abs_diff:.3g} "
            f"(tolerance {_tolerance(self.tolerance, self.rtol)}; {per_output})"
        )


def _tolerance(atol: float, rtol: float) -> str:
    return f"{atol:g}" if not rtol else f"{atol:g} + {rtol:g} x |original|"


def default_output(model_or_path: Model | str | Path) -> Path | None:
    """Where an export goes when no path is given: ``model.onnx`` inside a Hugging Face
    directory (which then serves on ONNX Runtime); None for other models."""
    from ..frameworks.detect import is_huggingface_dir

    if isinstance(model_or_path, Model):
        directory = getattr(model_or_path, "model_dir", None)
        return Path(directory) / "model.onnx" if isinstance(directory, Path) else None
    path = Path(model_or_path)
    return path / "model.onnx" if is_huggingface_dir(path) else None


def to_onnx(
    model_or_path: Model | str | Path,
    out_path: str | Path | None = None,
    *,
    sample_inputs: Inputs | None = None,
    opset: int | None = None,
    tolerance: float = 1e-4,
    rtol: float | None = None,
    trust: bool | None = None,
) -> ExportReport:
    """Export a PyTorch, Keras, scikit-learn or Hugging Face model to ``out_path`` and check
    parity.

    ``model_or_path`` is a loaded model or anything :func:`modelport.load` accepts (``trust``
    is passed on). ``out_path`` may be left out for a Hugging Face directory (its
    ``model.onnx``). ``sample_inputs`` (named arrays, or one array) feed both models; without
    them a Hugging Face model tokenises real texts of several lengths, and others get
    :data:`DEFAULT_SAMPLES` rows generated from the signature. ``opset`` defaults to each
    exporter's own choice. An output passes where every difference is at most ``tolerance +
    rtol * |original|`` (``rtol`` from :data:`DEFAULT_RTOL` when not given).
    """
    if tolerance < 0 or (rtol is not None and rtol < 0):
        raise ExportError(f"tolerance must be >= 0, got {tolerance if tolerance < 0 else rtol}")
    model = _as_model(model_or_path, trust)
    source = str(model_or_path) if not isinstance(model_or_path, Model) else model.name
    convert = _converter(model)
    batches = _samples(model, sample_inputs)
    samples = batches[0]
    if out_path is None:
        out_path = default_output(model)
        if out_path is None:
            raise ExportError(f"model {model.name!r}: say where to write the .onnx file")
    relative = DEFAULT_RTOL.get(model.framework, 0.0) if rtol is None else rtol
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Exporters print and warn about their own internals (graphs, deprecations): not
        # actionable here; the parity check below is what tells whether the file is good.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            convert(model, samples, out, opset)
    except ModelportError:
        raise
    except Exception as exc:
        _remove(out)
        raise ExportError(
            f"{source}: export to ONNX failed: {type(exc).__name__}: {_first_line(exc)}"
        ) from exc
    try:
        return _verify(model, source, out, batches, tolerance, relative)
    except ExportError:
        _remove(out)
        raise


def _as_model(model_or_path: Model | str | Path, trust: bool | None) -> Model:
    if isinstance(model_or_path, Model):
        return model_or_path.ensure_loaded()
    if not isinstance(model_or_path, (str, Path)):
        raise ExportError(
            f"expected a modelport Model or a path, got {type(model_or_path).__name__}"
        )
    from ..loader import resolve

    model = resolve(Path(model_or_path), trust=trust)
    if model.framework == "huggingface":
        model.options["backend"] = "pytorch"  # the network to export, even beside a model.onnx
        model.backend = "pytorch"  # type: ignore[attr-defined]
    return model.ensure_loaded()


def _converter(model: Model) -> Any:
    from . import _converters

    table = {
        "pytorch": _converters.torch_to_onnx,
        "huggingface": _converters.huggingface_to_onnx,
        "keras": _converters.keras_to_onnx,
        "tensorflow": _converters.saved_model_to_onnx,
        "sklearn": _converters.sklearn_to_onnx,
    }
    if model.framework in table:
        return table[model.framework]
    if model.framework == "onnx":
        raise ExportError(f"model {model.name!r} is already an ONNX model")
    raise ExportError(
        f"model {model.name!r} ({model.framework}) cannot be exported to ONNX; modelport "
        f"exports {', '.join(sorted(table))} models"
    )


def _samples(model: Model, given: Inputs | None) -> list[dict[str, np.ndarray]]:
    """The sample batches: the first is what the exporter traces; all are compared."""
    made = getattr(model, "export_samples", None)
    if given is not None:
        feed, _ = as_input_dict(model, given)
        samples = model.to_inputs(feed, model.signature)
    elif callable(made):
        return list(made())
    elif model.signature is None or not model.signature.inputs:
        raise ExportError(
            f"model {model.name!r} declares no input signature to generate samples from; "
            "pass sample inputs (--samples FILE.npz on the command line) or declare a "
            "signature in modelport.yaml"
        )
    else:
        samples = model.example_inputs(DEFAULT_SAMPLES, model.signature)
    rows = {a.shape[0] if a.ndim else 0 for a in samples.values()}
    if 0 in rows or len(rows) != 1:
        raise ExportError(
            "sample inputs must share a batch (first) dimension of at least 1 row, got shapes "
            f"{ {n: list(a.shape) for n, a in samples.items()} }"
        )
    batches = [samples]
    if next(iter(samples.values())).shape[0] > 1:
        batches.append({n: a[:1] for n, a in samples.items()})  # batch 1 proves a free batch dim
    return batches


def _verify(
    model: Model,
    source: str,
    out: Path,
    batches: list[dict[str, np.ndarray]],
    tolerance: float,
    rtol: float = 0.0,
) -> ExportReport:
    ort = require("onnxruntime", extra="onnx")
    onnx = require("onnx", extra="export")
    try:
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(
            f"{source}: the exported file {out} does not load in onnxruntime: {_first_line(exc)}"
        ) from exc
    onnx_inputs = session.get_inputs()
    types = {i.name: i.type for i in onnx_inputs}
    names = _input_mapping(list(types), list(batches[0]))
    diffs: dict[str, float] = {}
    excess: dict[str, float] = {}
    rows = 0
    for batch in batches:
        feed = {names[n]: _as_onnx_type(batch[n], types[names[n]]) for n in names}
        # Both models see the very same values (e.g. float64 samples rounded to float32).
        same = {n: feed[names[n]].astype(batch[n].dtype, copy=False) for n in names}
        expected = model.predict_tensors(same)
        try:
            got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
        except Exception as exc:
            raise ExportError(
                f"{source}: the ONNX model fails on sample inputs of shapes "
                f"{ {n: list(a.shape) for n, a in feed.items()} }: {_first_line(exc)}"
            ) from exc
        for name, value in _pair_outputs(expected, got).items():
            diffs[name] = max(diffs.get(name, 0.0), max_difference(*value))
            excess[name] = max(excess.get(name, 0.0), max_difference(*value, rtol=rtol))
        rows += next(iter(batch.values())).shape[0]
    worst = max(diffs.values(), default=0.0)
    if not max(excess.values(), default=0.0) <= tolerance:
        detail = ", ".join(f"{n}={d:.3g}" for n, d in diffs.items())
        raise ExportError(
            f"{source}: the ONNX model's outputs differ from the original's: max abs diff "
            f"{worst:.3g} exceeds the tolerance {_tolerance(tolerance, rtol)} ({detail}); "
            f"{out} was not kept"
        )
    opset = next(
        (o.version for o in onnx.load(str(out)).opset_import if o.domain in ("", "ai.onnx")), 0
    )
    return ExportReport(
        source=source,
        path=out,
        framework=model.framework,
        opset=int(opset),
        inputs=tuple(i.name for i in onnx_inputs),
        outputs=tuple(o.name for o in session.get_outputs()),
        rows=rows,
        max_abs_diff=worst,
        tolerance=tolerance,
        diffs=diffs,
        rtol=rtol,
        shapes=tuple(tuple(next(iter(b.values())).shape) for b in batches),
    )


def _input_mapping(onnx_names: list[str], sample_names: list[str]) -> dict[str, str]:
    """Sample name -> ONNX input name: by name, else by position."""
    if set(onnx_names) == set(sample_names):
        return {n: n for n in onnx_names}
    if len(onnx_names) == len(sample_names):
        return dict(zip(sample_names, onnx_names))
    raise ExportError(
        f"the ONNX model takes inputs {onnx_names}, the samples provide {sample_names}"
    )


def _pair_outputs(
    expected: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Original output name -> (original, ONNX): by name, else by position."""
    if all(n in got for n in expected):
        return {n: (expected[n], got[n]) for n in expected}
    if len(expected) == len(got):
        return {n: (expected[n], g) for n, g in zip(expected, got.values())}
    raise ExportError(
        f"the ONNX model returns outputs {list(got)}, the original returns {list(expected)}"
    )


_ONNX_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def _as_onnx_type(array: np.ndarray, onnx_type: str) -> np.ndarray:
    dtype = _ONNX_NUMPY.get(onnx_type)
    return array if dtype is None else np.ascontiguousarray(array, dtype=dtype)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    return lines[0][:400] if lines else type(exc).__name__


def _remove(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + ".data")):
        leftover.unlink(missing_ok=True)
