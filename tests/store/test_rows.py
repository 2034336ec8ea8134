"""A model call is stored as one row (``call_row``) and read back per request
(``requests_of``): each recorded request gets what its own record holds."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from modelport.store.inbox import Call, Inbox, runs
from modelport.store.rows import (
    CALL_COLUMNS,
    call_row,
    record_row,
    requests_of,
    row_as_dict,
    row_from_dict,
    tensors_json,
)


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


def stored(call: Call, max_input_bytes: int = 65536) -> dict[str, Any]:
    """The call's row as the database returns it (through a spool round trip, as JSON)."""
    row = call_row(call, max_input_bytes)
    assert row is not None and len(row) == len(CALL_COLUMNS)
    return json.loads(json.dumps(row_as_dict(row_from_dict(row_as_dict(row)))))


DTYPES = ["<f4", "<f8", "<f2", "<i8", "<i4", "|u1", "|i1", "|b1", "<u8"]


@pytest.mark.parametrize("seed", range(40))
def test_each_request_reads_back_what_its_own_record_holds(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 40))
    rows = [int(r) for r in rng.integers(1, 4, size=n)]
    total = sum(rows)

    def tensor() -> np.ndarray:
        dims = tuple(int(d) for d in rng.integers(0, 4, size=int(rng.integers(0, 3))))
        dtype = np.dtype(DTYPES[int(rng.integers(len(DTYPES)))])
        values = rng.standard_normal((total, *dims)) * 10 ** float(rng.uniform(-8, 8))
        if dtype.kind == "f" and values.size and rng.random() < 0.3:
            values.flat[0] = np.nan if rng.random() < 0.5 else np.inf
        if dtype.kind in "iub":
            values = np.clip(values, -100, 100)
        with np.errstate(invalid="ignore", over="ignore"):
            return values.astype(dtype)

    inputs = {f"in_{k}": tensor() for k in range(int(rng.integers(1, 4)))}
    if rng.random() < 0.3:
        inputs["words"] = np.array([f"w{k} é" for k in range(total)], dtype=object)
    outputs = {f"out é {k}": tensor() for k in range(int(rng.integers(0, 3)))}
    ids: list[str | None] = [f"r{k}" if rng.random() < 0.8 else None for k in range(n)]
    ids[0] = "first"
    metadata = [None if rng.random() < 0.5 else f'{{"k":{k}}}' for k in range(n)]
    call = call_of(inputs, outputs, ids, rows=rows, metadata=metadata)
    limit = int(rng.choice([10, 80, 65536]))
    items = list(requests_of(stored(call, limit)))
    records = list(call.records())
    assert [i["request_id"] for i in items] == [r[1] for r in records] == [i for i in ids if i]
    for item, record in zip(items, records):
        want_in = json.loads(tensors_json(record[9]))
        if item["inputs_truncated"]:
            want_in = {k: {"shape": v["shape"], "datatype": v["datatype"]}
                       for k, v in want_in.items()}  # fmt: skip
        assert json.loads(item["inputs"]) == want_in
        assert json.loads(item["outputs"]) == json.loads(tensors_json(record[10]))
        assert item["metadata"] == (json.loads(record[8]) if record[8] else {})
        assert item["latency_ms"] == pytest.approx(record[5])
        assert (item["version"], item["ts"], item["status"]) == ("7", 100.5, "ok")


def test_a_call_is_one_row_with_its_requests_packed() -> None:
    x = np.arange(8, dtype=np.float32).reshape(4, 2) / 3
    y = np.arange(4, dtype=np.int64)
    meta = ['{"u":1}', None, None, None]
    row = stored(call_of({"x": x}, {"y": y}, ["a", "b", None, "d"], metadata=meta))
    assert row["requests"] == 3 and json.loads(row["request_ids"]) == ["a", "b", "d"]
    assert json.loads(row["rows"]) == [1, 1, 1]
    # The sampled-out request's rows are not stored.
    assert json.loads(row["inputs"])["x"]["shape"] == [3, 2]
    assert json.loads(row["outputs"]) == {"y": {"shape": [3], "datatype": "<i8", "data": [0, 1, 3]}}
    assert json.loads(row["metadata"]) == [{"u": 1}, {}, {}]
    assert json.loads(row["latency_ms"]) == pytest.approx([500.0, 625.0, 875.0])
    assert (row["status"], row["error"], row["inputs_truncated"]) == ("ok", None, 0)
    assert len(row["call_id"]) == 32 and len(row["inputs_sha256"]) == 64
    d = list(requests_of(row))[2]
    assert d["inputs"] == '{"x":{"shape":[1,2],"datatype":"<f4","data":[2.0,2.3333333]}}'
    assert d["outputs"] == '{"y":{"shape":[1],"datatype":"<i8","data":[3]}}'


def test_rows_that_do_not_add_up_are_refused_by_name() -> None:
    call = call_of({"x": np.zeros((3, 1), np.float32)}, {"y": np.zeros((2, 1), np.float32)},
                   ["a", "b"], rows=[1, 2])  # fmt: skip
    with pytest.raises(ValueError, match=r"tensor 'y' has shape \[2, 1\].*2 requests have 3 rows"):
        call_row(call, 65536)


def test_a_call_with_no_request_to_record_has_no_row() -> None:
    x = ("x", "<f8", (2, 1), bytes(16))
    call = Call("m", "1", 1.0, [None, None], [0.5, 0.5], [1, 1], [None, None], [x], [x])
    assert call_row(call, 65536) is None


def test_a_lone_request_keeps_its_tensors_whole() -> None:
    """One request's outputs need not have its input rows (a scalar, a summary)."""
    row = stored(call_of({"x": np.zeros((1, 2), np.float32)}, {"y": np.float32(1.5)}, ["a"]))
    (item,) = requests_of(row)
    assert json.loads(item["outputs"]) == {"y": {"shape": [], "datatype": "<f4", "data": [1.5]}}
    assert json.loads(item["inputs"])["x"]["shape"] == [1, 2]


def test_inputs_are_summarised_above_the_limit_per_request() -> None:
    x = np.arange(40, dtype=np.int64).reshape(4, 10)
    whole = len(tensors_json([("x", "<i8", (4, 10), x.tobytes())]))
    call = call_of({"x": x}, {"y": x[:, :1]}, ["a", "b", "c", "d"])
    share = -(-whole // 4)  # the average per request, rounded up
    assert not stored(call, share)["inputs_truncated"]
    row = stored(call, share - 1)
    assert row["inputs_truncated"] and row["inputs_bytes"] == whole
    items = list(requests_of(row))
    assert [json.loads(i["inputs"]) for i in items] == [
        {"x": {"shape": [1, 10], "datatype": "<i8"}}
    ] * 4
    assert json.loads(items[3]["outputs"])["y"]["data"] == [30]  # outputs are kept whole


def test_a_failed_record_is_a_call_of_one_request() -> None:
    fields = ("rec-1", "req", "m", "2", 5.0, 3.5, "PredictionError", "boom", None,
              [("x", "<f4", (2, 2), np.ones((2, 2), np.float32).tobytes())], None)  # fmt: skip
    row = dict(zip(CALL_COLUMNS, record_row(fields, 65536)))
    assert (row["call_id"], row["requests"], row["rows"]) == ("rec-1", 1, "[2]")
    (item,) = requests_of(json.loads(json.dumps(row)))
    assert (item["status"], item["outputs"], item["latency_ms"]) == ("PredictionError", None, 3.5)
    assert json.loads(item["inputs"])["x"]["data"] == [1.0] * 4
