"""The model contract: ``load`` → ``preprocess`` → ``predict`` (on a batch) → ``postprocess``.

Every runtime (ONNX, PyTorch, TensorFlow, scikit-learn, XGBoost, LightGBM, plain Python) is a
subclass of :class:`Model`, and so is a user's ``model.py``. Front doors (the server, Lambda,
the pipeline integrations) only ever call :meth:`Model.predict_batch`, which takes and returns
named arrays, and the user-facing hooks around it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .config import BatchingConfig, ModelConfig
from .errors import CorruptArtifactError, InvalidInputError, ModelportError, PredictionError
from .signature import Signature, TensorSpec

__all__ = ["Inputs", "Model", "Outputs"]

Inputs = Mapping[str, np.ndarray] | np.ndarray
"""Named arrays, or one array for a single-input model."""
Outputs = dict[str, np.ndarray]


class Model:
    """Base class of every model.

    Subclasses override what they need:

    - :meth:`load` loads the weights (called once, before the first prediction);
    - :meth:`preprocess` turns a raw payload (JSON-like values, text, bytes) into inputs;
    - :meth:`predict` runs the framework on a batch (first dimension), named inputs to named
      outputs;
    - :meth:`postprocess` turns outputs into the answer a caller wants.

    ``model(payload)`` runs all three. ``signature`` declares the named inputs and outputs.
    """

    framework: ClassVar[str] = "python"
    """The runtime's name, reported as ``platform`` in V2 metadata."""
    signature: Signature | None = None
    """Declared inputs and outputs; a class attribute, ``modelport.yaml`` or the runtime sets it."""
    labels: Sequence[str] | None = None
    """A classifier's class names: ``labels[i]`` names class ``i`` of its first output, so
    feedback may give the class by name as well as by index."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        config: ModelConfig | None = None,
        **options: Any,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.config = config or ModelConfig()
        self.options: dict[str, Any] = {**self.config.runtime, **options}
        self.name: str = self.config.name or (
            _stem(self.path) if self.path is not None else type(self).__name__.lower()
        )
        self.version: str = self.config.version or "1"
        self.description: str = self.config.description
        if self.config.signature is not None:
            self.signature = self.config.signature
        self.batching: BatchingConfig = self.config.batching
        self.loaded = False

    # -- the contract -------------------------------------------------------------------------

    def load(self) -> None:
        """Load the weights. Runtimes override this; called once by :meth:`ensure_loaded`."""

    def preprocess(self, payload: Any) -> Inputs:
        """Raw request data to model inputs. By default, arrays as declared by the signature."""
        return self.to_inputs(payload)

    def predict(self, inputs: Inputs) -> Any:
        """Run the model on a batch: named arrays in, named arrays out."""
        raise NotImplementedError(f"{type(self).__name__} does not implement predict()")

    def postprocess(self, outputs: Any) -> Any:
        """Model outputs to the caller's answer. By default the outputs unchanged."""
        return outputs

    def __call__(self, payload: Any) -> Any:
        """``postprocess(predict(preprocess(payload)))``."""
        self.ensure_loaded()
        inputs = self.preprocess(payload)
        outputs = self.predict(inputs)
        return self.postprocess(outputs)

    def truth(self, value: Any) -> Any:
        """Feedback ``value`` in the space of the first output, which the report compares it
        with: class names become indices (with :attr:`labels`); text for a numeric output
        without labels is refused rather than scored as wrong."""
        items = value if isinstance(value, list) else [value]
        if self.labels is not None:
            index = {name: i for i, name in enumerate(self.labels)}
            out = []
            for v in items:
                if isinstance(v, str) and v in index:
                    out.append(index[v])
                elif isinstance(v, int) and not isinstance(v, bool) and 0 <= v < len(index):
                    out.append(v)
                else:
                    raise InvalidInputError(
                        f"feedback {v!r} is not a class of model {self.name!r}: it takes "
                        f"{list(self.labels)} or their indices 0-{len(index) - 1}"
                    )
            return out if isinstance(value, list) else out[0]
        first = self.signature.outputs[0] if self.signature and self.signature.outputs else None
        text = next((v for v in items if isinstance(v, str)), None)
        if first is not None and first.datatype != "BYTES" and text is not None:
            raise InvalidInputError(
                f"feedback {text!r} is text, but model {self.name!r} answers {first.datatype} "
                f"in {first.name!r}: send the value as it answers, or declare the class names "
                "as the model's labels"
            )
        return value

    # -- helpers the runtimes and front doors share ------------------------------------------

    def ensure_loaded(self) -> Model:
        """Call :meth:`load` once; return ``self``.

        A failure that is not already a modelport error becomes a
        :class:`~modelport.errors.CorruptArtifactError` naming the artifact and what was
        expected (or a :class:`~modelport.errors.ModelportError` for a model without one).
        """
        if not self.loaded:
            try:
                self.load()
            except ModelportError:
                raise
            except Exception as exc:
                cause = f"{type(exc).__name__}: {exc}"
                if self.path is None:
                    raise ModelportError(f"model {self.name!r} failed to load: {cause}") from exc
                what = getattr(self, "format_description", self.framework)
                raise CorruptArtifactError(
                    f"{self.path}: could not be loaded as {what}: {cause}"
                ) from exc
            self.loaded = True
        return self

    def predict_batch(self, inputs: Mapping[str, np.ndarray]) -> Outputs:
        """:meth:`predict` with the canonical form: a dict of arrays in, a dict of arrays out.

        Input names are checked against the signature first (missing and unexpected ones
        are an :class:`~modelport.errors.InvalidInputError` naming both).
        """
        if self.signature is not None and isinstance(inputs, Mapping):
            self.signature.check_input_names(inputs)
        return self.name_outputs(self.predict(inputs))

    def name_outputs(self, result: Any) -> Outputs:
        """Normalise what :meth:`predict` returned into ``{output name: array}``."""
        names = self.signature.output_names if self.signature else []
        if isinstance(result, Mapping):
            return {str(k): np.asarray(v) for k, v in result.items()}
        if (
            isinstance(result, (tuple, list))
            and result
            and all(isinstance(r, np.ndarray) for r in result)
        ):
            if names and len(names) != len(result):
                raise PredictionError(
                    f"model {self.name!r} returned {len(result)} outputs, its signature "
                    f"declares {len(names)}: {names}"
                )
            return dict(zip(output_names_of(self, len(result)), result))
        return {names[0] if names else "output_0": np.asarray(result)}

    def single_input_name(self) -> str:
        """The name of the only input (for calls that pass one bare array)."""
        if self.signature and self.signature.inputs:
            if len(self.signature.inputs) != 1:
                raise InvalidInputError(
                    f"model {self.name!r} has {len(self.signature.inputs)} inputs "
                    f"{self.signature.input_names}; pass a dict of named arrays"
                )
            return self.signature.inputs[0].name
        return "input_0"

    def to_inputs(self, data: Any) -> dict[str, np.ndarray]:
        """Coerce a payload into named arrays, cast to the signature's datatypes.

        Accepts a mapping of name to array-like, a single array-like for a single-input
        model, or a list of row mappings (``[{"a": 1, "b": 2}, ...]``) for column inputs.
        """
        if isinstance(data, Mapping):
            raw = dict(data)
        elif isinstance(data, list) and data and all(isinstance(r, Mapping) for r in data):
            keys = list(data[0])
            raw = {k: [r.get(k) for r in data] for k in keys}
        else:
            raw = {self.single_input_name(): data}
        return {name: self._as_array(name, value) for name, value in raw.items()}

    def _as_array(self, name: str, value: Any) -> np.ndarray:
        spec: TensorSpec | None = self.signature.input(name) if self.signature else None
        try:
            if spec is None:
                return np.asarray(value)
            if spec.datatype == "BYTES":
                array = np.asarray(value, dtype=object)
            else:
                array = np.asarray(value)
                if array.dtype != spec.dtype:
                    if array.dtype.kind in "OSU":
                        raise InvalidInputError(
                            f"input {name!r}: expected {spec.datatype} numbers, got text"
                        )
                    array = array.astype(spec.dtype, copy=False)
            # A single example without its batch dimension gets one.
            if spec.shape and array.ndim == len(spec.shape) - 1:
                array = array[np.newaxis, ...]
            return array
        except (TypeError, ValueError) as exc:
            if isinstance(exc, InvalidInputError):
                raise
            raise InvalidInputError(f"input {name!r}: {exc}") from None

    def metadata(self) -> dict[str, Any]:
        """V2 model metadata: name, versions, platform, inputs, outputs."""
        sig = self.signature or Signature()
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": self.framework,
            "inputs": [s.to_dict() for s in sig.inputs],
            "outputs": [s.to_dict() for s in sig.outputs],
        }

    def example_inputs(self, batch_size: int = 1) -> dict[str, np.ndarray]:
        """Deterministic inputs that fit the signature, for warm-up and parity checks."""
        if not self.signature or not self.signature.inputs:
            raise InvalidInputError(
                f"model {self.name!r} declares no inputs to build examples from"
            )
        rng = np.random.default_rng(0)
        out: dict[str, np.ndarray] = {}
        for spec in self.signature.inputs:
            shape = [
                batch_size if i == 0 else (d if d > 0 else 1) for i, d in enumerate(spec.shape)
            ]
            if spec.datatype == "BYTES":
                out[spec.name] = np.full(shape, b"example", dtype=object)
            elif spec.dtype.kind == "f":
                out[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
            elif spec.dtype.kind == "b":
                out[spec.name] = rng.integers(0, 2, shape).astype(bool)
            else:
                out[spec.name] = rng.integers(0, 2, shape).astype(spec.dtype)
        return out

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} v{self.version} ({self.framework})>"


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".tar.gz",):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem if path.suffix else name


def as_input_dict(model: Model, inputs: Inputs) -> tuple[dict[str, np.ndarray], bool]:
    """``(named arrays, was_single)`` for runtimes whose ``predict`` accepts one bare array."""
    if isinstance(inputs, Mapping):
        return dict(inputs), False
    return {model.single_input_name(): np.asarray(inputs)}, True


def maybe_single(outputs: Outputs, single: bool) -> Any:
    """One bare array when the call passed one and the model has one output."""
    if single and len(outputs) == 1:
        return next(iter(outputs.values()))
    return outputs


def output_names_of(model: Model, count: int) -> Sequence[str]:
    """The declared output names, or ``output_i`` when none are declared."""
    names = model.signature.output_names if model.signature else []
    return names if len(names) == count else [f"output_{i}" for i in range(count)]
