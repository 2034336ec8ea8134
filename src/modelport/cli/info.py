"""``modelport info MODEL``: format, runtime and signature as a table."""

from __future__ import annotations

from pathlib import Path

import typer

from ._options import MODEL, TRUST


def register(app: typer.Typer) -> None:
    app.command()(info)


def info(model: Path = MODEL, trust: bool = TRUST) -> None:
    """Show a model's format, runtime and signature."""
    from rich.console import Console
    from rich.table import Table

    from ..loader import load

    loaded = load(model, trust=trust or None)
    console = Console()
    console.print(
        f"[bold]{loaded.name}[/bold] v{loaded.version}  framework: {loaded.framework}  "
        f"runtime: {type(loaded).__name__}  artifact: {loaded.path}"
    )
    if loaded.description:
        console.print(loaded.description)
    table = Table("", "name", "datatype", "shape")
    sig = loaded.signature
    for kind, specs in (
        ("input", sig.inputs if sig else ()),
        ("output", sig.outputs if sig else ()),
    ):
        for spec in specs:
            table.add_row(kind, spec.name, spec.datatype, str(list(spec.shape)))
    console.print(table)
    b = loaded.batching
    console.print(
        f"batching: max_batch_size={b.max_batch_size} max_queue_delay_ms={b.max_queue_delay_ms}"
    )
