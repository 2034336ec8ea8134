"""Encoding a model call's records at once (``call_rows``) writes what encoding each record on
its own (``row_of``) writes, and leaves the cases it does not take to that path."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modelport.store.inbox import Call, Inbox, runs
from modelport.store.rows import ROW_COLUMNS, ROW_WIDTH, call_rows, row_of

RECORD_ID = ROW_COLUMNS.index("record_id")


def call_of(
    inputs: dict[str, Any],
    outputs: dict[str, Any],
    ids: list[str | None],
    rows: list[int] | None = None,
    metadata: list[str | None] | None = None,
) -> Call:
    """The call as the writer reads it back from the inbox."""
    inbox = Inbox(10_000)
    n = len(ids)
    started = [100.0 - k / 8 for k in range(n)]
    inbox.put_call("m", "7", 100.5, ids, started, rows or [1] * n, metadata or [None] * n,
                   inputs, outputs)  # fmt: skip
    items, _, _ = inbox.take()
    (call,) = runs(items)
    assert isinstance(call, Call)
    return call


def rows_one_by_one(call: Call, max_input_bytes: int) -> list[list[Any]]:
    return [list(row_of(fields, max_input_bytes)) for fields in call.records()]


def split(flat: list[Any]) -> list[list[Any]]:
    return [flat[k : k + ROW_WIDTH] for k in range(0, len(flat), ROW_WIDTH)]


def same_but_ids(fast: list[list[Any]], slow: list[list[Any]]) -> None:
    """Equal rows but for the record ids, which are new (and distinct) for every row."""
    ids = [row[RECORD_ID] for row in fast + slow]
    assert len(set(ids)) == len(ids) and all(len(i) == 32 for i in ids)
    strip = [[v for k, v in enumerate(row) if k != RECORD_ID] for row in fast]
    assert strip == [[v for k, v in enumerate(row) if k != RECORD_ID] for row in slow]


DTYPES = ["<f4", "<f8", "<f2", "<i8", "<i4", "|u1", "|i1", "|b1", "<u8"]


@pytest.mark.parametrize("seed", range(40))
def test_a_call_encodes_as_its_records_do_one_by_one(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 40))

    def tensor() -> np.ndarray:
        dims = tuple(int(d) for d in rng.integers(0, 4, size=int(rng.integers(0, 3))))
        dtype = np.dtype(DTYPES[int(rng.integers(len(DTYPES)))])
        values = rng.standard_normal((n, *dims)) * 10 ** float(rng.uniform(-8, 8))
        if dtype.kind == "f" and values.size and rng.random() < 0.3:
            values.flat[0] = np.nan if rng.random() < 0.5 else np.inf
        if dtype.kind in "iub":
            values = np.clip(values, -100, 100)
        with np.errstate(invalid="ignore", over="ignore"):
            return values.astype(dtype)

    inputs = {f"in_{k}": tensor() for k in range(int(rng.integers(1, 4)))}
    outputs = {f"out é {k}": tensor() for k in range(int(rng.integers(0, 3)))}
    ids: list[str | None] = [f"r{k}" if rng.random() < 0.9 else None for k in range(n)]
    ids[0] = "first"
    metadata = [None if rng.random() < 0.5 else '{"k":1}' for _ in range(n)]
    call = call_of(inputs, outputs, ids, metadata=metadata)
    limit = int(rng.choice([10, 80, 65536]))
    fast = call_rows(call, limit)
    assert fast is not None
    same_but_ids(split(fast), rows_one_by_one(call, limit))


def test_the_common_call_gives_each_request_its_own_row() -> None:
    x = np.arange(8, dtype=np.float32).reshape(4, 2) / 3
    y = np.arange(4, dtype=np.int64)
    meta = ['{"u":1}', None, None, None]
    call = call_of({"x": x}, {"y": y}, ["a", "b", None, "d"], metadata=meta)
    fast = call_rows(call, 65536)
    assert fast is not None
    rows = {row[1]: dict(zip(ROW_COLUMNS, row)) for row in split(fast)}
    assert list(rows) == ["a", "b", "d"]
    assert rows["d"]["inputs"] == ('{"x":{"shape":[1,2],"datatype":"<f4","data":[2.0,2.3333333]}}')
    assert rows["d"]["outputs"] == '{"y":{"shape":[1],"datatype":"<i8","data":[3]}}'
    assert rows["a"]["metadata"] == '{"u":1}' and rows["b"]["metadata"] == "{}"
    assert rows["b"]["latency_ms"] == pytest.approx(625.0)


@pytest.mark.parametrize(
    "why, inputs, outputs, rows",
    [
        ("a request of two rows", {"x": np.zeros((3, 2), np.float32)}, {}, [2, 1]),
        ("text", {"w": np.array(["a", "b"], dtype=object)}, {}, None),
        ("complex numbers", {"c": np.zeros((2, 1), np.complex64)}, {}, None),
        ("big-endian", {"x": np.zeros((2, 1), ">f4")}, {}, None),
        ("rows that do not add up", {"x": np.zeros((2, 1), np.float32)},
         {"y": np.zeros((3, 1), np.float32)}, None),
        ("a scalar output", {"x": np.zeros((2, 1), np.float32)}, {"y": np.float32(1)}, None),
    ],
)  # fmt: skip
def test_what_a_call_cannot_encode_at_once_is_left_to_the_general_path(
    why: str, inputs: dict[str, Any], outputs: dict[str, Any], rows: list[int] | None
) -> None:
    call = call_of(inputs, outputs, ["a", "b"], rows=rows)
    assert call_rows(call, 65536) is None, why


def test_a_lone_request_is_left_whole_to_the_general_path() -> None:
    call = call_of({"x": np.zeros((1, 2), np.float32)}, {"y": np.float32(1)}, ["a"])
    assert call_rows(call, 65536) is None
