"""Apache Flink (PyFlink): the pandas UDF on a local mini-cluster, streaming mode."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
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
    run_example,
)

pytestmark = pytest.mark.flink

datastream = engine("pyflink.datastream", "flink")
table = engine("pyflink.table", "flink")
common = engine("pyflink.common", "flink")

from modelport.integrations.flink import model_udf, predict_stream, predict_table  # noqa: E402


@pytest.fixture(scope="module")
def envs() -> Iterator[tuple[Any, Any]]:
    env = datastream.StreamExecutionEnvironment.get_execution_environment()
    env.set_runtime_mode(datastream.RuntimeExecutionMode.STREAMING)
    env.set_parallelism(2)
    # Small Arrow batches, so that one bundle is predicted in several batches.
    t_env = table.StreamTableEnvironment.create(env)
    t_env.get_config().set("python.fn-execution.arrow.batch.size", "16")
    t_env.get_config().set("python.fn-execution.bundle.size", "64")
    yield env, t_env


def _feature_stream(env: Any, features: np.ndarray) -> Any:
    rows = [common.Row(i, *map(float, r)) for i, r in enumerate(features)]
    types = common.Types.ROW_NAMED(
        ["id", "f0", "f1", "f2", "f3"], [common.Types.LONG()] + [common.Types.FLOAT()] * 4
    )
    return env.from_collection(rows, type_info=types)


def _collect(t_env: Any, stream_or_table: Any) -> list[Any]:
    """Run the job; its rows (with field names) by ``id``."""
    stream = stream_or_table
    if isinstance(stream, table.Table):
        stream = t_env.to_data_stream(stream)
    with stream.execute_and_collect() as results:
        return sorted(results, key=lambda r: r["id"])


def test_datastream_predictions_match_in_process(
    envs: tuple[Any, Any], tiny_onnx: Path, features: np.ndarray, expected_y: np.ndarray
) -> None:
    env, t_env = envs
    stream = _feature_stream(env, features)
    out = predict_stream(stream, tiny_onnx, table_env=t_env, columns=["f0", "f1", "f2", "f3"])
    rows = _collect(t_env, out)
    assert [r["id"] for r in rows] == list(range(len(features)))
    assert_rows_equal(np.array([r["y"] for r in rows], np.float32), expected_y)


def test_table_udf_multi_io(
    envs: tuple[Any, Any],
    multi_io_onnx: Path,
    multi_inputs: dict[str, np.ndarray],
    expected_multi: dict[str, np.ndarray],
) -> None:
    env, t_env = envs
    rows = [
        common.Row(i, [float(v) for v in a], [int(v) for v in b])
        for i, (a, b) in enumerate(zip(multi_inputs["a"], multi_inputs["b"]))
    ]
    types = common.Types.ROW_NAMED(
        ["id", "a", "b"],
        [
            common.Types.LONG(),
            common.Types.PRIMITIVE_ARRAY(common.Types.FLOAT()),
            common.Types.PRIMITIVE_ARRAY(common.Types.LONG()),
        ],
    )
    t = t_env.from_data_stream(env.from_collection(rows, type_info=types))
    out = predict_table(t, multi_io_onnx, prefix="pred_")
    assert out.get_schema().get_field_names() == ["id", "a", "b", "pred_sum", "pred_argmax"]
    got = _collect(t_env, out)
    assert_rows_equal(np.array([r["pred_sum"] for r in got], np.float32), expected_multi["sum"])
    assert_rows_equal(np.array([r["pred_argmax"] for r in got]), expected_multi["argmax"])


def test_udf_with_one_output_in_a_select(
    envs: tuple[Any, Any], tiny_onnx: Path, features: np.ndarray, expected_y: np.ndarray
) -> None:
    env, t_env = envs
    t = t_env.from_data_stream(_feature_stream(env, features))
    expr = table.expressions
    udf = model_udf(tiny_onnx, output="y", batch_size=5)
    out = t.select(
        expr.col("id"),
        udf(expr.array(expr.col("f0"), expr.col("f1"), expr.col("f2"), expr.col("f3"))).alias("y"),
    )
    rows = _collect(t_env, out)
    assert_rows_equal(np.array([r["y"] for r in rows], np.float32), expected_y)


def test_errors_are_named_and_the_cluster_keeps_working(
    envs: tuple[Any, Any], tiny_onnx: Path, features: np.ndarray, expected_y: np.ndarray
) -> None:
    env, t_env = envs
    t = t_env.from_data_stream(_feature_stream(env, features))
    with pytest.raises(modelport.InvalidInputError, match=r"no column\(s\) \['f9'\]"):
        predict_table(t, tiny_onnx, columns=["f0", "f9"])
    with pytest.raises(modelport.ConfigError, match=r"output column\(s\) \['y'\] already"):
        predict_table(t.add_columns(table.expressions.lit(1).alias("y")), tiny_onnx, columns=["f0"])
    with pytest.raises(modelport.ConfigError, match=r"no output 'nope'; it has \['y'\]"):
        model_udf(tiny_onnx, output="nope")
    with pytest.raises(
        Exception, match=r"columns \['f0', 'f1', 'f2'\] \(input 'x'\): dimension 1 must be 4"
    ):
        _collect(t_env, predict_table(t, tiny_onnx, columns=["f0", "f1", "f2"]))
    rows = _collect(t_env, predict_table(t, tiny_onnx, columns=["f0", "f1", "f2", "f3"]))
    assert_rows_equal(np.array([r["y"] for r in rows], np.float32), expected_y)


def test_the_udf_predicts_batches_within_a_bundle(
    envs: tuple[Any, Any], recording_model: tuple[Path, Path], features: np.ndarray
) -> None:
    env, t_env = envs
    directory, log = recording_model
    stream = _feature_stream(env, features)
    columns = ["f0", "f1", "f2", "f3"]
    out = predict_stream(
        stream, directory, table_env=t_env, columns=columns, batch_size=10, log=str(log)
    )
    rows = _collect(t_env, out)
    assert_rows_equal(np.array([r["y"] for r in rows], np.float32), features.sum(axis=1))
    assert_batched(log, ROWS, 10)
    # On a local mini-cluster PyFlink runs Python UDFs in this (the client's) process, its
    # "loopback" mode: docs/pipelines.md says so.
    assert {int(line.split()[0]) for line in log.read_text().splitlines()} == {os.getpid()}


def _table(t_env: Any, columns: dict[str, Any], rows: list[tuple[Any, ...]]) -> Any:
    types = table.DataTypes
    schema = types.ROW([types.FIELD(name, kind) for name, kind in columns.items()])
    return t_env.from_elements(rows, schema)


def _dicts(out: Any) -> list[dict[str, Any]]:
    """A table's rows as dicts, by ``id``: collected from the Table, not through a DataStream,
    whose conversion in PyFlink cannot read a NULL FLOAT or a NULL array (docs/pipelines.md)."""
    names = out.get_schema().get_field_names()
    with out.execute().collect() as results:
        return sorted((dict(zip(names, row)) for row in results), key=lambda r: r["id"])


def test_the_contract_answers_each_row_as_model_payload(
    envs: tuple[Any, Any], text_dir: Path, image_dir: Path
) -> None:
    _, t_env = envs
    types = table.DataTypes
    texts = _table(t_env, {"id": types.BIGINT(), "body": types.STRING()}, list(enumerate(TEXTS)))
    out = predict_table(texts, text_dir, columns="body", batch_size=5)
    assert_answers(_dicts(out), expected_answers("text", text_dir, TEXTS), "text")
    flowers = iris_rows()
    schema = {"id": types.BIGINT()} | {f: types.DOUBLE() for f in IRIS_FEATURES}
    frame = _table(t_env, schema, [(i, *f.values()) for i, f in enumerate(flowers)])
    out = predict_table(frame, IRIS)
    assert out.get_schema().get_field_names() == ["id", *IRIS_FEATURES, "species", "probabilities"]
    assert_answers(_dicts(out), expected_answers("iris", IRIS, flowers), "iris")
    raw = predict_table(frame, IRIS, columns=IRIS_FEATURES, contract="tensors")
    assert raw.get_schema().get_field_names() == ["id", *IRIS_FEATURES, "label", "probabilities"]
    pictures = images()
    frame = _table(
        t_env, {"id": types.BIGINT(), "image": types.STRING()}, list(enumerate(pictures))
    )
    out = predict_table(frame, image_dir, columns=["image"])
    payloads = [{"image": p} for p in pictures]
    assert_answers(_dicts(out), expected_answers("image", image_dir, payloads), "image")


def test_bad_rows_are_isolated_and_good_rows_written_once(
    envs: tuple[Any, Any], recording_model: tuple[Path, Path], features: np.ndarray
) -> None:
    _, t_env = envs
    directory, log = recording_model
    bad = {5, 40, 77}
    types = table.DataTypes
    rows = [(i, [float(v) for v in r[: 3 if i in bad else 4]]) for i, r in enumerate(features)]
    frame = _table(t_env, {"id": types.BIGINT(), "feats": types.ARRAY(types.FLOAT())}, rows)
    out = predict_table(
        frame, directory, columns="feats", on_error="column", batch_size=10, log=str(log)
    )
    got = _dicts(out)
    assert [r["id"] for r in got] == list(range(ROWS))
    errors = {r["id"]: r["error"] for r in got if r["error"] is not None}
    assert sorted(errors) == sorted(bad)
    for message in errors.values():
        assert "column 'feats' (input 'x'): dimension 1 must be 4, got shape [1, 3]" in message
    assert all(got[i]["y"] is None for i in bad)
    good = [i for i in range(ROWS) if i not in bad]
    assert_rows_equal(np.array([got[i]["y"] for i in good], np.float32), features.sum(axis=1)[good])
    assert sum(batch_sizes(log)) == len(good), "each good row is predicted exactly once"
    with pytest.raises(Exception, match=r"\(row \d+ of a batch of \d+: feats=\["):
        _collect(t_env, predict_table(frame, directory, columns="feats", log=str(log)))


NAN_MODEL = """
import numpy as np

