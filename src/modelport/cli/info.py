"""``modelport info MODEL``: format, runtime and signature as a table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._options import MODEL, TRUST

_POSITIONAL = (
    "no signature: {framework} carry none, so inputs are positional: name them input_0, "
    "input_1, ... in forward()'s order (a bare array is input_0); outputs are output_0, "
    "output_1, ... (or the keys of a returned dict).\n"
)
_DECLARE = (
    "To name and check them, declare a signature in {where}, for example:\n\n"
    "  signature:\n"
    "    inputs: [{{name: x, datatype: FP32, shape: [-1, 4]}}]\n"
    "    outputs: [{{name: y, datatype: FP32, shape: [-1, 3]}}]\n"
)


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
    sig = loaded.signature
    if sig is None or not (sig.inputs or sig.outputs):
        console.print(_no_signature(loaded, model), markup=False, highlight=False)
    else:
        table = Table("", "name", "datatype", "shape")
        for kind, specs in (("input", sig.inputs), ("output", sig.outputs)):
            for spec in specs:
                table.add_row(kind, spec.name, spec.datatype, str(list(spec.shape)))
        console.print(table)
    b = loaded.batching
    console.print(
        f"batching: max_batch_size={b.max_batch_size} max_queue_delay_ms={b.max_queue_delay_ms}"
    )


def _no_signature(loaded: Any, path: Path) -> str:
    """How to declare the signature a model lacks (TorchScript, plain PyTorch weights, ...)."""
    directory = path if path.is_dir() else path.parent
    where = directory / "modelport.yaml"
    if loaded.framework == "pytorch":
        from ..frameworks.torch import TorchScriptModel

        kind = "TorchScript files" if isinstance(loaded, TorchScriptModel) else "PyTorch weights"
        head = _POSITIONAL.format(framework=kind)
    else:
        head = "no signature: this model declares none, so its inputs are not checked.\n"
    return head + _DECLARE.format(where=where)
