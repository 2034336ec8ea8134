"""``modelport feedback REQUEST_ID VALUE``: store the ground truth of a logged prediction."""

from __future__ import annotations

from typing import Any

import typer

from ._log_db import LOG_DB, log_db_url


def register(app: typer.Typer) -> None:
    app.command()(feedback)


def parse_value(text: str) -> Any:
    """JSON if it parses (``2``, ``0.5``, ``true``, ``[1, 0]``), else the text as a label."""
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def feedback(
    request_id: str = typer.Argument(..., help="The request id of the logged prediction."),
    value: str = typer.Argument(
        ..., help="Ground truth: a number, a label, or a JSON list (one per row)."
    ),
    log_db: str | None = LOG_DB,
    model: str | None = typer.Option(
        None, "--model", help="The model, if several logged this request id."
    ),
) -> None:
    """Record the ground truth for a logged prediction."""
    from .._deps import require

    require("sqlalchemy", "store")
    from ..store.db import Database
    from ..store.feedback import store_feedback

    db = Database(log_db_url(log_db))
    try:
        stored_for = store_feedback(db, request_id, parse_value(value), model=model)
    finally:
        db.dispose()
    typer.echo(f"feedback stored for {stored_for} request {request_id}")
