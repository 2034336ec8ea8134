"""Apache Beam: a ``ModelHandler`` for ``apache_beam.ml.inference.base.RunInference``.

The handler holds only a :class:`~modelport.integrations.ModelSpec`; Beam calls
:meth:`ModelportModelHandler.load_model` once per worker process and shares the model
between its threads. Batches are sized by the model's batching hints unless told otherwise.

Bad examples: under ``RunInference(handler).with_exception_handling()`` each one goes to
``failed_inferences`` on its own, ``([example], (type, repr, traceback))``, and the good
examples of its batch are predicted and go on; without it, the first one fails the bundle
with its reason. ``keyed=True`` takes ``(key, example)`` elements itself, as
``KeyedModelHandler`` does, so that bad keyed examples are sent on one by one too.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._deps import require
from ..errors import ConfigError, PredictionError
from ..model import Model, maybe_single
from ._common import (
    Contract,
    Failures,
    ModelSpec,
    Prepared,
    check_options,
    custom_postprocess,
    custom_preprocess,
    predict_isolated,
    predict_prepared,
    prepare,
    short,
    split_rows,
    stack_rows,
)

__all__ = ["ModelportModelHandler"]

_base = require("apache_beam.ml.inference.base", "beam")
_pvalue = require("apache_beam.pvalue", "beam")
_core = require("apache_beam.transforms.core", "beam")
_ModelHandler: Any = _base.ModelHandler


class ModelportModelHandler(_ModelHandler):  # type: ignore[misc]
    """Runs any modelport model in ``RunInference``.

    For a model with its own ``preprocess`` or ``postprocess`` (and ``contract="payload"``,
    the default) an example is a payload, and its ``PredictionResult.inference`` is what
    ``model(example)`` answers. Otherwise (or with ``contract="tensors"``) an example is one
    row of request tensors: an array for a single-input model, or a mapping of input name to
    array; its inference is that row's outputs, ``{name: array}``, or only the array of
    ``output`` when one is named.

    ``max_batch_size`` defaults to the model's ``max_batch_size`` hint and
    ``min_batch_size`` to the same hint (at most ``max_batch_size``), so that Beam's adaptive
    batching starts from full batches rather than from one example. ``options`` go to
    :func:`modelport.load` on the workers.
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
        contract: Contract = "payload",
        keyed: bool = False,
        **options: Any,
    ) -> None:
        # Older Beam's ModelHandler.__init__ takes no batching arguments: keep them here.
        super().__init__()
        check_options(contract, "raise")
        self._spec = ModelSpec.of(source, **options)
        self._output = output
        self._contract = contract
        self._keyed = keyed
        hint = self._spec.batch_size()
        largest = max_batch_size or hint
        batching = {
            "min_batch_size": min_batch_size or min(hint, largest),
            "max_batch_size": largest,
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
        if self._output is not None and not self._payloads(model):
            sig = model.served_signature
            names = sig.output_names if sig else []
            if names and self._output not in names:
                raise ConfigError(
                    f"model {model.name!r} has no output {self._output!r}; it has {names}"
                )
        return model

    def _payloads(self, model: Model) -> bool:
        return self._contract == "payload" and (
            custom_preprocess(model) or custom_postprocess(model)
        )

    def run_inference(
        self,
        batch: Sequence[Any],
        model: Model,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[Any]:
        """One ``PredictionResult`` per good example, in order; each bad example goes to the
        dead letter of ``with_exception_handling`` (or is raised without it)."""
        self.validate_inference_args(inference_args)
        if self._keyed:
            keys = [element[0] for element in batch]
            examples = [element[1] for element in batch]
        else:
            examples = list(batch)
        dead_letter = _dead_letter()

        def where(i: int) -> str:
            return f"example {i} of a batch of {len(examples)}: {short(examples[i])}"

        failures = Failures(dead_letter is None, where)
        if self._payloads(model):
            inferences = self._answers(model, examples, failures)
        else:
            inferences = self._rows(model, examples, failures)
        results: list[Any] = []
        for i, example in enumerate(examples):
            if i in failures.errors:
                assert dead_letter is not None
                element = (keys[i], example) if self._keyed else example
                results.append(_dead(dead_letter, element, failures.errors[i]))
                continue
            result = _base.PredictionResult(example, inferences[i], self._spec.path)
            results.append((keys[i], result) if self._keyed else result)
        return results

    def _answers(self, model: Model, examples: Sequence[Any], failures: Failures) -> list[Any]:
        items: dict[int, Prepared] = {}
        for i, example in enumerate(examples):
            try:
                items[i] = prepare(model, example)
            except Exception as exc:
                failures.add(i, exc)
        outputs = predict_prepared(model, items, max(1, len(examples)), failures)
        answers: list[Any] = [None] * len(examples)
        for i, outs in sorted(outputs.items()):
            try:
                answer = model.postprocess(maybe_single(outs, items[i].single))
                answers[i] = self._pick(model, answer)
            except Exception as exc:
                failures.add(i, exc)
        return answers

    def _rows(self, model: Model, examples: Sequence[Any], failures: Failures) -> list[Any]:
        pieces = predict_isolated(
            model,
            lambda chosen: stack_rows(model, [examples[int(i)] for i in chosen]),
            len(examples),
            max(1, len(examples)),
            failures,
        )
        rows: list[Any] = [None] * len(examples)
        for chosen, outs in pieces:
            for i, row in zip(chosen, split_rows(outs)):
                rows[int(i)] = self._pick(model, row)
        return rows

    def _pick(self, model: Model, inference: Any) -> Any:
        if self._output is None:
            return inference
        if not isinstance(inference, Mapping) or self._output not in inference:
            got = list(inference) if isinstance(inference, Mapping) else type(inference).__name__
            raise PredictionError(f"model {model.name!r} answered {got}, not {self._output!r}")
        return inference[self._output]

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
        for element in batch:
            example = element[1] if self._keyed else element
            values = example.values() if isinstance(example, Mapping) else (example,)
            for value in values:
                array = np.asarray(value)
                total += array.nbytes if array.dtype != object else len(repr(value))
        return total

    def get_metrics_namespace(self) -> str:
        """Beam metrics for this handler are reported under ``modelport``."""
        return "modelport"


def _dead_letter() -> tuple[str, Any] | None:
    """``(tag, exception classes)`` of the ``with_exception_handling`` wrapper running this
    call, found on the stack; None when there is none, or when Beam's keyed wrapper stands
    between (it pairs keys with results in order): a bad example is then raised."""
    wrapper = getattr(_core, "_ExceptionHandlingWrapperDoFn", None)
    if wrapper is None:
        return None
    pairing = tuple(
        getattr(_base, name)
        for name in ("KeyedModelHandler", "MaybeKeyedModelHandler")
        if hasattr(_base, name)
    )
    frame = sys._getframe(1)
    for _ in range(30):
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        if isinstance(owner, pairing):
            return None
        if isinstance(owner, wrapper):
            tag = getattr(owner, "_dead_letter_tag", None)
            return (tag, getattr(owner, "_exc_class", Exception)) if tag else None
        frame = frame.f_back  # type: ignore[assignment]
    return None


def _dead(dead_letter: tuple[str, Any] | None, element: Any, exc: BaseException) -> Any:
    """A bad example for the dead letter, in the form Beam gives a failed batch."""
    assert dead_letter is not None
    tag, caught = dead_letter
    if not isinstance(exc, caught):
        raise exc
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return _pvalue.TaggedOutput(tag, ([element], (type(exc), repr(exc), lines)))
