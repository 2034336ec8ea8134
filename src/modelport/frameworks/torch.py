"""PyTorch runtimes: TorchScript archives, ``torch.export`` programs, and plain weights
(state_dict ``.pt``/``.pth`` or ``.safetensors``) put into the user's ``nn.Module``.

Inference runs under ``torch.inference_mode()``. Inputs become tensors without a copy where
numpy allows (``torch.from_numpy``); outputs come back as numpy arrays, a tuple or dict of
outputs as named outputs.

Signatures: a ``torch.export`` program carries its own (inputs named after ``forward``'s
parameters, outputs ``output_0``… or the keys of a returned dict). TorchScript and plain
weights carry none: declare one in ``modelport.yaml``, or pass inputs named ``input_0``,
``input_1``… in ``forward``'s order (a bare array is ``input_0``).

Options (``runtime:`` in ``modelport.yaml`` or keywords to ``modelport.load``):
``intra_op_threads`` (``torch.set_num_threads``, process-wide); for plain weights also
``module`` (the ``nn.Module`` class, or its name in ``model.py``), ``module_kwargs``,
``state_dict_key`` (the entry of a checkpoint dict that holds the weights) and ``strict``
(``false`` loads weights that do not fit the module exactly, e.g. a buffer the checkpoint
saved and the class no longer has, and logs the missing and unexpected keys in one line).
Every format: ``device`` (``cpu``, ``cuda``, ``cuda:N``, ``auto``: the module moved there,
inputs copied from page-locked memory without blocking, outputs back once per batch) and
``dtype`` (``float16``/``bfloat16``: the module and float inputs in half precision, answers
in float32).
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._deps import require
from ..config import ModelConfig
from ..cpus import threads_option
from ..datatypes import from_numpy
from ..devices import thread_stream, torch_device
from ..errors import (
    ConfigError,
    CorruptArtifactError,
    InvalidInputError,
    PredictionError,
    UnknownFormatError,
    UntrustedArtifactError,
)
from ..model import Inputs, Model, as_input_dict, maybe_single, output_names_of
from ..parity import max_difference
from ..signature import Signature, TensorSpec

__all__ = ["ExportedProgramModel", "StateDictModel", "TorchModel", "TorchScriptModel"]

_POSITIONAL = re.compile(r"input_(\d+)")
log = logging.getLogger("modelport.runtime")


@functools.cache
def _torch() -> Any:
    return require("torch", extra="torch")


class TorchModel(Model):
    """What the three PyTorch formats share: threads, tensor conversion, the call.

    ``module`` is the loaded callable (``nn.Module``, ``ScriptModule`` or the program's graph
    module) once :meth:`load` has run.
    """

    framework: ClassVar[str] = "pytorch"

    def __init__(
        self, path: str | Path | None = None, *, config: ModelConfig | None = None, **options: Any
    ) -> None:
        super().__init__(path, config=config, **options)
        self.module: Any = None
        self.device: Any = None
        """The ``torch.device`` the module runs on (``device`` option; the CPU by default)."""
        self._float_dtype: np.dtype[Any] | None = None
        self._half: Any = None  # torch.float16 / torch.bfloat16 with the dtype option

    def _prepare(self, module: Any, *, eval_mode: bool = True) -> None:
        """Install ``module`` for inference: eval mode, threads, the dtype for bare floats."""
        torch = _torch()
        threads = threads_option(self.options)
        # Process-wide: lower torch's thread-per-core default to the CPU budget, and apply an
        # explicit setting as given.
        if threads and (threads < torch.get_num_threads() or "intra_op_threads" in self.options):
            torch.set_num_threads(threads)
        halving = self.options.get("dtype") in ("float16", "bfloat16")
        reference = (
            copy.deepcopy(module) if halving and isinstance(module, torch.nn.Module) else None
        )
        module = self._place(module)
        if eval_mode and isinstance(module, torch.nn.Module):
            module.eval()
            floats = [p for p in module.parameters() if p.is_floating_point()]
            if floats and floats[0].dtype != torch.bfloat16:  # numpy has no bfloat16
                self._float_dtype = torch.empty((), dtype=floats[0].dtype).numpy().dtype
        self.module = module
        if reference is not None:
            self.precision_diffs = self._compare_precision(
                reference.eval() if eval_mode else reference
            )

    precision_diffs: dict[str, float] | None = None
    """With ``dtype`` float16/bfloat16: each output's largest absolute difference from the
    float32 module on generated rows, measured at load as ``export`` measures parity (None
    when not measured)."""

    def _compare_precision(self, reference: Any, rows: int = 8) -> dict[str, float] | None:
        """Run ``rows`` generated rows through the half-precision module and ``reference`` (the
        float32 module, on the CPU) and log each output's largest difference."""
        torch = _torch()
        try:
            inputs = self.example_inputs(rows)
            half = self.predict_tensors(inputs)
            feed, _ = as_input_dict(self, inputs)
            args = [torch.from_numpy(np.ascontiguousarray(a)) for _, a in self.ordered_inputs(feed)]
            with torch.inference_mode():
                full = self._outputs_float32(reference(*args))
        except Exception as exc:  # no signature to generate rows from, or inputs it refuses
            log.info(
                "half precision not compared with float32",
                extra={"model": self.name, "dtype": self.options.get("dtype"), "reason": str(exc)},
            )
            return None
        diffs = {name: max_difference(full[name], half[name]) for name in full if name in half}
        log.info(
            "half precision against float32",
            extra={
                "model": self.name,
                "dtype": self.options.get("dtype"),
                "rows": rows,
                "max_abs_diff": {name: float(f"{d:.3g}") for name, d in diffs.items()},
            },
        )
        return diffs

    def _outputs_float32(self, result: Any) -> dict[str, np.ndarray]:
        half, self._half = self._half, None
        try:
            return self._outputs(result)
        finally:
            self._half = half

    def _place(self, module: Any) -> Any:
        """The module on its device (``device``), in half precision with ``dtype``."""
        torch = _torch()
        self.device = torch_device(self.options, torch, self.name)
        dtype = self.options.get("dtype")
        halves = {"float16": torch.float16, "bfloat16": torch.bfloat16}
        if dtype is not None and dtype not in (*halves, "float32"):
            raise ConfigError(f"dtype {dtype!r}: expected float32, float16 or bfloat16")
        self._half = halves.get(str(dtype))
        if isinstance(module, torch.nn.Module):
            if self._half is not None:
                module = module.to(self._half)
            if self.device.type != "cpu":
                module = module.to(self.device)
        return module

    # -- inputs ---------------------------------------------------------------------------------

    def ordered_inputs(self, feed: Mapping[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
        """The inputs in ``forward``'s order: the signature's, else ``input_0``, ``input_1``…"""
        if self.signature is not None and self.signature.inputs:
            names = self.signature.input_names
            missing = [n for n in names if n not in feed]
            unexpected = [n for n in feed if n not in names]
            if missing or unexpected:
                wrong = [f"missing {missing}"] if missing else []
                wrong += [f"unexpected {unexpected}"] if unexpected else []
                raise InvalidInputError(
                    f"model {self.name!r} expects inputs {names}; {' and '.join(wrong)}"
                )
            return [(n, feed[n]) for n in names]
        positions: dict[int, str] = {}
        for name in feed:
            match = _POSITIONAL.fullmatch(name)
            if match is None:
                raise InvalidInputError(
                    f"model {self.name!r} declares no signature, so its inputs are positional: "
                    f"name them input_0, input_1, ... (got {list(feed)}), or declare a "
                    "signature in modelport.yaml"
                )
            positions[int(match.group(1))] = name
        if sorted(positions) != list(range(len(positions))):
            raise InvalidInputError(
                f"model {self.name!r}: positional inputs must be input_0..input_"
                f"{len(positions) - 1} without gaps, got {sorted(feed)}"
            )
        return [(positions[i], feed[positions[i]]) for i in range(len(positions))]

    def as_tensors(self, inputs: Inputs) -> list[Any]:
        """The inputs as tensors, in ``forward``'s order (shares memory with numpy when it can)."""
        feed, _ = as_input_dict(self, inputs)
        return [self._tensor(name, array) for name, array in self.ordered_inputs(feed)]

    def _tensor(self, name: str, array: np.ndarray) -> Any:
        torch = _torch()
        array = np.asarray(array)
        spec = self.signature.input(name) if self.signature is not None else None
        if array.dtype.kind in "OSUV":
            raise InvalidInputError(
                f"input {name!r}: PyTorch models take numeric tensors, got "
                f"{'text or bytes' if array.dtype.kind != 'V' else array.dtype}"
            )
        want = (
            spec.dtype
            if spec is not None and spec.datatype not in ("BYTES", "BF16")
            else self._float_dtype
            if spec is None and array.dtype.kind == "f"
            else None
        )
        if want is not None and array.dtype != want:
            array = array.astype(want)
        if not array.flags.writeable:
            # torch.from_numpy warns on read-only memory (a request body); torch may not write.
            array = array.copy()
        try:
            tensor = torch.from_numpy(array)
        except ValueError:  # negative strides, e.g. a reversed view
            tensor = torch.from_numpy(np.ascontiguousarray(array))
        except TypeError as exc:
            raise InvalidInputError(f"input {name!r}: {exc}") from None
        if spec is not None and spec.datatype == "BF16":
            tensor = tensor.view(torch.bfloat16)
        elif self._half is not None and tensor.is_floating_point():
            tensor = tensor.to(self._half)
        return tensor

    # -- the call -------------------------------------------------------------------------------

    @property
    def on_gpu(self) -> bool:
        return self.device is not None and self.device.type == "cuda"

    def predict(self, inputs: Inputs) -> Any:
        feed, single = as_input_dict(self, inputs)
        args = [self._tensor(name, array) for name, array in self.ordered_inputs(feed)]
        torch = _torch()
        with thread_stream(torch, self.device):  # each worker thread's own CUDA stream
            if self.on_gpu:
                # Page-locked host memory lets the copies overlap; one copy back per batch.
                args = [a.pin_memory().to(self.device, non_blocking=True) for a in args]
            try:
                with torch.inference_mode():
                    result = self.module(*args)
            except Exception as exc:
                raise self._explain(feed, exc) from exc
            return maybe_single(self._outputs(result), single)

    def _explain(self, feed: Mapping[str, np.ndarray], exc: Exception) -> Exception:
        """A precise InvalidInputError if the inputs break the signature, else PredictionError."""
        if self.signature is not None and self.signature.inputs:
            # Datatypes were already cast; check names and shapes on zero-cost stand-ins.
            stand_ins = {
                n: np.broadcast_to(np.zeros((), _dtype_for(self.signature, n, a)), np.shape(a))
                for n, a in feed.items()
            }
            try:
                self.signature.check_inputs(stand_ins)
            except InvalidInputError as bad:
                return bad
        shapes = {n: list(np.shape(a)) for n, a in feed.items()}
        return PredictionError(
            f"model {self.name!r} failed on inputs with shapes {shapes}: {_detail(exc)}"
        )

    def _outputs(self, result: Any) -> dict[str, np.ndarray]:
        if self._half is not None:  # half precision was ours: answer float32
            result = _float32(result)
        if isinstance(result, Mapping):
            return {str(k): _numpy(v) for k, v in result.items()}
        if isinstance(result, (tuple, list)):
            fields = getattr(result, "_fields", None)
            names = list(fields) if fields else list(output_names_of(self, len(result)))
            return {n: _numpy(v) for n, v in zip(names, result)}
        return {output_names_of(self, 1)[0]: _numpy(result)}


def _float32(value: Any) -> Any:
    torch = _torch()
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, Mapping):
        return {k: _float32(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)) and not hasattr(value, "_fields"):
        return type(value)(_float32(v) for v in value)
    return value


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"runtime option {name!r} must be true or false, got {value!r}")


