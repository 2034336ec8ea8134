"""One converter per framework: ``(model, samples, out, opset) -> None`` writes ``out``.

Each names the ONNX inputs and outputs after the original model's, so the exported file is a
drop-in replacement behind the same signature.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .._deps import require
from ..errors import ExportError
from ..model import Model

__all__ = [
    "huggingface_to_onnx",
    "keras_to_onnx",
    "saved_model_to_onnx",
    "sklearn_to_onnx",
    "torch_to_onnx",
]

TORCH_OPSET = 18
"""torch.onnx's dynamo exporter is built and tested against opset 18."""
_TWO_GIB = 2**31
_EXPORTER_LOGGERS = ("torch.onnx", "onnxscript", "onnx_ir")
"""Loggers of the exporter's internals: a missing torchvision op, or a constant the optimiser
could not fold ("Evaluation failed: ..."), is no fault of the exported model; parity decides."""


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _EXPORTER_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def torch_to_onnx(
    model: Model, samples: dict[str, np.ndarray], out: Path, opset: int | None
) -> None:
    """TorchScript via the TorchScript exporter; nn.Modules and programs via torch.export."""
    torch = require("torch", extra="torch")
    require("onnxscript", extra="export")
    from ..frameworks.torch import TorchModel

    assert isinstance(model, TorchModel)
    args = tuple(model.as_tensors(samples))
    if args and args[0].ndim and args[0].shape[0] == 1:
        # A batch of one would let the exporter specialise the batch dimension to 1.
        args = tuple(torch.cat([a, a]) for a in args)
    input_names = [name for name, _ in model.ordered_inputs(samples)]
    output_names = list(model.predict_tensors(samples))
    version = opset or TORCH_OPSET
    with _quiet_exporter():
        _torch_export(model, args, out, input_names, output_names, version)


def _torch_export(
    model: Any, args: Any, out: Path, input_names: list[str], output_names: list[str], version: int
) -> None:
    torch = require("torch", extra="torch")
    from ..frameworks.torch import ExportedProgramModel, TorchScriptModel

    if isinstance(model, TorchScriptModel):
        axes = {n: {0: "batch"} for n in input_names + output_names}
        torch.onnx.export(
            model.module,
            args,
            str(out),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=axes,
            opset_version=version,
            dynamo=False,
        )
        return
    large = sum(p.numel() * p.element_size() for p in model.module.parameters()) > _TWO_GIB * 0.9
    common: dict[str, Any] = {
        "input_names": input_names,
        "output_names": output_names,
        "opset_version": version,
        "dynamo": True,
        "external_data": large,  # ONNX protobufs stop at 2 GiB
        "verbose": False,
    }
    if isinstance(model, ExportedProgramModel):
        # The program already carries its dynamic dimensions.
        torch.onnx.export(model.program, args, str(out), **common)
        return
    batch = torch.export.Dim("batch")
    torch.onnx.export(
        model.module,
        args,
        str(out),
        dynamic_shapes=tuple({0: batch} for _ in args),
        **common,
    )


def huggingface_to_onnx(
    model: Model, samples: dict[str, np.ndarray], out: Path, opset: int | None
) -> None:
    """A Hugging Face network (PyTorch) through torch.export: dynamic batch and sequence axes
    (batch only for images), the one output the task's postprocessing reads."""
    torch = require("torch", extra="hf")
    require("onnxscript", extra="export")
    from ..frameworks.huggingface import IMAGE_CLASS, HuggingFaceModel

    assert isinstance(model, HuggingFaceModel) and model.signature is not None
    if model.module is None:
        raise ExportError(f"model {model.name!r} runs on ONNX already: export its PyTorch weights")
    names = model.signature.input_names
    args = tuple(torch.from_numpy(np.ascontiguousarray(samples[n])) for n in names)
    batch = torch.export.Dim("batch")
    sequence = torch.export.Dim("sequence")
    axes = {0: batch} if model.task == IMAGE_CLASS else {0: batch, 1: sequence}

    network, output = model.module, model.output_name

    class Forward(torch.nn.Module):  # type: ignore[misc, name-defined]
        """The network on positional tensors, returning the one output the task reads."""

        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, *tensors: Any) -> Any:
            return getattr(self.network(**dict(zip(names, tensors))), output)

    large = sum(p.numel() * p.element_size() for p in network.parameters()) > _TWO_GIB * 0.9
    with _quiet_exporter():
        torch.onnx.export(
            Forward().eval(),
            args,
            str(out),
            input_names=names,
            output_names=[output],
            dynamic_shapes=(tuple(axes for _ in args),),  # one entry: forward's *tensors
            opset_version=opset or TORCH_OPSET,
            dynamo=True,
            external_data=large,
            verbose=False,
        )


