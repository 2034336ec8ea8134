"""``modelport predict MODEL INPUT -o OUTPUT``: a batch file in, a file of predictions out."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from ._options import MODEL, TRUST


def register(app: typer.Typer) -> None:
    app.command()(predict)


def predict(
    model: Path = MODEL,
    input: Path = typer.Argument(
        ..., help="Rows to predict on: .csv, .tsv, .jsonl, .parquet or .npy.", show_default=False
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Where to write the outputs (format from the extension)."
    ),
    batch_size: int = typer.Option(
        1024, "--batch-size", "-b", min=1, help="Rows per model call (and in memory at once)."
    ),
    keep: list[str] = typer.Option(
        [], "--keep", "-k", help="Input column to copy to the output (e.g. an id); repeatable."
    ),
    trust: bool = TRUST,
    device: str | None = typer.Option(
        None, "--device", help="Where the model runs: cpu, cuda, cuda:N, auto.", show_default=False
    ),
) -> None:
    """Predict on every row of a file (JSON lines, CSV, Parquet, .npy), chunk by chunk."""
    from rich.console import Console

    from ..io import predict_file
    from ..loader import load

    console = Console(stderr=True)
    options: dict[str, Any] = {"device": device} if device else {}
    loaded = load(model, trust=trust or None, **options)
    started = time.perf_counter()  # reset once the files are open
    progress = _progress(console)
    task = progress.add_task(input.name, total=None, start=False)

    shown = False

    def start(total: int | None) -> None:
        # Only once the files opened: an error before that is one line, without a bar.
        nonlocal started, shown
        started = time.perf_counter()
        progress.update(task, total=total)
        progress.start_task(task)
        progress.start()
        shown = True

    try:
        rows = predict_file(
            loaded,
            input,
            output,
            batch_size=batch_size,
            keep=keep,
            on_start=start,
            on_rows=lambda n: progress.advance(task, n),
        )
    finally:
        if shown:  # stopping a bar never shown would print an empty line
            progress.stop()
    elapsed = max(time.perf_counter() - started, 1e-9)
    console.print(
        f"wrote {rows:,} rows to {output} in {elapsed:.2f} s ({rows / elapsed:,.0f} rows/s)"
    )


def _progress(console: Any) -> Any:
    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class RowsPerSecond(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            if not speed and task.elapsed:
                speed = task.completed / task.elapsed
            return Text(
                f"{speed:,.0f} rows/s" if speed else "- rows/s", style="progress.data.speed"
            )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f} rows"),
        RowsPerSecond(),
        TimeElapsedColumn(),
        console=console,
    )
