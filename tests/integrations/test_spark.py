"""Apache Spark: the pandas UDF and the DataFrame helper on a real local[2] session."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import modelport
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

pytestmark = pytest.mark.spark

pyspark_sql = engine("pyspark.sql", "spark")
F = engine("pyspark.sql.functions", "spark")

from modelport.integrations.spark import predict_udf, with_predictions  # noqa: E402


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = (
        pyspark_sql.SparkSession.builder.master("local[2]")
        .appName("modelport-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "20")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()


def _frame(spark: Any, features: np.ndarray, partitions: int = 4) -> Any:
    pdf = pd.DataFrame(features.astype(np.float64), columns=["f0", "f1", "f2", "f3"])
    pdf.insert(0, "id", np.arange(len(pdf)))
    return spark.createDataFrame(pdf).repartition(partitions)


def test_helper_on_scalar_columns(
    spark: Any, tiny_onnx: Path, features: np.ndarray, expected_y: np.ndarray
) -> None:
    df = _frame(spark, features)
    out = with_predictions(df, tiny_onnx, columns=["f0", "f1", "f2", "f3"], prefix="pred_")
    assert out.columns == ["id", "f0", "f1", "f2", "f3", "pred_y"]
    rows = out.orderBy("id").collect()
    assert_rows_equal(np.array([r["pred_y"] for r in rows], np.float32), expected_y)


def test_udf_on_an_array_column_with_one_output(
    spark: Any, tiny_onnx: Path, features: np.ndarray, expected_y: np.ndarray
) -> None:
    pdf = pd.DataFrame({"id": np.arange(len(features)), "x": list(features)})
    df = spark.createDataFrame(pdf).repartition(3)
    udf = predict_udf(tiny_onnx, output="y", batch_size=8)
    rows = df.select("id", udf("x").alias("y")).orderBy("id").collect()
    assert_rows_equal(np.array([r["y"] for r in rows], np.float32), expected_y)


def test_multi_io_struct_output(
    spark: Any,
    multi_io_onnx: Path,
    multi_inputs: dict[str, np.ndarray],
    expected_multi: dict[str, np.ndarray],
) -> None:
    pdf = pd.DataFrame(
        {"id": np.arange(len(multi_inputs["a"])), "a": list(multi_inputs["a"])}
        | {f"b{i}": multi_inputs["b"][:, i] for i in range(3)}
    )
    df = spark.createDataFrame(pdf).repartition(3)
    udf = predict_udf(multi_io_onnx)
    rows = df.select("id", udf("a", F.array("b0", "b1", "b2")).alias("p")).orderBy("id").collect()
    assert_rows_equal(np.array([r["p"]["sum"] for r in rows], np.float32), expected_multi["sum"])
    assert_rows_equal(np.array([r["p"]["argmax"] for r in rows]), expected_multi["argmax"])
    helper = with_predictions(
        df, multi_io_onnx, columns={"a": "a", "b": ["b0", "b1", "b2"]}
    ).orderBy("id")
    assert dict(helper.dtypes)["argmax"] == "bigint"
    assert_rows_equal(np.array([r["argmax"] for r in helper.collect()]), expected_multi["argmax"])


PROBE = """
import os

import numpy as np

import modelport

LOADS = 0


class Probe(modelport.Model):
    signature = modelport.Signature(
        inputs=[modelport.TensorSpec("x", "FP32", (-1, 4))],
        outputs=[
            modelport.TensorSpec("pid", "INT64", (-1,)),
            modelport.TensorSpec("loads", "INT64", (-1,)),
        ],
    )

    def load(self):
        global LOADS
        LOADS += 1

    def predict(self, inputs):
        rows = len(inputs["x"])
        return {"pid": np.full(rows, os.getpid()), "loads": np.full(rows, LOADS)}
"""


def test_each_python_worker_loads_once(spark: Any, features: np.ndarray, tmp_path: Path) -> None:
    # The model itself reports which process answered and how often it was loaded there.
    (tmp_path / "model.py").write_text(PROBE)
    df = _frame(spark, features, partitions=8)
    udf = predict_udf(tmp_path, batch_size=4)
    rows = df.select(udf(F.array("f0", "f1", "f2", "f3")).alias("p")).collect()
    assert len(rows) == len(features)
    loads = {(r["p"]["pid"], r["p"]["loads"]) for r in rows}
    assert all(n == 1 for _, n in loads), loads
    assert len(loads) < 8, loads  # workers were reused across the 8 partitions


def test_errors_are_named_and_the_session_keeps_working(
    spark: Any, tiny_onnx: Path, features: np.ndarray, expected_y: np.ndarray
) -> None:
    df = _frame(spark, features)
    with pytest.raises(modelport.InvalidInputError, match=r"no column\(s\) \['f9'\]"):
        with_predictions(df, tiny_onnx, columns=["f0", "f9"])
    with pytest.raises(modelport.ConfigError, match=r"output column\(s\) \['y'\] already exist"):
        with_predictions(df.withColumn("y", F.lit(1)), tiny_onnx, columns=["f0"])
    with pytest.raises(modelport.ConfigError, match=r"no output 'nope'; it has \['y'\]"):
        predict_udf(tiny_onnx, output="nope")
    # A width mismatch surfaces on the executors; Spark re-raises it with the message, which
    # names the frame's columns, not only the model's input.
    with pytest.raises(
        Exception,
        match=r"columns \['f0', 'f1', 'f2'\] \(input 'x'\): dimension 1 must be 4, got shape "
        r"\[1, 3\].* \(row 0 of a batch of \d+: f0=",
    ):
        with_predictions(df, tiny_onnx, columns=["f0", "f1", "f2"]).collect()
    with pytest.raises(Exception, match=r"takes 1 column\(s\) \['x'\], the UDF was called"):
        df.select(predict_udf(tiny_onnx)("f0", "f1")).collect()
    with pytest.raises(Exception, match=r"column 'feats' \(input 'x'\): dimension 1 must be 4"):
        df.select(predict_udf(tiny_onnx, columns=["feats"])(F.array("f0", "f1"))).collect()
    out = with_predictions(df, tiny_onnx, columns=["f0", "f1", "f2", "f3"]).orderBy("id")
    assert_rows_equal(np.array([r["y"] for r in out.collect()], np.float32), expected_y)


def test_arrow_batches_are_cut_at_batch_size(
    spark: Any, recording_model: tuple[Path, Path], features: np.ndarray
) -> None:
    directory, log = recording_model
    df = _frame(spark, features)
    out = with_predictions(
        df, directory, columns=["f0", "f1", "f2", "f3"], batch_size=10, log=str(log)
    )
    # Not orderBy: Spark would run the UDF a second time to sample the sort's ranges.
    rows = sorted(out.collect(), key=lambda r: r["id"])
    assert_rows_equal(np.array([r["y"] for r in rows], np.float32), features.sum(axis=1))
    assert_batched(log, ROWS, 10)


def _collected(frame: Any) -> list[dict[str, Any]]:
    """The frame's rows as dicts, by ``id`` (sorted here: orderBy would run the UDF twice)."""
    return sorted((r.asDict() for r in frame.collect()), key=lambda r: r["id"])


