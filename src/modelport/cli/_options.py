"""Options several commands share."""

from __future__ import annotations

import typer

MODEL = typer.Argument(
    ..., help="Model artifact, model directory, or model repository.", show_default=False
)
TRUST = typer.Option(
    False, "--trust", help="Allow artifacts that run code when loaded (pickle, joblib)."
)
