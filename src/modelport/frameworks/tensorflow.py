"""TensorFlow runtimes: SavedModel directories (a serving signature) and Keras files.

Both read their signature from the artifact: a SavedModel from its serving signature
(``serving_default`` unless the ``signature_key`` option names another), a Keras model from
its ``inputs`` and ``output_names``. Outputs come back as numpy arrays; string tensors as
object arrays of ``bytes``.

Options: ``signature_key`` (SavedModel); ``intra_op_threads`` and ``inter_op_threads``
(TensorFlow's process-wide thread pools, honoured only before TensorFlow first runs).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._deps import require
from ..config import ModelConfig
from ..cpus import default_threads
from ..datatypes import from_numpy
from ..devices import tensorflow_device
from ..errors import (
    ConfigError,
    CorruptArtifactError,
    InvalidInputError,
    PredictionError,
    UntrustedArtifactError,
)
from ..model import Inputs, Model, as_input_dict, maybe_single, output_names_of
from ..signature import Signature, TensorSpec

__all__ = ["KerasModel", "SavedModelModel"]


def _tf() -> Any:
    # TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) is noise for a server's logs.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return require("tensorflow", extra="tensorflow")


def _threads(options: Mapping[str, Any]) -> None:
    tf = _tf()
    for key, setter in (
        ("intra_op_threads", tf.config.threading.set_intra_op_parallelism_threads),
        ("inter_op_threads", tf.config.threading.set_inter_op_parallelism_threads),
    ):
        explicit = bool(options.get(key))
        try:
            # Unset, the CPU budget rather than TensorFlow's thread per core.
            setter(int(options[key]) if explicit else default_threads())
        except RuntimeError as exc:  # TensorFlow already initialised its pools
            if explicit:
                raise ConfigError(
                    f"{key}: TensorFlow's thread pools are already running; set it on the "
                    f"first model loaded in this process ({exc})"
                ) from None


def _datatype(dtype: Any) -> str:
    tf = _tf()
    dtype = tf.as_dtype(dtype)
    if dtype == tf.string:
        return "BYTES"
    if dtype == tf.bfloat16:
        return "BF16"
    return from_numpy(np.dtype(dtype.as_numpy_dtype))


def _shape(shape: Any) -> tuple[int, ...]:
    dims = shape.as_list() if hasattr(shape, "as_list") else shape
    if dims is None:  # unknown rank
        return ()
    return tuple(-1 if d is None else int(d) for d in dims)


def _corrupt(path: Path | None, what: str, exc: BaseException) -> CorruptArtifactError:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    detail = lines[0][:300] if lines else ""
    return CorruptArtifactError(
        f"{path}: not a readable {what} (truncated or corrupt?): {type(exc).__name__}: {detail}"
    )


class _TensorFlowModel(Model):
    device: str = "/CPU:0"

    @property
    def on_gpu(self) -> bool:
        return "GPU" in self.device.upper()

    def _feed(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        """Named inputs checked against the signature's names, cast to its datatypes."""
        assert self.signature is not None
        names = self.signature.input_names
        missing = [n for n in names if n not in feed]
        unexpected = [n for n in feed if n not in names]
        if missing or unexpected:
            wrong = [f"missing {missing}"] if missing else []
            wrong += [f"unexpected {unexpected}"] if unexpected else []
            raise InvalidInputError(
                f"model {self.name!r} expects inputs {names}; {' and '.join(wrong)}"
            )
        out: dict[str, Any] = {}
        for spec in self.signature.inputs:
            array = np.asarray(feed[spec.name])
            if spec.datatype == "BYTES":
                if array.dtype.kind not in "OSU":
                    raise InvalidInputError(f"input {spec.name!r}: expected BYTES (text)")
            elif array.dtype.kind in "OSU":
                raise InvalidInputError(
                    f"input {spec.name!r}: expected {spec.datatype} numbers, got text"
                )
            elif array.dtype != spec.dtype and spec.datatype != "BF16":
                array = array.astype(spec.dtype)
            out[spec.name] = array
        return out

    def _explain(self, feed: Mapping[str, np.ndarray], exc: Exception) -> Exception:
        assert self.signature is not None
        try:
            self.signature.check_inputs(
                {
                    n: np.broadcast_to(np.zeros((), self.signature.inputs[i].dtype), a.shape)
                    for i, (n, a) in enumerate(feed.items())
                }
            )
        except InvalidInputError as bad:
            return bad
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        shapes = {n: list(a.shape) for n, a in feed.items()}
        return PredictionError(
            f"model {self.name!r} failed on inputs with shapes {shapes}: "
            f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"
        )


