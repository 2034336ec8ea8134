"""The model contract: ``load`` → ``preprocess`` → ``predict`` (on a batch) → ``postprocess``.

Every runtime (ONNX, PyTorch, TensorFlow, scikit-learn, XGBoost, LightGBM, plain Python) is a
subclass of :class:`Model`, and so is a user's ``model.py``. The hooks come in two grains:

- per batch, at every front door: :meth:`Model.predict_batch` runs :meth:`~Model.preprocess_batch`
  → :meth:`~Model.predict` → :meth:`~Model.postprocess_batch` on the rows of many requests
  (after dynamic batching), request tensors in and out (the :attr:`~Model.request_signature`);
- per payload, at the doors that take plain JSON (``model(payload)``, ``/predict``, Lambda,
  the pipelines): :meth:`~Model.preprocess` turns one payload into request tensors and
  :meth:`~Model.postprocess` one request's outputs into its answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .config import BatchingConfig, ModelConfig
from .errors import CorruptArtifactError, InvalidInputError, ModelportError, PredictionError
from .signature import Signature, TensorSpec

__all__ = ["Inputs", "Model", "Outputs", "as_bytes", "as_texts", "batch_rows"]

Inputs = Mapping[str, np.ndarray] | np.ndarray
"""Named arrays, or one array for a single-input model."""
Outputs = dict[str, np.ndarray]


class Model:
    """Base class of every model.

    Subclasses override what they need:

    - :meth:`load` loads the weights (called once, before the first prediction);
    - :meth:`preprocess_batch` turns the request tensors of a batch (e.g. texts) into the
      framework's tensors (token ids, padded once to the batch's longest row);
    - :meth:`predict` runs the framework on a batch (first dimension), named inputs to named
      outputs;
    - :meth:`postprocess_batch` turns the framework's outputs into request outputs, one row
      per request row (e.g. mean-pooled embeddings);
    - :meth:`preprocess` and :meth:`postprocess` turn one plain-JSON payload into request
      tensors and one request's outputs into the answer a caller wants.

    ``model(payload)`` runs them all. :attr:`signature` declares the framework's tensors,
    :attr:`request_signature` what callers send and get when that differs.
    """

    framework: ClassVar[str] = "python"
    """The runtime's name, reported as ``platform`` in V2 metadata."""
    signature: Signature | None = None
    """The framework's tensors (what :meth:`predict` takes and returns); a class attribute,
    ``modelport.yaml`` or the runtime sets it."""
    request_signature: Signature | None = None
    """What callers send and get over the tensor protocols (V2 REST and gRPC, pipelines) when
    it differs from :attr:`signature`, e.g. ``text`` BYTES ``[-1]`` in, ``embedding`` out,
    for a model whose :meth:`preprocess_batch` tokenises. None: the same as :attr:`signature`."""
    bucket_size: int = 0
    """For a sequence model (one whose :meth:`preprocess_batch` pads): run each batch sorted by
    length in groups of at least this many rows, each padded to its own longest row (see
    :meth:`predict_batch`); 0 runs a batch whole. ``batching.bucket_size`` overrides it."""
    preferred_batch_size: int | None = None
    """A batch limit the model's class knows suits it (a transformer encoder: 64), used when
    ``modelport.yaml`` sets no ``max_batch_size``; None lets the server choose one from the
    model's timings at start."""
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
        if self.config.device is not None:
            self.options.setdefault("device", self.config.device)
        if self.config.instances is not None:
            self.options.setdefault("instances", self.config.instances)
        self.name: str = self.config.name or (
            _stem(self.path) if self.path is not None else type(self).__name__.lower()
        )
        self.version: str = self.config.version or "1"
        self.description: str = self.config.description
        if self.config.signature is not None:
            self.signature = self.config.signature
        if self.config.request_signature is not None:
            self.request_signature = self.config.request_signature
        self.batching: BatchingConfig = self.config.batching
        if self.preferred_batch_size and "max_batch_size" not in self.config.batching_set:
            self.batching = replace(self.batching, max_batch_size=self.preferred_batch_size)
        if self.batching.bucket_size is not None:
            self.bucket_size = self.batching.bucket_size
        self.loaded = False

    # -- the contract -------------------------------------------------------------------------

    def load(self) -> None:
        """Load the weights. Runtimes override this; called once by :meth:`ensure_loaded`."""

    def preprocess(self, payload: Any) -> Inputs:
        """One plain-JSON payload to request tensors. By default, arrays as the request
        signature declares them (see :meth:`to_inputs`)."""
        return self.to_inputs(payload)

    def preprocess_batch(self, inputs: dict[str, np.ndarray]) -> Mapping[str, Any]:
        """The request tensors of a batch (rows of many requests) to the framework's tensors.

        By default unchanged. Entries the :attr:`signature` does not declare (e.g. a
        tokeniser's offsets) are not given to :meth:`predict`, only to
        :meth:`postprocess_batch`.
        """
        return inputs

    def predict(self, inputs: Inputs) -> Any:
        """Run the model on a batch: named arrays in, named arrays out."""
        raise NotImplementedError(f"{type(self).__name__} does not implement predict()")

    def postprocess_batch(self, outputs: Outputs, inputs: Mapping[str, Any]) -> Mapping[str, Any]:
        """The framework's outputs for a batch to request outputs, one row per request row.

        ``inputs`` is what :meth:`preprocess_batch` returned (attention masks, offsets). By
        default the outputs unchanged.
        """
        return outputs

    def postprocess(self, outputs: Any) -> Any:
        """One request's outputs to the caller's answer. By default unchanged."""
        return outputs

    def __call__(self, payload: Any) -> Any:
        """The whole contract on one payload, as ``/predict`` runs it (without batching):
        ``postprocess(postprocess_batch(predict(preprocess_batch(preprocess(payload)))))``."""
        self.ensure_loaded()
        inputs, single = self.request_inputs(self.preprocess(payload))
        return self.postprocess(maybe_single(self.predict_batch(inputs), single))

    @property
    def served_signature(self) -> Signature | None:
        """The signature callers see: :attr:`request_signature`, else :attr:`signature`."""
        return self.request_signature or self.signature

    @property
    def batch_hooks(self) -> bool:
        """Whether this model defines :meth:`preprocess_batch` or :meth:`postprocess_batch`."""
        cls = type(self)
        return (
            cls.preprocess_batch is not Model.preprocess_batch
            or cls.postprocess_batch is not Model.postprocess_batch
        )

    def predict_batch(self, inputs: Mapping[str, np.ndarray]) -> Outputs:
        """The per-batch contract: request tensors in, request tensors out, one row per row.

        ``preprocess_batch`` → :meth:`predict_tensors` → ``postprocess_batch``. With
        :attr:`bucket_size` set, a batch's rows are sorted by length and cut into groups
        that each pad only to their own longest row: a group of at least that many rows ends
        where the next row would make padding more than a quarter of its work. A batch of
        similar lengths stays one call.
        """
        if not self.batch_hooks:
            return self.predict_tensors(inputs)
        bucket = self.bucket_size
        rows = batch_rows(inputs)
        if bucket <= 0 or rows <= bucket:
            return self._run_hooks(dict(inputs))
        lengths = self.row_lengths(inputs)
        order = np.argsort(lengths, kind="stable")
        groups = _length_groups(lengths[order], bucket)
        parts = [self._run_hooks({k: v[order[g]] for k, v in inputs.items()}) for g in groups]
        inverse = np.empty_like(order)
        inverse[order] = np.arange(rows)
        return {name: np.concatenate([p[name] for p in parts])[inverse] for name in parts[0]}

    def row_lengths(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Each row's length, for bucketing: of its first input, in characters or bytes for
        text, else its count of non-zero entries (padding is zeros)."""
        first = next(iter(inputs.values()))
        if first.dtype.kind in "OSU":
            return np.fromiter((len(v) for v in first.reshape(len(first), -1)[:, 0]), int)
        return np.asarray(np.count_nonzero(first.reshape(len(first), -1), axis=1))

    def _run_hooks(self, inputs: dict[str, np.ndarray]) -> Outputs:
        rows = batch_rows(inputs)
        tensors = dict(self.preprocess_batch(inputs))
        feed = tensors
        if self.signature is not None and self.signature.inputs:
            feed = {k: v for k, v in tensors.items() if self.signature.input(k) is not None}
        outputs = self.predict_tensors(feed)
        result = self.postprocess_batch(outputs, tensors)
        named = {str(k): np.asarray(v) for k, v in result.items()}
        for key, array in named.items():
            if array.ndim == 0 or array.shape[0] != rows:
                raise PredictionError(
                    f"model {self.name!r}: postprocess_batch returned {key!r} with shape "
                    f"{list(array.shape)} for {rows} request rows; it must return one row "
                    "per request row"
                )
        return named

    def request_inputs(self, raw: Inputs) -> tuple[dict[str, np.ndarray], bool]:
        """``(named request tensors, was_single)`` from what :meth:`preprocess` returned:
        lists become arrays of the request signature's datatypes."""
        sig = self.served_signature
        if isinstance(raw, Mapping):
            return {
                name: value
                if isinstance(value, np.ndarray) and (sig is None or sig.input(name) is None)
                else self._as_array(sig, name, value)
                for name, value in raw.items()
            }, False
        name = self.single_input_name(sig)
        return {name: self._as_array(sig, name, raw)}, True

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
        sig = self.served_signature
        first = sig.outputs[0] if sig and sig.outputs else None
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

    @property
    def on_gpu(self) -> bool:
        """Whether the loaded model computes on a GPU (the runtimes that place models say)."""
        return False

    def predict_tensors(self, inputs: Mapping[str, np.ndarray]) -> Outputs:
        """:meth:`predict` with the canonical form: a dict of the framework's arrays in, a dict
        of arrays out (no batch hooks: what an export is checked against).

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

    def single_input_name(self, signature: Signature | None = None) -> str:
        """The name of the only input of ``signature`` (by default the framework's), for
        calls that pass one bare array."""
        sig = signature if signature is not None else self.signature
        if sig and sig.inputs:
            if len(sig.inputs) != 1:
                raise InvalidInputError(
                    f"model {self.name!r} has {len(sig.inputs)} inputs "
                    f"{sig.input_names}; pass a dict of named arrays"
                )
            return sig.inputs[0].name
        return "input_0"

    def to_inputs(self, data: Any, signature: Signature | None = None) -> dict[str, np.ndarray]:
        """Coerce a payload into named arrays, cast to the datatypes of ``signature`` (by
        default the request signature); text for a BYTES input becomes UTF-8 bytes, as V2
        delivers it.

        Accepts a mapping of name to array-like, a single array-like for a single-input
        model, or a list of row mappings (``[{"a": 1, "b": 2}, ...]``) for column inputs.
        """
        sig = signature if signature is not None else self.served_signature
        if isinstance(data, Mapping):
            raw = dict(data)
        elif isinstance(data, list) and data and all(isinstance(r, Mapping) for r in data):
            keys = list(data[0])
            raw = {k: [r.get(k) for r in data] for k in keys}
        else:
            raw = {self.single_input_name(sig): data}
        return {name: self._as_array(sig, name, value) for name, value in raw.items()}

    def _as_array(self, sig: Signature | None, name: str, value: Any) -> np.ndarray:
        spec: TensorSpec | None = sig.input(name) if sig else None
        try:
            if spec is None:
                return np.asarray(value)
            if spec.datatype == "BYTES":
                array = as_bytes(np.asarray(value, dtype=object))
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
        """V2 model metadata: name, versions, platform, and the inputs and outputs callers
        send and get (the request signature)."""
        sig = self.served_signature or Signature()
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": self.framework,
            "inputs": [s.to_dict() for s in sig.inputs],
            "outputs": [s.to_dict() for s in sig.outputs],
        }

    def example_inputs(
        self, batch_size: int = 1, signature: Signature | None = None
    ) -> dict[str, np.ndarray]:
        """Deterministic inputs that fit ``signature`` (by default the request signature),
        for warm-up and parity checks."""
        sig = signature if signature is not None else self.served_signature
        if not sig or not sig.inputs:
            raise InvalidInputError(
                f"model {self.name!r} declares no inputs to build examples from"
            )
        rng = np.random.default_rng(0)
        out: dict[str, np.ndarray] = {}
        for spec in sig.inputs:
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


def batch_rows(inputs: Mapping[str, np.ndarray]) -> int:
    """Rows in a batch of named arrays: its first array's first dimension (1 for a scalar)."""
    for array in inputs.values():
        return int(array.shape[0]) if array.ndim else 1
    return 1


def _length_groups(lengths: np.ndarray, least: int, waste: float = 0.25) -> list[slice]:
    """Cut ascending ``lengths`` into slices of at least ``least`` rows (but the last), each
    ending before a row that would pad it by more than ``waste`` of its real length."""
    groups: list[slice] = []
    start, total = 0, 0
    for i, n in enumerate(lengths.tolist()):
        n = max(int(n), 1)
        count = i - start
        if count >= least and (count + 1) * n > (1 + waste) * (total + n):
            groups.append(slice(start, i))
            start, total = i, 0
        total += n
    groups.append(slice(start, len(lengths)))
    return groups


def as_bytes(array: np.ndarray) -> np.ndarray:
    """A BYTES array with every text element encoded as UTF-8 (V2 delivers bytes)."""
    flat = array.reshape(-1)
    if any(isinstance(v, str) for v in flat.tolist()):
        out = np.empty(flat.shape, dtype=object)
        out[:] = [v.encode("utf-8") if isinstance(v, str) else v for v in flat.tolist()]
        return out.reshape(array.shape)
    return array


def as_texts(array: np.ndarray) -> list[str]:
    """The elements of a BYTES array as Python text (UTF-8 decoded), flattened: what a
    tokeniser takes in :meth:`Model.preprocess_batch`."""
    return [
        v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.reshape(-1).tolist()
    ]


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
