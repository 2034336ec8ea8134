"""Plain Python: any callable, or any object with a ``predict`` method, as a model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from ..config import ModelConfig
from ..model import Inputs, Model

__all__ = ["PythonModel"]


class PythonModel(Model):
    """Wrap a callable or an object with ``predict``; also the base for a ``model.py`` that
    brings its own ``load`` and ``predict`` and no weights file.

    ``predict`` receives what ``preprocess`` returned (named arrays by default) and may return
    an array, a list of arrays, or a dict of arrays.
    """

    framework: ClassVar[str] = "python"
    format_description: ClassVar[str] = "a Python model (model.py)"

    def __init__(
        self,
        target: Any = None,
        *,
        config: ModelConfig | None = None,
        **options: Any,
    ) -> None:
        path = target if isinstance(target, (str, Path)) else None
        super().__init__(path, config=config, **options)
        self.target: Any = None if path is not None else target
        if self.target is not None and self.config.name is None:
            self.name = getattr(self.target, "__name__", type(self.target).__name__).lower()

    def predict(self, inputs: Inputs) -> Any:
        if self.target is None:
            return super().predict(inputs)
        fn: Callable[[Any], Any] = (
            self.target.predict if hasattr(self.target, "predict") else self.target
        )
        if not isinstance(inputs, dict) or len(inputs) != 1:
            return fn(inputs)
        # A single-input model gets the bare array, as most callables expect.
        return fn(next(iter(inputs.values())))