def keras_to_onnx(
    model: Model, samples: dict[str, np.ndarray], out: Path, opset: int | None
) -> None:
    """Keras' own ONNX export (tf2onnx under the TensorFlow backend)."""
    require("tf2onnx", extra="tensorflow")
    kwargs: dict[str, Any] = {"format": "onnx", "verbose": False}
    if opset is not None:
        kwargs["opset_version"] = opset
    from ..frameworks.tensorflow import KerasModel

    assert isinstance(model, KerasModel)
    model.predict_tensors(samples)  # Keras exports only a model that has been called
    model.model.export(str(out), **kwargs)
    _rename_outputs(out, model.signature.output_names if model.signature else [])


def saved_model_to_onnx(
    model: Model, samples: dict[str, np.ndarray], out: Path, opset: int | None
) -> None:
    """tf2onnx on the SavedModel's serving signature (inputs passed by name, as TF does)."""
    tf = require("tensorflow", extra="tensorflow")
    tf2onnx = require("tf2onnx", extra="tensorflow")
    from ..frameworks.tensorflow import SavedModelModel

    assert isinstance(model, SavedModelModel) and model.signature is not None
    function = model.function
    _, specs = function.structured_input_signature
    names = sorted(specs)

    # tf2onnx wants a tf.function of positional arguments; the signature takes keywords.
    @tf.function(autograph=False)  # type: ignore[untyped-decorator]
    def positional(*args: Any) -> Any:
        return function(**dict(zip(names, args)))

    signature = [tf.TensorSpec(specs[n].shape, specs[n].dtype, name=n) for n in names]
    tf2onnx.convert.from_function(
        positional, input_signature=signature, opset=opset, output_path=str(out)
    )
    _rename_outputs(out, model.signature.output_names)


def sklearn_to_onnx(
    model: Model, samples: dict[str, np.ndarray], out: Path, opset: int | None
) -> None:
    """skl2onnx with a float32 input named as the runtime's, classifiers without ZipMap."""
    skl2onnx = require("skl2onnx", extra="export")
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.base import is_classifier

    estimator = getattr(model, "estimator", None)
    if estimator is None:
        raise ExportError(f"model {model.name!r} has no fitted estimator to export")
    name, array = next(iter(samples.items()))
    initial_types = [(name, FloatTensorType([None, int(array.shape[1])]))]
    options = {id(estimator): {"zipmap": False}} if is_classifier(estimator) else None
    try:
        try:
            onx = skl2onnx.convert_sklearn(
                estimator, initial_types=initial_types, options=options, target_opset=opset
            )
        except NameError as exc:
            if "zipmap" not in str(exc):
                raise
            # Classifiers without probabilities (e.g. LinearSVC) have no ZipMap to turn off.
            onx = skl2onnx.convert_sklearn(
                estimator, initial_types=initial_types, target_opset=opset
            )
    except RuntimeError as exc:
        if "Unable to find a shape calculator" in str(exc) or "converter" in str(exc):
            raise ExportError(
                f"skl2onnx has no converter for {type(estimator).__name__}: "
                f"{str(exc).splitlines()[0]}"
            ) from None
        raise
    out.write_bytes(onx.SerializeToString())
    expected = model.signature.output_names if model.signature else []
    produced = [o.name for o in onx.graph.output]
    # Classifiers come out as label + probabilities (the runtime's names); a regressor's single
    # output ("variable") takes the runtime's name.
    if len(produced) == 1 and len(expected) == 1:
        _rename_outputs(out, expected)


def _rename_outputs(path: Path, names: list[str]) -> None:
    """Give the graph's outputs ``names`` (in order) when the counts agree."""
    onnx = require("onnx", extra="export")
    proto = onnx.load(str(path))
    outputs = list(proto.graph.output)
    if len(outputs) != len(names) or [o.name for o in outputs] == names:
        return
    renames = {o.name: new for o, new in zip(outputs, names)}
    for node in proto.graph.node:
        for i, name in enumerate(node.output):
            if name in renames:
                node.output[i] = renames[name]
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
    for output in outputs:
        output.name = renames[output.name]
    onnx.save(proto, str(path))
