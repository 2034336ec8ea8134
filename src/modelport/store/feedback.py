"""Feedback and reads on the log database, shared by :class:`PredictionLog` and the CLI."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import (
    InvalidInputError,
    ModelportError,
    StoreUnavailableError,
    UnknownRequestError,
)
from .db import Database, is_disconnect
from .records import FeedbackError, refusal, validate_feedback

__all__ = ["read_predictions", "store_feedback", "store_feedback_many"]


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
    stored, refused = _store(db, [(0, request_id, value)], model, flush, why_unknown)
    if refused:
        raise refused[0][2]
    return stored[0]


def store_feedback_many(
    db: Database,
    items: Sequence[tuple[int, Any, Any]],
    *,
    model: str | None = None,
    flush: Callable[[], object] | None = None,
    why_unknown: str = "never made, or not sampled",
) -> tuple[int, list[FeedbackError]]:
    """Store many ``(index, request_id, value)``: the good ones in one transaction, each bad
    one refused as :func:`store_feedback` would refuse it alone, reported by its ``index``.

    Returns the number stored and the refusals. A database that is down fails the whole call
    (:class:`StoreUnavailableError`), storing nothing.
    """
    stored, refused = _store(db, items, model, flush, why_unknown)
    errors = [refusal(i, rid, exc) for i, rid, exc in refused]
    return len(stored), errors


def _store(
    db: Database,
    items: Sequence[tuple[int, Any, Any]],
    model: str | None,
    flush: Callable[[], object] | None,
    why_unknown: str,
) -> tuple[list[str], list[tuple[int, Any, ModelportError]]]:
    """The model each stored item went to, and ``(index, request_id, error)`` per refusal."""
    if model is not None and (not isinstance(model, str) or not model):
        raise InvalidInputError(f"feedback model must be a non-empty string, got {model!r}")
    refused: list[tuple[int, Any, ModelportError]] = []
    valid: list[tuple[int, str, Any]] = []
    for i, request_id, value in items:
        try:
            valid.append((i, *validate_feedback(request_id, value)))
        except InvalidInputError as exc:
            refused.append((i, request_id, exc))

    def logged_by(models: dict[str, list[str]], request_id: str) -> list[str]:
        found = models.get(request_id, [])
        return [m for m in found if m == model] if model is not None else found

    rows: list[tuple[str, str, Any]] = []
    try:
        ids = [rid for _, rid, _ in valid]
        models = db.models_for_requests(ids) if ids else {}
        if flush is not None and any(not logged_by(models, rid) for rid in ids):
            flush()  # predictions still being written
            models = db.models_for_requests(ids)
        for i, rid, value in valid:
            candidates = logged_by(models, rid)
            if len(candidates) == 1:
                rows.append((candidates[0], rid, value))
            elif not candidates:
                where = f" for model {model!r}" if model else ""
                refused.append((i, rid, UnknownRequestError(
                    f"no logged prediction with request id {rid!r}{where} ({why_unknown})"
                )))  # fmt: skip
            else:
                refused.append((i, rid, InvalidInputError(
                    f"request id {rid!r} was logged by several models "
                    f"({', '.join(candidates)}); name the model"
                )))  # fmt: skip
        if rows:
            db.upsert_feedback_many(rows)
    except Exception as exc:
        raise_if_unavailable(db, exc)
        raise
    return [m for m, _, _ in rows], refused


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
