"""Batch files in and out, chunk by chunk: JSON lines, CSV/TSV, Parquet, ``.npy``.

:func:`predict_file` is what ``modelport predict`` runs; the readers and writers stream, so a
file larger than memory works.
"""

from __future__ import annotations

from .batch import columns_to_inputs, predict_file
from .readers import READERS, Reader, open_reader
from .writers import WRITERS, Writer, open_writer

__all__ = [
    "READERS",
    "WRITERS",
    "Reader",
    "Writer",
    "columns_to_inputs",
    "open_reader",
    "open_writer",
    "predict_file",
]
