"""Export a model to another format, with a numerical parity check against the original."""

from __future__ import annotations

from .onnx import ExportReport, to_onnx

__all__ = ["ExportReport", "to_onnx"]
