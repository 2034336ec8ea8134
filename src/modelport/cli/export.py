"""``modelport export onnx MODEL -o OUT``: convert to ONNX and check numerical parity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ..errors import ExportError
from ._options import MODEL, TRUST


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        name="export",
        help="Convert a model to another format, checking the result against the original.",
        no_args_is_help=True,
    )
    group.command("onnx")(onnx)
    app.add_typer(group)


def onnx(
    model: Path = MODEL,
    output: Path | None = typer.Option(
        None,
        "-o",
        "--output",
        help="Where to write the .onnx file (default for a Hugging Face directory: its "
        "model.onnx, which it then serves on).",
    ),
    tolerance: float = typer.Option(
        1e-4, "--tolerance", help="Largest absolute difference allowed between the outputs."
    ),
    rtol: float | None = typer.Option(
        None,
        "--rtol",
        help="Relative tolerance: a difference may be tolerance + rtol x |original| "
        "(default 0.001 for Hugging Face models, else 0).",
    ),
    opset: int | None = typer.Option(
        None, "--opset", help="ONNX opset version (default: the exporter's choice)."
    ),
    samples: Path | None = typer.Option(
        None,
        "--samples",
        help="Sample inputs for the parity check: .npy (one input) or .npz (named inputs). "
        "Default: generated from the model's signature.",
    ),
    trust: bool = TRUST,
) -> None:
    """Export a PyTorch, Keras, scikit-learn or Hugging Face model to ONNX and report the
    parity check."""
    from ..export import to_onnx
    from ..export.onnx import default_output

    if output is None and default_output(model) is None:
        raise ExportError(f"{model}: say where to write the .onnx file (-o OUT.onnx)")
    report = to_onnx(
        model,
        output,
        sample_inputs=_read_samples(samples) if samples is not None else None,
        opset=opset,
        tolerance=tolerance,
        rtol=rtol,
        trust=trust or None,
    )
    typer.echo(str(report))


def _read_samples(path: Path) -> Any:
    import numpy as np

    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path}: cannot read sample inputs (.npy or .npz): {exc}") from None
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        return {name: loaded[name] for name in loaded.files}
