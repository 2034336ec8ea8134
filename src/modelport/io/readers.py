"""Chunked readers of batch input files: JSON lines, CSV/TSV, Parquet, ``.npy``.

Each reader yields :data:`Columns` of at most ``batch_size`` rows, so a file larger than memory
streams through: pyarrow's streaming CSV reader and Parquet row batches, ``numpy.load`` with
``mmap_mode="r"``, and JSON lines one line at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .._deps import require
from ..errors import InvalidInputError

__all__ = ["READERS", "Columns", "Reader", "open_reader"]

Columns = dict[str, np.ndarray]
"""Column name to values, all with the same first dimension (rows)."""


class Reader:
    """Iterate a file as :data:`Columns` chunks; ``num_rows`` is None when unknown upfront."""

    num_rows: int | None = None

    def __init__(self, path: Path, batch_size: int) -> None:
        self.path = path
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[Columns]:
        raise NotImplementedError


class JsonlReader(Reader):
    """One JSON object per line; values are scalars or (nested) lists of numbers."""

    def __iter__(self) -> Iterator[Columns]:
        names: list[str] | None = None
        rows: list[dict[str, Any]] = []
        with self.path.open("r", encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                row = self._parse(line, number)
                if names is None:
                    names = list(row)
                missing = [n for n in names if n not in row]
                if missing:
                    raise InvalidInputError(
                        f"{self.path}: line {number} lacks {missing} (line 1 had {names})"
                    )
                rows.append(row)
                if len(rows) == self.batch_size:
                    yield self._columns(names, rows)
                    rows = []
        if rows and names is not None:
            yield self._columns(names, rows)

    def _parse(self, line: str, number: int) -> dict[str, Any]:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{self.path}: line {number} is not JSON: {exc.msg}") from None
        if not isinstance(row, dict):
            raise InvalidInputError(
                f"{self.path}: line {number}: expected a JSON object, got {type(row).__name__}"
            )
        return row

    def _columns(self, names: list[str], rows: list[dict[str, Any]]) -> Columns:
        columns = {}
        for name in names:
            values = [r[name] for r in rows]
            try:
                columns[name] = np.asarray(values)
            except ValueError:
                raise InvalidInputError(
                    f"{self.path}: column {name!r} holds lists of different lengths"
                ) from None
        return columns


class _ArrowReader(Reader):
    def __init__(self, path: Path, batch_size: int) -> None:
        require("pyarrow", extra="io")  # before any output is opened or progress shown
        super().__init__(path, batch_size)

    def _batches(self) -> Iterator[Any]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Columns]:
        pa = require("pyarrow", extra="io")
        pending: list[Any] = []
        count = 0
        try:
            for batch in self._batches():
                pending.append(batch)
                count += batch.num_rows
                while count >= self.batch_size:
                    table = pa.Table.from_batches(pending)
                    yield _to_columns(table.slice(0, self.batch_size), self.path)
                    rest = table.slice(self.batch_size)
                    pending, count = rest.to_batches(), rest.num_rows
        except pa.ArrowInvalid as exc:
            raise InvalidInputError(f"{self.path}: {exc}") from None
        if count:
            yield _to_columns(pa.Table.from_batches(pending), self.path)


class CsvReader(_ArrowReader):
    """CSV (or TSV) with a header row, streamed in blocks by pyarrow."""

    delimiter = ","

    def _batches(self) -> Iterator[Any]:
        pa = require("pyarrow", extra="io")
        csv = require("pyarrow.csv", extra="io")
        parse = csv.ParseOptions(delimiter=self.delimiter)
        # Types are inferred from the first block only; widen integers (and all-empty
        # columns) to float so that a later 1.5 or empty cell does not fail the whole file.
        schema = csv.open_csv(self.path, parse_options=parse).schema
        widened = {
            f.name: pa.float64()
            for f in schema
            if pa.types.is_integer(f.type) or pa.types.is_null(f.type)
        }
        convert = csv.ConvertOptions(column_types=widened)
        yield from csv.open_csv(self.path, parse_options=parse, convert_options=convert)


class TsvReader(CsvReader):
    delimiter = "\t"


class ParquetReader(_ArrowReader):
    """Parquet, read one row batch at a time."""

    def __init__(self, path: Path, batch_size: int) -> None:
        super().__init__(path, batch_size)
        pq = require("pyarrow.parquet", extra="io")
        try:
            self._file = pq.ParquetFile(path)
        except Exception as exc:
            raise InvalidInputError(f"{path}: not a readable Parquet file: {exc}") from None
        self.num_rows = int(self._file.metadata.num_rows)

    def _batches(self) -> Iterator[Any]:
        yield from self._file.iter_batches(batch_size=self.batch_size)


class NpyReader(Reader):
    """One ``.npy`` array, memory-mapped; rows are its first axis. Its column is the file stem."""

    def __init__(self, path: Path, batch_size: int) -> None:
        super().__init__(path, batch_size)
        try:
            self._array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InvalidInputError(f"{path}: not a readable .npy file: {exc}") from None
        if self._array.ndim == 0:
            raise InvalidInputError(f"{path}: holds a scalar; expected rows along the first axis")
        self.num_rows = int(self._array.shape[0])

    def __iter__(self) -> Iterator[Columns]:
        for start in range(0, self._array.shape[0], self.batch_size):
            chunk = np.ascontiguousarray(self._array[start : start + self.batch_size])
            yield {self.path.stem: chunk}


def _to_columns(table: Any, path: Path) -> Columns:
    columns = {}
    for name, column in zip(table.column_names, table.columns):
        array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
        values = _numbers(array)
        if values is None:
            values = array.to_numpy(zero_copy_only=False)
        if values.dtype == object and len(values) and isinstance(values[0], np.ndarray):
            try:  # a list column (e.g. a tensor per row) becomes one more dimension
                values = np.stack(list(values))
            except ValueError:
                raise InvalidInputError(
                    f"{path}: column {name!r} holds lists of different lengths"
                ) from None
        columns[name] = values
    return columns


def _numbers(array: Any) -> np.ndarray | None:
    """A numeric Arrow array as numpy, straight from its buffer (nulls become NaN).

    ``Array.to_numpy`` would do, but it imports pandas (most of a second) on first use.
    """
    pa = require("pyarrow", extra="io")
    kind = array.type
    if pa.types.is_floating(kind):
        code = "f"
    elif pa.types.is_integer(kind) and not array.null_count:
        code = "i" if pa.types.is_signed_integer(kind) else "u"
    else:
        return None
    if array.null_count:
        array = array.fill_null(float("nan"))
    dtype = np.dtype(f"{code}{kind.bit_width // 8}")
    data = array.buffers()[1]
    return np.frombuffer(data, dtype=dtype, count=len(array), offset=array.offset * dtype.itemsize)


READERS: dict[str, type[Reader]] = {
    ".jsonl": JsonlReader,
    ".ndjson": JsonlReader,
    ".csv": CsvReader,
    ".tsv": TsvReader,
    ".parquet": ParquetReader,
    ".pq": ParquetReader,
    ".npy": NpyReader,
}
"""File extension to reader."""


def open_reader(path: Path, batch_size: int) -> Reader:
    """A reader for ``path``, chosen by its extension."""
    if batch_size < 1:
        raise InvalidInputError(f"batch size must be at least 1, got {batch_size}")
    cls = READERS.get(path.suffix.lower())
    if cls is None:
        raise InvalidInputError(
            f"{path}: unknown input file type {path.suffix or '(no extension)'!r}; "
            f"expected one of {', '.join(READERS)}"
        )
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such file")
    return cls(path, batch_size)
