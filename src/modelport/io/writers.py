"""Chunked writers of model outputs: JSON lines, CSV/TSV, Parquet, ``.npy``.

A writer takes output chunks (name to array, rows first) one at a time and writes to
``<file>.partial``, renamed over the destination only when :meth:`Writer.close` succeeds, so a
failed run never leaves a half-written file under the real name.
"""

from __future__ import annotations

import csv
import json
import os
import struct
from pathlib import Path
from typing import IO, Any

import numpy as np

from .._deps import require
from ..errors import InvalidInputError

__all__ = ["WRITERS", "Writer", "open_writer"]


class Writer:
    """Write output chunks to ``path``; use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        self.rows = 0

    def write(self, outputs: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        """Flush and close the partial file."""

    def close(self) -> None:
        self._finish()
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        try:
            self._finish()
        finally:
            self.partial.unlink(missing_ok=True)

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _text(values: np.ndarray) -> np.ndarray:
    """BYTES outputs as text for formats that store strings."""
    if values.dtype.kind == "O" or values.dtype.kind == "S":
        decoded: np.ndarray = np.vectorize(
            lambda v: v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v),
            otypes=[object],
        )(values)
        return decoded
    return values


def _flat_columns(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One column per scalar: an output of shape [rows, k] becomes ``name_0 .. name_{k-1}``."""
    columns = {}
    for name, values in outputs.items():
        values = _text(values)
        if values.ndim <= 1:
            columns[name] = values.reshape(-1)
            continue
        flat = values.reshape(values.shape[0], -1)
        for i in range(flat.shape[1]):
            columns[f"{name}_{i}"] = flat[:, i]
    return columns