def _keys(keys: list[str], shown: int = 10) -> str:
    """``[a, b, ... and 3 more]``: a log line stays one line."""
    more = f" ... and {len(keys) - shown} more" if len(keys) > shown else ""
    return f"[{', '.join(keys[:shown])}{more}]" if keys else "none"


def _dtype_for(signature: Signature, name: str, array: Any) -> Any:
    spec = signature.input(name)
    if spec is None or spec.datatype in ("BYTES", "BF16"):
        return np.asarray(array).dtype
    return spec.dtype


def _numpy(value: Any) -> np.ndarray:
    torch = _torch()
    if isinstance(value, torch.Tensor):
        # Outputs made under inference_mode carry no autograd history: no detach() needed.
        tensor = value if value.device.type == "cpu" else value.cpu()
        if tensor.dtype == torch.bfloat16:
            # numpy has no bfloat16: BF16 travels as its raw 16 bits (see modelport.datatypes).
            raw: np.ndarray = tensor.view(torch.int16).numpy().view(np.uint16)
            return raw
        array: np.ndarray = tensor.numpy()
        return array
    if isinstance(value, (tuple, list, Mapping)):
        raise PredictionError(
            "the module returned nested outputs; return a tensor, a tuple of tensors or a "
            "dict of tensors"
        )
    return np.asarray(value)


