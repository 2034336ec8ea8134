"""``modelport feedback REQUEST_ID VALUE`` or ``--file labels.csv``: store the ground truth of
logged predictions."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from ..errors import ConfigError
from ._log_db import LOG_DB, log_db_url

CHUNK = 10_000
"""Rows stored per transaction from a file."""
SHOWN = 20
"""Refused rows printed one by one; the rest are counted."""


def register(app: typer.Typer) -> None:
    app.command()(feedback)


def parse_value(text: str) -> Any:
    """JSON if it parses (``2``, ``0.5``, ``true``, ``[1, 0]``), else the text as a label."""
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def read_rows(path: Path) -> Iterator[tuple[int, Any, Any] | dict[str, Any]]:
    """``(line, request_id, value)`` of a ``.csv``/``.tsv`` with ``request_id`` and ``value``
    columns (values as on the command line), or a ``.jsonl`` of such objects; a line that is
    not one comes as its refusal (``store.records.refusal``)."""
    import json

    from ..store.records import refusal

    suffix = path.suffix.lower()
    try:
        with path.open(encoding="utf-8", newline="") as f:
            if suffix == ".jsonl":
                for line, text in enumerate(f, 1):
                    if not text.strip():
                        continue
                    try:
                        row = json.loads(text)
                    except ValueError as exc:
                        yield refusal(line, None, f"not JSON: {exc}")
                        continue
                    if not isinstance(row, dict):
                        yield refusal(line, None, "not a JSON object {request_id, value}")
                        continue
                    yield line, row.get("request_id"), row.get("value")
                return
            if suffix not in (".csv", ".tsv"):
                raise ConfigError(f"{path.name}: use a .csv, .tsv or .jsonl file")
            import csv

            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            missing = {"request_id", "value"} - set(reader.fieldnames or ())
            if missing:
                raise ConfigError(
                    f"{path.name}: needs the columns request_id and value; its header has "
                    f"{reader.fieldnames or []}"
                )
            for row in reader:
                yield reader.line_num, row["request_id"], parse_value(row["value"] or "")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def feedback(
    request_id: str | None = typer.Argument(
        None, help="The request id of the logged prediction.", show_default=False
    ),
    value: str | None = typer.Argument(
        None, help="Ground truth: a number, a label, or a JSON list (one per row).",
        show_default=False,
    ),
    file: Path | None = typer.Option(
        None, "--file", "-f",
        help="Many at once: a .csv/.tsv with request_id and value columns, or a .jsonl of "
        "{request_id, value}; good rows are stored, each bad one is reported.",
    ),
    log_db: str | None = LOG_DB,
    model: str | None = typer.Option(
        None, "--model", help="The model, if several logged a request id."
    ),
) -> None:
    """Record the ground truth for logged predictions."""
    if (file is None) == (request_id is None) or (request_id is None) != (value is None):
        raise ConfigError("give REQUEST_ID VALUE, or --file FILE")
    from .._deps import require

    require("sqlalchemy", "store")
    from ..store.db import Database
    from ..store.feedback import store_feedback, store_feedback_many

    db = Database(log_db_url(log_db))
    try:
        if file is None:
            assert request_id is not None and value is not None
            stored_for = store_feedback(db, request_id, parse_value(value), model=model)
            typer.echo(f"feedback stored for {stored_for} request {request_id}")
            return
        stored, refused = 0, []
        chunk: list[tuple[int, Any, Any]] = []
        for item in itertools.chain(read_rows(file), [None]):  # streamed; None: the end
            if isinstance(item, dict):  # a line that was not a row
                refused.append(item)
            elif item is not None:
                chunk.append(item)
            if chunk and (item is None or len(chunk) == CHUNK):
                n, errors = store_feedback_many(db, chunk, model=model)
                stored, chunk = stored + n, []
                refused += errors
    finally:
        db.dispose()
    typer.echo(f"{file.name}: feedback stored for {stored} request(s), {len(refused)} refused")
    refused.sort(key=lambda e: int(e["index"]))
    for e in refused[:SHOWN]:
        typer.echo(f"  line {e['index']}: request id {e['request_id']!r}: {e['error']}", err=True)
    if len(refused) > SHOWN:
        typer.echo(f"  ... and {len(refused) - SHOWN} more", err=True)
    if refused:
        raise typer.Exit(1)