def test_the_contract_answers_each_row_as_model_payload(
    spark: Any, text_dir: Path, image_dir: Path
) -> None:
    # Texts of mixed lengths in a string column: the text model's batch hooks tokenise them.
    texts = spark.createDataFrame(pd.DataFrame({"id": range(len(TEXTS)), "body": TEXTS}))
    out = with_predictions(texts.repartition(2), text_dir, columns="body", batch_size=5)
    assert out.columns == ["id", "body", "embedding"]
    assert_answers(_collected(out), expected_answers("text", text_dir, TEXTS), "text")
    # Iris rows become {column: value} payloads; the demo's postprocess names the species.
    flowers = iris_rows()
    frame = spark.createDataFrame(pd.DataFrame(flowers).assign(id=range(len(flowers))))
    out = with_predictions(frame, IRIS)
    assert out.columns == [*IRIS_FEATURES, "id", "species", "probabilities"]
    assert dict(out.dtypes)["probabilities"] == "map<string,double>"
    assert_answers(_collected(out), expected_answers("iris", IRIS, flowers), "iris")
    # The raw tensors only when asked for.
    raw = with_predictions(frame, IRIS, columns=IRIS_FEATURES, contract="tensors")
    assert raw.columns == [*IRIS_FEATURES, "id", "label", "probabilities"]
    assert dict(raw.dtypes)["probabilities"] == "array<float>"
    # Images as base64 text, through the image model's own preprocess.
    pictures = images()
    frame = spark.createDataFrame(pd.DataFrame({"id": range(len(pictures)), "image": pictures}))
    out = with_predictions(frame, image_dir, columns=["image"])
    payloads = [{"image": p} for p in pictures]
    assert_answers(_collected(out), expected_answers("image", image_dir, payloads), "image")


def test_bad_rows_are_isolated_and_good_rows_written_once(
    spark: Any, recording_model: tuple[Path, Path], features: np.ndarray
) -> None:
    directory, log = recording_model
    cells = [[float(v) for v in row] for row in features]
    bad = {5, 40, 77}
    for i in bad:
        cells[i] = cells[i][:3]
    frame = spark.createDataFrame(pd.DataFrame({"id": range(ROWS), "feats": cells}))
    frame = frame.repartition(3)
    out = with_predictions(
        frame, directory, columns="feats", on_error="column", batch_size=10, log=str(log)
    )
    assert out.columns == ["id", "feats", "y", "error"]
    rows = _collected(out)
    assert [r["id"] for r in rows] == list(range(ROWS))
    errors = {r["id"]: r["error"] for r in rows if r["error"] is not None}
    assert sorted(errors) == sorted(bad)
    for message in errors.values():
        assert "column 'feats' (input 'x'): dimension 1 must be 4, got shape [1, 3]" in message
    assert all(rows[i]["y"] is None for i in bad)
    good = [i for i in range(ROWS) if i not in bad]
    assert_rows_equal(np.array([rows[i]["y"] for i in good]), features.sum(axis=1)[good])
    assert sum(batch_sizes(log)) == len(good), "each good row is predicted exactly once"
    nulls = with_predictions(frame, directory, columns="feats", on_error="null", log=str(log))
    assert [r["y"] is None for r in _collected(nulls)] == [i in bad for i in range(ROWS)]
    assert nulls.columns == ["id", "feats", "y"]
    bad_row = r"column 'feats' \(input 'x'\): .* \(row \d+ of a batch of \d+: feats=\[-?\d"
    with pytest.raises(Exception, match=bad_row):
        with_predictions(frame, directory, columns="feats", log=str(log)).collect()


def test_the_example_script(
    tiny_onnx: Path, features: np.ndarray, expected_y: np.ndarray, tmp_path: Path
) -> None:
    rows = write_rows(tmp_path / "rows.parquet", features)
    out = tmp_path / "out"
    run_example("spark_parquet.py", tiny_onnx, rows, out, "--columns", "f0,f1,f2,f3")
    assert_rows_equal(read_predictions(out), expected_y)