def _torch_datatype(dtype: Any) -> str:
    torch = _torch()
    if dtype == torch.bfloat16:
        return "BF16"
    return from_numpy(torch.empty((), dtype=dtype).numpy().dtype)


def _spec_of(name: str, value: Any) -> TensorSpec:
    """A TensorSpec from an example (fake) tensor; symbolic dimensions become -1."""
    shape = tuple(d if isinstance(d, int) else -1 for d in value.shape)
    return TensorSpec(name, _torch_datatype(value.dtype), shape)


def _detail(exc: BaseException) -> str:
    """One line from a framework error: TorchScript puts the cause on the last line."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else ""
    text = text.split(". ")[0] if len(text) > 200 else text
    return text if text.startswith(type(exc).__name__) else f"{type(exc).__name__}: {text}"


def _corrupt(path: Path | None, what: str, exc: BaseException) -> CorruptArtifactError:
    return CorruptArtifactError(
        f"{path}: not a readable {what} (truncated or corrupt?): {_detail(exc)}"
    )


class TorchScriptModel(TorchModel):
    """A TorchScript archive (``torch.jit.save``), loaded with ``torch.jit.load``."""

    format_description: ClassVar[str] = "a TorchScript archive (.pt/.pth)"

    def load(self) -> None:
        torch = _torch()
        try:
            module = torch.jit.load(str(self.path), map_location="cpu")
        except Exception as exc:
            raise _corrupt(self.path, "TorchScript archive", exc) from exc
        self._prepare(module)


class ExportedProgramModel(TorchModel):
    """A ``torch.export`` program (``.pt2``); its signature is read from the program."""

    format_description: ClassVar[str] = "a torch.export program (.pt2)"

    def __init__(
        self, path: str | Path | None = None, *, config: ModelConfig | None = None, **options: Any
    ) -> None:
        super().__init__(path, config=config, **options)
        self.program: Any = None

    def load(self) -> None:
        torch = _torch()
        if self.path is None or not zipfile.is_zipfile(self.path):
            # Checked first: torch.export.load logs a traceback before it raises.
            raise CorruptArtifactError(
                f"{self.path}: not a readable torch.export program (.pt2) (truncated or "
                "corrupt?): not a zip archive"
            )
        try:
            program = torch.export.load(str(self.path))
        except Exception as exc:
            raise _corrupt(self.path, "torch.export program (.pt2)", exc) from exc
        self.program = program
        if self.signature is None:
            self.signature = _program_signature(program, self.path)
        # An exported graph module has no train/eval switch: the program is already frozen.
        self._prepare(program.module(), eval_mode=False)


def _program_signature(program: Any, path: Path | None) -> Signature:
    from torch.export.graph_signature import InputKind, OutputKind, TensorArgument

    values = {n.name: n.meta.get("val") for n in program.graph.nodes}
    inputs = []
    for spec in program.graph_signature.input_specs:
        if spec.kind != InputKind.USER_INPUT:
            continue
        if not isinstance(spec.arg, TensorArgument) or values.get(spec.arg.name) is None:
            raise UnknownFormatError(
                f"{path}: the program takes a non-tensor input {spec.arg!r}; modelport "
                "serves programs whose inputs are all tensors"
            )
        inputs.append(_spec_of(spec.arg.name, values[spec.arg.name]))
    outs = [s for s in program.graph_signature.output_specs if s.kind == OutputKind.USER_OUTPUT]
    out_spec = program.call_spec.out_spec
    keys = getattr(out_spec, "context", None) if out_spec is not None else None
    if isinstance(keys, (list, tuple)) and len(keys) == len(outs):
        names = [str(k) for k in keys]
    else:
        names = [f"output_{i}" for i in range(len(outs))]
    outputs = []
    for name, spec in zip(names, outs):
        value = values.get(getattr(spec.arg, "name", ""))
        if value is None or not hasattr(value, "shape"):
            raise UnknownFormatError(
                f"{path}: the program returns a non-tensor output {spec.arg!r}; modelport "
                "serves programs whose outputs are all tensors"
            )
        outputs.append(_spec_of(name, value))
    return Signature(inputs=tuple(inputs), outputs=tuple(outputs))


class StateDictModel(TorchModel):
    """Weights (``torch.save(state_dict)`` or ``.safetensors``) put into the user's module.

    The module comes from :meth:`build_module`: by default the ``nn.Module`` subclass defined
    in the ``model.py`` beside the weights (or the one named by the ``module`` option),
    constructed with ``module_kwargs``. A user's Model subclass may override
    :meth:`build_module` instead. Loading uses ``torch.load(weights_only=True)``; a file that
    pickles a whole module loads only with ``trust=True``.
    """

    format_description: ClassVar[str] = "PyTorch weights (.pt/.pth state_dict or .safetensors)"

    def load(self) -> None:
        loaded = self._read_weights()
        torch = _torch()
        if isinstance(loaded, torch.nn.Module):
            self._prepare(loaded)
            return
        module = self.build_module()
        if not isinstance(module, torch.nn.Module):
            raise ConfigError(
                f"build_module() must return a torch.nn.Module, got {type(module).__name__}"
            )
        strict = _flag(self.options.get("strict", True), "strict")
        try:
            result = module.load_state_dict(loaded, strict=strict)
        except (RuntimeError, ValueError, TypeError) as exc:
            hint = (
                "; to load what fits and leave the rest, set 'runtime: {strict: false}' in "
                "modelport.yaml"
                if strict and "size mismatch" not in str(exc)
                else ""
            )
            raise ConfigError(
                f"{self.path}: the weights do not fit {type(module).__name__}: "
                f"{' '.join(str(exc).split())[:500]}{hint}"
            ) from None
        if not strict and (result.missing_keys or result.unexpected_keys):
            log.warning(
                "weights loaded with strict: false: %s missing %s, unexpected %s",
                type(module).__name__,
                _keys(result.missing_keys),
                _keys(result.unexpected_keys),
                extra={
                    "model": self.name,
                    "missing_keys": list(result.missing_keys),
                    "unexpected_keys": list(result.unexpected_keys),
                },
            )
        self._prepare(module)

    def _read_weights(self) -> Any:
        torch = _torch()
        path = self.path
        if path is None:
            raise ConfigError("StateDictModel needs the path of a weights file")
        if path.suffix.lower() == ".safetensors":
            st = require("safetensors.torch", extra="torch")
            try:
                return st.load_file(str(path), device="cpu")
            except Exception as exc:
                raise _corrupt(path, "safetensors file", exc) from exc
        try:
            loaded = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            if "weights_only" not in str(exc) and "Unsupported global" not in str(exc):
                raise _corrupt(path, "PyTorch weights file", exc) from exc
            if not self.config.trust:
                raise UntrustedArtifactError(
                    f"{path}: holds pickled Python objects, not only tensors; unpickling runs "
                    "arbitrary code. Save a state_dict instead, or pass trust=True "
                    "(--trust, 'trust: true' in modelport.yaml) if you trust this file"
                ) from None
            try:
                loaded = torch.load(str(path), map_location="cpu", weights_only=False)
            except Exception as exc2:
                raise _corrupt(path, "PyTorch file", exc2) from exc2
        key = self.options.get("state_dict_key")
        if key is not None:
            if not isinstance(loaded, Mapping) or key not in loaded:
                found = list(loaded) if isinstance(loaded, Mapping) else type(loaded).__name__
                raise ConfigError(f"{path}: state_dict_key {key!r} not found (has {found})")
            loaded = loaded[key]
        if not isinstance(loaded, (Mapping, torch.nn.Module)):
            raise CorruptArtifactError(
                f"{path}: holds a {type(loaded).__name__}, expected a state_dict (a mapping of "
                "parameter names to tensors)"
            )
        return loaded

    def build_module(self) -> Any:
        """The ``nn.Module`` to load the weights into; override in ``model.py`` if needed."""
        target = self.options.get("module")
        kwargs = self.options.get("module_kwargs") or {}
        if not isinstance(kwargs, Mapping):
            raise ConfigError(f"module_kwargs must be a mapping, got {type(kwargs).__name__}")
        torch = _torch()
        if isinstance(target, torch.nn.Module):
            return target
        cls = target if inspect.isclass(target) else self._module_class(target)
        try:
            return cls(**kwargs)
        except Exception as exc:
            raise ConfigError(
                f"cannot construct {cls.__name__}(**{dict(kwargs)!r}): {type(exc).__name__}: {exc}"
            ) from exc

    def _module_class(self, name: str | None) -> type[Any]:
        torch = _torch()
        source = (self.path.parent if self.path is not None else Path.cwd()) / "model.py"
        hint = (
            "define the nn.Module class in model.py beside the weights (name it with "
            "'runtime: {module: ClassName}' in modelport.yaml if there are several), or "
            "override build_module() in your Model subclass"
        )
        if not source.is_file():
            raise ConfigError(
                f"{self.path}: plain weights need their nn.Module class, and there is no "
                f"{source}; {hint}"
            )
        from ..loader import _import_user_module

        module = _import_user_module(source)
        classes = [
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj)
            and issubclass(obj, torch.nn.Module)
            and obj.__module__ == module.__name__
        ]
        if name is not None:
            chosen = [c for c in classes if c.__name__ == name]
            if not chosen:
                raise ConfigError(
                    f"{source}: no nn.Module subclass named {name!r} "
                    f"(found {[c.__name__ for c in classes]})"
                )
            return chosen[0]
        if len(classes) != 1:
            found = f"several: {[c.__name__ for c in classes]}" if classes else "none"
            raise ConfigError(
                f"{self.path}: needs one nn.Module subclass in {source}, found {found}; {hint}"
            )
        return classes[0]