class SavedModelModel(_TensorFlowModel):
    """A TensorFlow SavedModel directory, called through its serving signature."""

    framework: ClassVar[str] = "tensorflow"
    format_description: ClassVar[str] = "a TensorFlow SavedModel directory"

    def __init__(
        self, path: str | Path | None = None, *, config: ModelConfig | None = None, **options: Any
    ) -> None:
        super().__init__(path, config=config, **options)
        self.function: Any = None
        self.device = "/CPU:0"
        self._loaded: Any = None  # keeps the variables the signature function captures alive

    def load(self) -> None:
        tf = _tf()
        _threads(self.options)
        self.device = tensorflow_device(self.options, tf, self.name)
        try:
            with tf.device(self.device):
                self._loaded = tf.saved_model.load(str(self.path))
        except Exception as exc:
            raise _corrupt(self.path, "TensorFlow SavedModel", exc) from exc
        key = str(self.options.get("signature_key", "serving_default"))
        signatures = self._loaded.signatures
        if key not in signatures:
            raise ConfigError(
                f"{self.path}: no serving signature {key!r} (has {sorted(signatures)}); "
                "name one with the signature_key option"
            )
        self.function = signatures[key]
        if self.signature is None:
            self.signature = self._read_signature()

    def _read_signature(self) -> Signature:
        _, kwargs = self.function.structured_input_signature
        outputs = self.function.structured_outputs
        # Signature maps have no stable order; sort by name (as TF Serving's metadata does).
        return Signature(
            inputs=tuple(
                TensorSpec(name, _datatype(s.dtype), _shape(s.shape))
                for name, s in sorted(kwargs.items())
            ),
            outputs=tuple(
                TensorSpec(name, _datatype(s.dtype), _shape(s.shape))
                for name, s in sorted(outputs.items())
            ),
        )

    def predict(self, inputs: Inputs) -> Any:
        tf = _tf()
        raw, single = as_input_dict(self, inputs)
        feed = self._feed(raw)
        try:
            with tf.device(self.device):
                result = self.function(**{n: tf.constant(a) for n, a in feed.items()})
        except Exception as exc:
            raise self._explain(feed, exc) from exc
        return maybe_single({str(k): v.numpy() for k, v in result.items()}, single)


class KerasModel(_TensorFlowModel):
    """A Keras model file (``.keras``, or legacy ``.h5``), loaded without its optimizer.

    ``.keras`` files load in Keras' safe mode (no arbitrary Python lambdas) unless the caller
    trusts the file (``trust=True``).
    """

    framework: ClassVar[str] = "keras"
    format_description: ClassVar[str] = "a Keras model (.keras/.h5)"

    def __init__(
        self, path: str | Path | None = None, *, config: ModelConfig | None = None, **options: Any
    ) -> None:
        super().__init__(path, config=config, **options)
        self.model: Any = None
        self.device = "/CPU:0"

    def load(self) -> None:
        tf = _tf()
        keras = require("keras", extra="tensorflow")
        _threads(self.options)
        self.device = tensorflow_device(self.options, tf, self.name)
        try:
            with tf.device(self.device):
                self.model = keras.models.load_model(
                    str(self.path), compile=False, safe_mode=not self.config.trust
                )
        except Exception as exc:
            if "safe_mode" in str(exc) or "lambda" in str(exc).lower():
                raise UntrustedArtifactError(
                    f"{self.path}: holds Python code (a Lambda layer) that runs on load; pass "
                    "trust=True (--trust) if you trust this file"
                ) from None
            raise _corrupt(self.path, "Keras model file", exc) from exc
        if self.signature is None:
            self.signature = self._read_signature()

    def _read_signature(self) -> Signature:
        try:
            inputs = list(self.model.inputs)
            outputs = list(self.model.outputs)
        except (AttributeError, ValueError):
            raise ConfigError(
                f"{self.path}: the Keras model was never built, so its inputs are unknown; "
                "save a model built on known input shapes (keras.Input)"
            ) from None
        in_names = [str(t.name) for t in inputs]
        out_names = list(getattr(self.model, "output_names", None) or [])
        if len(out_names) != len(outputs):
            out_names = [f"output_{i}" for i in range(len(outputs))]
        return Signature(
            inputs=tuple(
                TensorSpec(n, _datatype(t.dtype), _shape(t.shape)) for n, t in zip(in_names, inputs)
            ),
            outputs=tuple(
                TensorSpec(str(n), _datatype(t.dtype), _shape(t.shape))
                for n, t in zip(out_names, outputs)
            ),
        )

    def predict(self, inputs: Inputs) -> Any:
        raw, single = as_input_dict(self, inputs)
        feed = self._feed(raw)  # in the signature's order, which is the model's inputs' order
        arrays = list(feed.values())
        args: Any = arrays[0] if len(arrays) == 1 else arrays
        try:
            with _tf().device(self.device):
                result = self.model(args, training=False)
        except Exception as exc:
            raise self._explain(feed, exc) from exc
        return maybe_single(self._outputs(result), single)

    def _outputs(self, result: Any) -> dict[str, np.ndarray]:
        if isinstance(result, Mapping):
            return {str(k): np.asarray(v) for k, v in result.items()}
        if isinstance(result, (list, tuple)):
            names = output_names_of(self, len(result))
            return {n: np.asarray(v) for n, v in zip(names, result)}
        return {output_names_of(self, 1)[0]: np.asarray(result)}
