"""The ``--log-db`` option shared by ``serve``, ``report`` and ``feedback``."""

from __future__ import annotations

import os
from pathlib import Path

import typer

LOG_DB = typer.Option(
    None,
    "--log-db",
    envvar="MODELPORT_LOG_DB",
    help="Prediction log database: a file path, sqlite:///PATH or postgresql://USER@HOST/DB. "
    "Default: predictions.db in the data directory ($MODELPORT_DATA_DIR, else "
    "$XDG_DATA_HOME/modelport or ~/.local/share/modelport).",
    show_default=False,
)


def data_dir() -> Path:
    """Where modelport keeps its files when no path is given."""
    explicit = os.environ.get("MODELPORT_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "modelport"


def log_db_url(value: str | None) -> str:
    """The ``--log-db`` value, or the default SQLite file in :func:`data_dir`."""
    return value if value else f"sqlite:///{data_dir() / 'predictions.db'}"