import modelport


class Halves(modelport.Model):
    \"\"\"y: each row's mean, NaN where the row's first value is negative; v: [mean, y].\"\"\"

    signature = modelport.Signature(
        inputs=[modelport.TensorSpec("x", "FP32", (-1, 4))],
        outputs=[
            modelport.TensorSpec("y", "FP32", (-1,)),
            modelport.TensorSpec("v", "FP32", (-1, 2)),
        ],
    )

    def predict(self, inputs):
        x = inputs["x"]
        y = np.where(x[:, 0] < 0, np.nan, x.mean(axis=1)).astype(np.float32)
        return {"y": y, "v": np.stack([x.mean(axis=1), y], axis=1)}
"""


def test_nan_outputs_are_bad_rows_not_silent_nulls(
    envs: tuple[Any, Any], features: np.ndarray, tmp_path: Path
) -> None:
    # A pandas UDF cannot hand NaN to Flink: PyFlink turns it into NULL, and a NULL inside an
    # array then fails collect() with EOFError. The row is a bad row instead, named.
    env, t_env = envs
    (tmp_path / "model.py").write_text(NAN_MODEL)
    t = t_env.from_data_stream(_feature_stream(env, features))
    columns = ["f0", "f1", "f2", "f3"]
    got = _dicts(predict_table(t, tmp_path, columns=columns, on_error="column"))
    negative = features[:, 0] < 0
    assert [r["error"] is not None for r in got] == negative.tolist()
    assert all("output 'y' is NaN" in r["error"] for r in got if r["error"])
    assert all(r["y"] is None and r["v"] is None for r in got if r["error"])
    assert_rows_equal(
        np.array([r["y"] for r in got if not r["error"]], np.float32),
        features[~negative].mean(axis=1),
    )
    with pytest.raises(Exception, match=r"output 'y' is NaN, which a Flink pandas UDF cannot"):
        _collect(t_env, predict_table(t, tmp_path, columns=columns))


def test_the_example_script(
    tiny_onnx: Path, features: np.ndarray, expected_y: np.ndarray, tmp_path: Path
) -> None:
    rows = tmp_path / "rows.csv"
    lines = [",".join([str(i), *(repr(float(v)) for v in r)]) for i, r in enumerate(features)]
    rows.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    run_example("flink_csv.py", tiny_onnx, rows, out, "--columns", "f0,f1,f2,f3")
    written = [
        ln for f in sorted(out.rglob("*")) if f.is_file() for ln in f.read_text().split("\n")
    ]
    predicted = {}
    for line in filter(None, written):
        key, text = line.split(",", 1)
        predicted[int(key)] = [float(v) for v in text.strip('"[]').split(",")]
    assert sorted(predicted) == list(range(ROWS))
    assert_rows_equal(np.array([predicted[i] for i in range(ROWS)], np.float32), expected_y)