class JsonlWriter(Writer):
    """One JSON object per row; tensor outputs become (nested) lists."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._fh: IO[str] = self.partial.open("w", encoding="utf-8")

    def write(self, outputs: dict[str, np.ndarray]) -> None:
        names = list(outputs)
        lists = [_text(outputs[n]).tolist() for n in names]
        for row in zip(*lists):
            self._fh.write(json.dumps(dict(zip(names, row))) + "\n")
        self.rows += len(lists[0]) if lists else 0

    def _finish(self) -> None:
        self._fh.close()


class CsvWriter(Writer):
    """CSV with a header; an output of shape [rows, k] is spread over k columns."""

    delimiter = ","

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        # The csv module rather than pyarrow's writer: pyarrow imports pandas on first use.
        self._fh: IO[str] = self.partial.open("w", encoding="utf-8", newline="")
        self._writer = csv.writer(self._fh, delimiter=self.delimiter)
        self._header: list[str] | None = None

    def write(self, outputs: dict[str, np.ndarray]) -> None:
        columns = _flat_columns(outputs)
        if self._header is None:
            self._header = list(columns)
            self._writer.writerow(self._header)
        lists = [_csv_values(v) for v in columns.values()]
        self._writer.writerows(zip(*lists))
        self.rows += len(lists[0]) if lists else 0

    def _finish(self) -> None:
        self._fh.close()


def _csv_values(values: np.ndarray) -> list[Any]:
    # float32 through Python floats prints 17 digits (0.9847031235694885); numpy's own
    # shortest repr of the float32 (0.9847031) reads back to the same value.
    if values.dtype.kind == "f" and values.dtype.itemsize < 8:
        values = values.astype(str)
    result: list[Any] = values.tolist()
    return result


class TsvWriter(CsvWriter):
    delimiter = "\t"


class ParquetWriter(Writer):
    """Parquet; an output of shape [rows, k, ...] is a fixed-size list column."""

    def __init__(self, path: Path) -> None:
        require("pyarrow", extra="io")  # before any input is read or progress shown
        super().__init__(path)
        self._writer: Any = None

    def write(self, outputs: dict[str, np.ndarray]) -> None:
        pa = require("pyarrow", extra="io")
        pq = require("pyarrow.parquet", extra="io")
        arrays = {}
        for name, values in outputs.items():
            values = _text(values)
            if values.ndim <= 1:
                arrays[name] = pa.array(values.reshape(-1))
            else:
                flat = values.reshape(values.shape[0], -1)
                arrays[name] = pa.FixedSizeListArray.from_arrays(
                    pa.array(flat.reshape(-1)), flat.shape[1]
                )
        table = pa.table(arrays)
        if self._writer is None:
            self._writer = pq.ParquetWriter(str(self.partial), table.schema)
        self._writer.write_table(table.cast(self._writer.schema))
        self.rows += table.num_rows

    def _finish(self) -> None:
        if self._writer is not None:
            self._writer.close()


class NpyWriter(Writer):
    """One output as one ``.npy`` array, appended chunk by chunk.

    The header is written first with room for any row count, then rewritten with the real
    shape on close (padding with spaces is part of the format).
    """

    _MAGIC = b"\x93NUMPY\x01\x00"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._fh: IO[bytes] = self.partial.open("wb")
        self._dtype: np.dtype[Any] | None = None
        self._tail: tuple[int, ...] = ()
        self._header_len = 0

    def write(self, outputs: dict[str, np.ndarray]) -> None:
        if len(outputs) != 1:
            raise InvalidInputError(
                f"{self.path}: a .npy file holds one array, and the model returns "
                f"{len(outputs)} outputs {list(outputs)}; write .csv, .parquet or .jsonl instead"
            )
        name, values = next(iter(outputs.items()))
        values = np.ascontiguousarray(values)
        if values.dtype.kind in "OSU":
            raise InvalidInputError(
                f"{self.path}: output {name!r} is text, which .npy cannot hold without pickle; "
                "write .csv, .parquet or .jsonl instead"
            )
        if self._dtype is None:
            self._dtype, self._tail = values.dtype, values.shape[1:]
            self._header_len = len(self._header(10**15))
            self._fh.write(b" " * self._header_len)
        elif values.dtype != self._dtype or values.shape[1:] != self._tail:
            raise InvalidInputError(
                f"{self.path}: output {name!r} changed from {self._dtype} {list(self._tail)} "
                f"to {values.dtype} {list(values.shape[1:])} between batches"
            )
        self._fh.write(values.tobytes())
        self.rows += values.shape[0]

    def _header(self, rows: int, pad_to: int = 0) -> bytes:
        assert self._dtype is not None
        fmt = np.lib.format
        text = (
            f"{{'descr': {fmt.dtype_to_descr(self._dtype)!r}, 'fortran_order': False, "
            f"'shape': {(rows, *self._tail)!r}, }}"
        )
        size = len(self._MAGIC) + 2 + len(text) + 1
        total = max(pad_to, size + (-size % 64))
        text = text + " " * (total - size) + "\n"
        return self._MAGIC + struct.pack("<H", len(text)) + text.encode("latin1")

    def _finish(self) -> None:
        if self._dtype is None:
            self._fh.close()
            with self.partial.open("wb") as fh:  # no rows: an empty array
                np.save(fh, np.zeros((0,)))
            return
        self._fh.seek(0)
        self._fh.write(self._header(self.rows, pad_to=self._header_len))
        self._fh.close()


WRITERS: dict[str, type[Writer]] = {
    ".jsonl": JsonlWriter,
    ".ndjson": JsonlWriter,
    ".csv": CsvWriter,
    ".tsv": TsvWriter,
    ".parquet": ParquetWriter,
    ".pq": ParquetWriter,
    ".npy": NpyWriter,
}
"""File extension to writer."""


def open_writer(path: Path) -> Writer:
    """A writer for ``path``, chosen by its extension."""
    cls = WRITERS.get(path.suffix.lower())
    if cls is None:
        raise InvalidInputError(
            f"{path}: unknown output file type {path.suffix or '(no extension)'!r}; "
            f"expected one of {', '.join(WRITERS)}"
        )
    if not path.parent.is_dir():
        raise InvalidInputError(f"{path}: the directory {path.parent} does not exist")
    return cls(path)
