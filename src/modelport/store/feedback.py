"""Feedback and reads on the log database, shared by :class:`PredictionLog` and the CLI."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ..errors import InvalidInputError, StoreUnavailableError, UnknownRequestError
from .db import Database, is_disconnect
from .records import validate_feedback

__all__ = ["read_predictions", "store_feedback"]


def store_feedback(
    db: Database,
    request_id: Any,
    value: Any,
    *,
    model: str | None = None,
    flush: Callable[[], object] | None = None,
    why_unknown: str = "never made, or not sampled",
) -> str:
    """Validate and store ground truth for a logged request; return its model.

    ``flush`` is called once before giving up on an id, for predictions still being written.
    """
    request_id, value = validate_feedback(request_id, value)
    if model is not None and (not isinstance(model, str) or not model):
        raise InvalidInputError(f"feedback model must be a non-empty string, got {model!r}")
    try:
        models = db.models_for_request(request_id)
        if flush is not None and (not models or (model is not None and model not in models)):
            flush()
            models = db.models_for_request(request_id)
        if model is not None:
            models = [m for m in models if m == model]
        if not models:
            where = f" for model {model!r}" if model else ""
            raise UnknownRequestError(
                f"no logged prediction with request id {request_id!r}{where} ({why_unknown})"
            )
        if len(models) > 1:
            raise InvalidInputError(
                f"request id {request_id!r} was logged by several models "
                f"({', '.join(models)}); name the model"
            )
        db.upsert_feedback(models[0], request_id, value)
    except Exception as exc:
        raise_if_unavailable(db, exc)
        raise
    return models[0]


def read_predictions(
    db: Database, model: str, since: float | None = None, until: float | None = None
) -> Iterator[dict[str, Any]]:
    """Logged predictions of ``model`` in ``[since, until)``, joined with their feedback."""
    try:
        yield from db.prediction_rows(model, since, until)
    except Exception as exc:
        raise_if_unavailable(db, exc)
        raise


def raise_if_unavailable(db: Database, exc: Exception) -> None:
    """Re-raise a connection failure as :class:`StoreUnavailableError`."""
    if is_disconnect(exc):
        raise StoreUnavailableError(
            f"the prediction log database {db.display_url} is unreachable: {type(exc).__name__}"
        ) from exc
