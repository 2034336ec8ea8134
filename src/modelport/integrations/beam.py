"""Apache Beam: a ``ModelHandler`` for ``apache_beam.ml.inference.base.RunInference``.

The handler holds only a :class:`~modelport.integrations.ModelSpec`; Beam calls
:meth:`ModelportModelHandler.load_model` once per worker process and shares the model
between its threads. Batches are sized by the model's batching hints unless told otherwise.
Wrap it in ``KeyedModelHandler`` for ``(key, example)`` elements.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._deps import require
from ..errors import ConfigError, PredictionError
from ..model import Model
from ._common import ModelSpec, predict_in_chunks, split_rows, stack_rows

__all__ = ["ModelportModelHandler"]

_base = require("apache_beam.ml.inference.base", "beam")
_ModelHandler: Any = _base.ModelHandler


class ModelportModelHandler(_ModelHandler):  # type: ignore[misc]
    """Runs any modelport model in ``RunInference``.

    An example is one row: an array for a single-input model, or a mapping of input name to
    array. Each ``PredictionResult.inference`` is that row's outputs, ``{name: array}``, or
    only the array of ``output`` when one is named. ``max_batch_size`` defaults to the
    model's ``max_batch_size`` hint; ``options`` go to :func:`modelport.load` on the workers.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | ModelSpec,
        *,
        output: str | None = None,
        min_batch_size: int | None = None,
        max_batch_size: int | None = None,
        max_batch_duration_secs: int | None = None,
        large_model: bool = False,
        model_copies: int | None = None,
        **options: Any,
    ) -> None:
        # Older Beam's ModelHandler.__init__ takes no batching arguments: keep them here.
        super().__init__()
        self._spec = ModelSpec.of(source, **options)
        self._output = output
        batching = {
            "min_batch_size": min_batch_size,
            "max_batch_size": max_batch_size or self._spec.batch_size(),
            "max_batch_duration_secs": max_batch_duration_secs,
        }
        self._batching = {k: v for k, v in batching.items() if v is not None}
        self._large_model = large_model
        self._copies = model_copies

    @property
    def spec(self) -> ModelSpec:
        """What the workers load."""
        return self._spec

    def load_model(self) -> Model:
        """The model, loaded once per process (cached)."""
        model = self._spec.load()
        if self._output is not None:
            names = model.signature.output_names if model.signature else []
            if names and self._output not in names:
                raise ConfigError(
                    f"model {model.name!r} has no output {self._output!r}; it has {names}"
                )
        return model

    def run_inference(
        self,
        batch: Sequence[Any],
        model: Model,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[Any]:
        """One ``PredictionResult`` per example, in order."""
        self.validate_inference_args(inference_args)
        outputs = predict_in_chunks(model, stack_rows(model, batch), len(batch))
        if self._output is not None and self._output not in outputs:
            raise PredictionError(
                f"model {model.name!r} returned {list(outputs)}, not {self._output!r}"
            )
        rows = split_rows(outputs)
        return [
            _base.PredictionResult(
                example, row[self._output] if self._output else row, self._spec.path
            )
            for example, row in zip(batch, rows)
        ]

    def batch_elements_kwargs(self) -> dict[str, Any]:
        """Arguments for ``beam.BatchElements``: the batch size limits."""
        return dict(self._batching)

    def share_model_across_processes(self) -> bool:
        """One model per machine instead of per process (``large_model`` or ``model_copies``)."""
        return self._large_model or self._copies is not None

    def model_copies(self) -> int:
        """How many copies a machine holds when the model is shared across processes."""
        return self._copies or 1

    def validate_inference_args(self, inference_args: dict[str, Any] | None) -> None:
        """modelport models take no per-call arguments."""
        if inference_args:
            raise ConfigError(
                f"modelport models take no inference_args; got {sorted(inference_args)}"
            )

    def update_model_path(self, model_path: str | None = None) -> None:
        """Point at a new artifact (Beam's automatic model refresh)."""
        if model_path:
            self._spec = ModelSpec(str(Path(model_path).resolve()), self._spec.options)

    def get_num_bytes(self, batch: Sequence[Any]) -> int:
        """Bytes of array data in the batch."""
        total = 0
        for example in batch:
            values = example.values() if isinstance(example, dict) else (example,)
            total += sum(np.asarray(v).nbytes for v in values)
        return total

    def get_metrics_namespace(self) -> str:
        """Beam metrics for this handler are reported under ``modelport``."""
        return "modelport"
