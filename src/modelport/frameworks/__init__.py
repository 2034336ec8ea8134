"""One runtime per framework, found through a registry of import strings.

The core never imports a framework: :func:`runtime_class` imports a runtime module only when a
model of that format is loaded.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..errors import UnknownFormatError

if TYPE_CHECKING:
    from ..model import Model

__all__ = ["RUNTIMES", "runtime_class"]

RUNTIMES: dict[str, str] = {
    "onnx": "modelport.frameworks.onnx:OnnxModel",
    "torchscript": "modelport.frameworks.torch:TorchScriptModel",
    "torch_export": "modelport.frameworks.torch:ExportedProgramModel",
    "torch_state_dict": "modelport.frameworks.torch:StateDictModel",
    "tensorflow": "modelport.frameworks.tensorflow:SavedModelModel",
    "keras": "modelport.frameworks.tensorflow:KerasModel",
    "sklearn": "modelport.frameworks.sklearn:SklearnModel",
    "xgboost": "modelport.frameworks.xgboost:XGBoostModel",
    "lightgbm": "modelport.frameworks.lightgbm:LightGBMModel",
    "huggingface": "modelport.frameworks.huggingface:HuggingFaceModel",
    "python": "modelport.frameworks.python:PythonModel",
}
"""Format name -> ``module:Class`` of its runtime."""


def runtime_class(fmt: str) -> type[Model]:
    """Import and return the runtime class for format ``fmt``."""
    try:
        target = RUNTIMES[fmt]
    except KeyError:
        raise UnknownFormatError(
            f"unknown framework {fmt!r}; expected one of {', '.join(sorted(RUNTIMES))}"
        ) from None
    module, _, attr = target.partition(":")
    cls: type[Model] = getattr(importlib.import_module(module), attr)
    return cls
