"""Ray Data: a callable class for ``Dataset.map_batches``, run by a pool of actors.

Each actor loads the model once, in its constructor, and predicts every batch it is given.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .._deps import require
from ..errors import ConfigError
from ._common import Columns, ModelSpec, gather_inputs, input_columns, predict_in_chunks

__all__ = ["ModelPredictor", "predict_dataset"]


class ModelPredictor:
    """``batch -> batch`` for ``map_batches(..., batch_format="numpy")``.

    The batch is a dict of column arrays; the result is the batch (unless ``keep_columns``
    is false) with one column per model output, named ``prefix + output``. ``columns`` says
    which columns feed which input (see :data:`~modelport.integrations.Columns`).
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | ModelSpec,
        *,
        columns: Columns = None,
        prefix: str = "",
        keep_columns: bool = True,
        batch_size: int | None = None,
        **options: Any,
    ) -> None:
        self.spec = ModelSpec.of(source, **options)
        self.model = self.spec.load()
        self.columns = columns
        self.prefix = prefix
        self.keep_columns = keep_columns
        self.batch_size = batch_size or max(1, self.model.batching.max_batch_size)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        mapping = input_columns(self.model, self.columns, list(batch))
        inputs = gather_inputs(self.model, mapping, batch.__getitem__)
        outputs = predict_in_chunks(self.model, inputs, self.batch_size)
        result = dict(batch) if self.keep_columns else {}
        for name, array in outputs.items():
            column = self.prefix + name
            if column in result:
                raise ConfigError(
                    f"output column {column!r} already exists in the dataset; "
                    "pass prefix= to rename the outputs"
                )
            result[column] = array
        return result


def predict_dataset(
    dataset: Any,
    source: str | os.PathLike[str] | ModelSpec,
    *,
    columns: Columns = None,
    prefix: str = "",
    keep_columns: bool = True,
    batch_size: int | None = None,
    concurrency: int = 1,
    num_cpus: float = 1.0,
    **options: Any,
) -> Any:
    """``dataset.map_batches`` with a pool of ``concurrency`` :class:`ModelPredictor` actors.

    ``batch_size`` defaults to the model's ``max_batch_size`` hint, read without loading the
    weights on the driver. ``options`` go to :func:`modelport.load` in every actor.
    """
    require("ray.data", "ray")
    spec = ModelSpec.of(source, **options)
    size = batch_size or spec.batch_size()
    return dataset.map_batches(
        ModelPredictor,
        fn_constructor_args=(spec,),
        fn_constructor_kwargs={
            "columns": columns,
            "prefix": prefix,
            "keep_columns": keep_columns,
            "batch_size": size,
        },
        batch_size=size,
        batch_format="numpy",
        concurrency=concurrency,
        num_cpus=num_cpus,
    )
