"""``modelport report MODEL``: traffic, latency, errors, accuracy and drift from the log."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import typer

from ..errors import ConfigError
from ._log_db import LOG_DB, log_db_url

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def register(app: typer.Typer) -> None:
    app.command()(report)


def parse_duration(text: str, option: str) -> float:
    """``90s``, ``15m``, ``24h``, ``7d``, ``2w`` → seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if not match or float(match[1]) <= 0:
        raise ConfigError(f"{option}: expected a duration like 90s, 15m, 24h or 7d, got {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def parse_since(text: str, option: str) -> float:
    """A duration back from now, or an ISO 8601 time (UTC unless it says otherwise)."""
    if re.fullmatch(r"\s*\d+(?:\.\d+)?\s*[smhdw]\s*", text):
        return time.time() - parse_duration(text, option)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(
            f"{option}: expected a duration (24h) or an ISO time (2026-01-31T12:00), got {text!r}"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def report(
    model: str = typer.Argument(..., help="The model's name, as it was served and logged."),
    log_db: str | None = LOG_DB,
    reference: Path | None = typer.Option(
        None, "--reference", help="Reference data set for drift (.npz, .npy or .csv)."
    ),
    reference_input: str | None = typer.Option(
        None,
        "--reference-input",
        help="Input name that a .npy or .csv reference is (a .csv header then names its "
        "columns in the report: sepal_length for input[0]).",
    ),
    html: Path | None = typer.Option(None, "--html", help="Also write an HTML page with plots."),
    prometheus: Path | None = typer.Option(
        None, "--prometheus", help="Also write the figures as Prometheus gauges (text format)."
    ),
    since: str | None = typer.Option(None, "--since", help="Start: 24h ago, or an ISO time."),
    until: str | None = typer.Option(None, "--until", help="End: a duration ago or ISO time."),
    window: str | None = typer.Option(
        None, "--window", help="Window length (15m, 1h, 1d); default: about 24 windows."
    ),
    output: str | None = typer.Option(
        None, "--output", help="Output compared with feedback (default: the first)."
    ),
    task: str = typer.Option(
        "auto", "--task", help="auto, classification (accuracy) or regression (MAE, RMSE)."
    ),
) -> None:
    """Report how a model does in production, from its prediction log."""
    from rich.console import Console

    from .._deps import require

    require("sqlalchemy", "store")
    from ..report import (
        build_report,
        load_reference,
        print_report,
        reference_names,
        write_html,
        write_textfile,
    )
    from ..store.db import Database
    from ..store.feedback import read_predictions

    if task not in ("auto", "classification", "regression"):
        raise ConfigError(f"--task: expected auto, classification or regression, got {task!r}")
    kind: Literal["auto", "classification", "regression"] = task  # type: ignore[assignment]
    start = parse_since(since, "--since") if since else None
    end = parse_since(until, "--until") if until else None
    window_s = parse_duration(window, "--window") if window else None
    ref = load_reference(reference, reference_input) if reference else None
    names = reference_names(reference, reference_input) if reference else {}
    db = Database(log_db_url(log_db))
    try:
        rows = read_predictions(db, model, start, end)
        result = build_report(
            model, rows, reference=ref, window_s=window_s, output=output, task=kind,
            feature_names=names,
        )
    finally:
        db.dispose()
    if ref is not None and not result.drift and result.requests:
        Console(stderr=True).print(
            "[yellow]warning: no reference feature matches a logged feature; features are "
            "named like x[0] (column 0 of input x)[/yellow]"
        )
    print_report(result, Console())
    if html is not None:
        write_html(result, html)
        typer.echo(f"HTML report written to {html}")
    if prometheus is not None:
        write_textfile(result, prometheus)
        typer.echo(f"Prometheus gauges written to {prometheus}")
