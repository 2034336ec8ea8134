"""Dask: DataFrames and Arrays on a real LocalCluster (2 worker processes x 1 thread)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import modelport
from modelport.integrations import cache_info, clear_cache
from tests.integrations.conftest import (
    IRIS,
    IRIS_FEATURES,
    ROWS,
    TEXTS,
    assert_answers,
    assert_batched,
    assert_rows_equal,
    batch_sizes,
    engine,
    expected_answers,
    images,
    iris_rows,
    read_predictions,
    run_example,
    write_rows,
)

pytestmark = pytest.mark.dask

dask = engine("dask", "dask")
dd = engine("dask.dataframe", "dask")
da = engine("dask.array", "dask")
distributed = engine("distributed", "dask")

from modelport.integrations.dask import predict_array, predict_frame  # noqa: E402


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            worker_dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


def _frame(features: np.ndarray, partitions: int = 8) -> Any:
    pdf = pd.DataFrame(features, columns=["f0", "f1", "f2", "f3"])
    pdf["id"] = np.arange(len(pdf))
    return dd.from_pandas(pdf, npartitions=partitions)


def test_scalar_columns_stack_into_the_input(
    client: Any, tiny_onnx: Path, features: np.ndarray, expected_y: np.ndarray
) -> None:
    ddf = _frame(features)
    out = predict_frame(ddf, tiny_onnx, columns=["f0", "f1", "f2", "f3"]).compute()
    out = out.sort_values("id")
    assert list(out.columns) == ["f0", "f1", "f2", "f3", "id", "y"]
    assert_rows_equal(out["y"].to_numpy(), expected_y)


def test_each_worker_loads_the_model_once(
    client: Any, tiny_onnx: Path, features: np.ndarray
) -> None:
    client.run(clear_cache)
    ddf = _frame(features, partitions=12)
    predict_frame(ddf, tiny_onnx, columns=["f0", "f1", "f2", "f3"], batch_size=4).compute()
    loads = [info["loads"] for info in client.run(cache_info).values()]
    assert len(loads) == 2
    assert sum(loads) >= 1
    assert all(n <= 1 for n in loads), f"loads per worker: {loads} for 12 partitions"


def test_multi_io_array_columns_and_prefix(
    client: Any,
    multi_io_onnx: Path,
    multi_inputs: dict[str, np.ndarray],
    expected_multi: dict[str, np.ndarray],
) -> None:
    pdf = pd.DataFrame({"a": list(multi_inputs["a"]), "b": list(multi_inputs["b"])})
    # Dask would turn object columns into strings; cells that hold arrays must stay arrays.
    with dask.config.set({"dataframe.convert-string": False}):
        ddf = dd.from_pandas(pdf, npartitions=3)
    out = predict_frame(ddf, multi_io_onnx, prefix="pred_", keep_columns=False).compute()
    assert list(out.columns) == ["pred_sum", "pred_argmax"]
    assert out["pred_argmax"].dtype == np.int64
    assert_rows_equal(out["pred_sum"].to_numpy(), expected_multi["sum"])
    assert_rows_equal(out["pred_argmax"].to_numpy(), expected_multi["argmax"])


def test_multi_io_from_scalar_columns(
    client: Any,
    multi_io_onnx: Path,
    multi_inputs: dict[str, np.ndarray],
    expected_multi: dict[str, np.ndarray],
) -> None:
    cols = {f"a{i}": multi_inputs["a"][:, i] for i in range(3)}
    cols |= {f"b{i}": multi_inputs["b"][:, i] for i in range(3)}
    ddf = dd.from_pandas(pd.DataFrame(cols), npartitions=4)
    mapping = {"a": ["a0", "a1", "a2"], "b": ["b0", "b1", "b2"]}
    out = predict_frame(ddf, multi_io_onnx, columns=mapping).compute()
    assert_rows_equal(out["sum"].to_numpy(), expected_multi["sum"])
    assert_rows_equal(out["argmax"].to_numpy(), expected_multi["argmax"])


def test_dask_array(
    client: Any, tiny_onnx: Path, features: np.ndarray, expected_y: np.ndarray
) -> None:
    darr = da.from_array(features, chunks=(20, 2))
    result = predict_array(darr, tiny_onnx)
    assert result.shape == (ROWS, 3)
    assert result.dtype == np.float32
    assert_rows_equal(result.compute(), expected_y)


def test_dask_array_picks_one_output(
    client: Any,
    multi_io_onnx: Path,
    tiny_onnx: Path,
) -> None:
    darr = da.zeros((10, 3), chunks=(4, 3))
    with pytest.raises(modelport.InvalidInputError, match=r"has 2 inputs \['a', 'b'\]"):
        predict_array(darr, multi_io_onnx)
    with pytest.raises(modelport.ConfigError, match=r"has no output 'nope'; it has \['y'\]"):
        predict_array(da.zeros((10, 4), chunks=(4, 4)), tiny_onnx, output="nope")


def test_bad_columns_are_named_and_the_cluster_keeps_working(
    client: Any, tiny_onnx: Path, features: np.ndarray, expected_y: np.ndarray
) -> None:
    ddf = _frame(features)
    with pytest.raises(modelport.InvalidInputError, match=r"no column\(s\) \['f9'\] in the table"):
        predict_frame(ddf, tiny_onnx, columns=["f0", "f1", "f2", "f9"])
    with pytest.raises(modelport.ConfigError, match=r"output column\(s\) \['y'\] already exist"):
        predict_frame(ddf.assign(y=1.0), tiny_onnx, columns=["f0"])
    # Wrong width only shows on the workers: the error comes back with its message.
    with pytest.raises(
        modelport.InvalidInputError,
        match=r"column 'f0' \(input 'x'\): expected 2 dimensions .* \(row 0 of a batch of \d+: f0=",
    ):
        predict_frame(ddf, tiny_onnx, columns=["f0"], batch_size=8).compute()
    text = ddf.assign(f3="a word")
    with pytest.raises(modelport.InvalidInputError, match=r"\(input 'x'\): expected FP32 numbers"):
        predict_frame(text, tiny_onnx, columns=["f0", "f1", "f2", "f3"]).compute()
    out = predict_frame(ddf, tiny_onnx, columns=["f0", "f1", "f2", "f3"]).compute()
    assert_rows_equal(out.sort_values("id")["y"].to_numpy(), expected_y)


def test_partitions_are_predicted_in_batches(
    client: Any, recording_model: tuple[Path, Path], features: np.ndarray
) -> None:
    directory, log = recording_model
    columns = ["f0", "f1", "f2", "f3"]
    out = predict_frame(
        _frame(features, 4), directory, columns=columns, batch_size=10, log=str(log)
    )
    assert_rows_equal(out.compute().sort_values("id")["y"].to_numpy(), features.sum(axis=1))
    assert_batched(log, ROWS, 10)


def _records(out: Any) -> list[dict[str, Any]]:
    return out.compute().sort_values("id").to_dict("records")  # type: ignore[no-any-return]


def test_the_contract_answers_each_row_as_model_payload(
    client: Any, text_dir: Path, image_dir: Path
) -> None:
    texts = dd.from_pandas(pd.DataFrame({"id": range(len(TEXTS)), "body": TEXTS}), npartitions=2)
    out = predict_frame(texts, text_dir, columns="body", batch_size=5)
    assert list(out.columns) == ["id", "body", "embedding"]
    assert_answers(_records(out), expected_answers("text", text_dir, TEXTS), "text")
    flowers = iris_rows()
    frame = dd.from_pandas(pd.DataFrame(flowers).assign(id=range(len(flowers))), npartitions=3)
    out = predict_frame(frame, IRIS)
    assert list(out.columns) == [*IRIS_FEATURES, "id", "species", "probabilities"]
    assert_answers(_records(out), expected_answers("iris", IRIS, flowers), "iris")
    raw = predict_frame(frame, IRIS, columns=IRIS_FEATURES, contract="tensors")
    assert list(raw.columns) == [*IRIS_FEATURES, "id", "label", "probabilities"]
    pictures = images()
    frame = dd.from_pandas(pd.DataFrame({"id": range(len(pictures)), "image": pictures}), 2)
    out = predict_frame(frame, image_dir, columns=["image"])
    payloads = [{"image": p} for p in pictures]
    assert_answers(_records(out), expected_answers("image", image_dir, payloads), "image")


def test_bad_rows_are_isolated_and_good_rows_written_once(
    client: Any, recording_model: tuple[Path, Path], features: np.ndarray
) -> None:
    directory, log = recording_model
    cells = [list(map(float, row)) for row in features]
    bad = {5, 40, 77}
    for i in bad:
        cells[i] = cells[i][:3]
    with dask.config.set({"dataframe.convert-string": False}):
        frame = dd.from_pandas(pd.DataFrame({"id": range(ROWS), "feats": cells}), npartitions=4)
    out = predict_frame(
        frame, directory, columns="feats", on_error="column", batch_size=10, log=str(log)
    )
    rows = _records(out)
    assert [r["id"] for r in rows] == list(range(ROWS))
    errors = {r["id"]: r["error"] for r in rows if not pd.isna(r["error"])}
    assert sorted(errors) == sorted(bad)
    for message in errors.values():
        assert "column 'feats' (input 'x'): dimension 1 must be 4, got shape [1, 3]" in message
    assert all(pd.isna(rows[i]["y"]) for i in bad)
    good = [i for i in range(ROWS) if i not in bad]
    assert_rows_equal(np.array([rows[i]["y"] for i in good]), features.sum(axis=1)[good])
    assert sum(batch_sizes(log)) == len(good), "each good row is predicted exactly once"
    nulls = predict_frame(frame, directory, columns="feats", on_error="null", log=str(log))
    assert list(nulls.columns) == ["id", "feats", "y"]
    assert [pd.isna(r["y"]) for r in _records(nulls)] == [i in bad for i in range(ROWS)]
    with pytest.raises(modelport.InvalidInputError, match=r"\(row \d+ of a batch of \d+: feats=\["):
        predict_frame(frame, directory, columns="feats", log=str(log)).compute()


def test_the_documented_parquet_line_writes_wide_outputs(
    client: Any, tiny_onnx: Path, features: np.ndarray, expected_y: np.ndarray, tmp_path: Path
) -> None:
    # docs/pipelines.md: a 3-wide output written with to_parquet's defaults, read back.
    rows = dd.read_parquet(write_rows(tmp_path / "rows.parquet", features))
    out = predict_frame(rows, tiny_onnx, columns=["f0", "f1", "f2", "f3"], batch_size=1024)
    out.to_parquet(tmp_path / "predictions")
    back = dd.read_parquet(tmp_path / "predictions", dtype_backend="pyarrow").compute()
    assert_rows_equal(back.sort_values("id")["y"].to_numpy(), expected_y)


def test_the_example_script(
    tiny_onnx: Path, features: np.ndarray, expected_y: np.ndarray, tmp_path: Path
) -> None:
    rows = write_rows(tmp_path / "rows.parquet", features)
    out = tmp_path / "out"
    run_example("dask_parquet.py", tiny_onnx, rows, out, "--columns", "f0,f1,f2,f3")
    assert_rows_equal(read_predictions(out), expected_y)
