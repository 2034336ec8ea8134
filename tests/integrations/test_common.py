"""What the engine integrations share; runs in the main suite, no engine needed."""

from __future__ import annotations

import importlib
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelport
from modelport import Signature, TensorSpec
from modelport.integrations import ModelSpec, cache_info, clear_cache
from modelport.integrations._common import (
    conform,
    describe_outputs,
    gather_inputs,
    input_columns,
    predict_in_chunks,
    split_rows,
    stack_rows,
)
from tests.integrations.conftest import assert_rows_equal


class _Pixels(modelport.Model):
    """A Python model with a 3-D input: the sum of each 2x2 image."""

    signature = Signature(
        inputs=(TensorSpec("img", "FP32", (-1, 2, 2)),),
        outputs=(TensorSpec("total", "FP32", (-1,)),),
    )

    def predict(self, inputs: Any) -> Any:
        return {"total": inputs["img"].sum(axis=(1, 2))}


class _DropsRows(modelport.Model):
    def predict(self, inputs: Any) -> Any:
        return {"out": np.zeros(1)}


class _Undeclared(modelport.Model):
    """No output signature: the outputs are found by running an example."""

    signature = Signature(inputs=(TensorSpec("x", "FP64", (-1, 2)),))

    def predict(self, inputs: Any) -> Any:
        x = inputs["x"]
        return {"pairs": np.stack([x, x], axis=1), "n": np.arange(len(x))}


def test_spec_is_small_picklable_and_resolved(tiny_onnx: Path) -> None:
    spec = ModelSpec.of(str(tiny_onnx), intra_op_threads=1)
    assert spec.path == str(tiny_onnx.resolve())
    assert spec.options == (("intra_op_threads", 1),)
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert hash(spec) == hash(ModelSpec.of(tiny_onnx, intra_op_threads=1))
    merged = ModelSpec.of(spec, graph_optimization_level="basic")
    assert dict(merged.options) == {"intra_op_threads": 1, "graph_optimization_level": "basic"}
    with pytest.raises(modelport.ConfigError, match=r"expected a model path or ModelSpec, got"):
        ModelSpec.of(modelport.load(tiny_onnx))  # type: ignore[arg-type]


def test_each_process_loads_a_spec_once(tiny_onnx: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(tiny_onnx.read_bytes())
    clear_cache()
    spec = ModelSpec.of(copy)
    first = spec.load()
    assert spec.load() is first
    assert pickle.loads(pickle.dumps(spec)).load() is first
    assert cache_info(copy)["loads"] == 1
    other = ModelSpec.of(copy, intra_op_threads=1).load()
    assert other is not first
    assert cache_info(copy)["loads"] == 2
    assert cache_info()["models"] == 2
    clear_cache()
    assert cache_info() == {"pid": cache_info()["pid"], "models": 0, "loads": 0}


def test_batch_size_hint_is_read_without_loading(tiny_onnx: Path, tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(tiny_onnx.read_bytes())
    (tmp_path / "modelport.yaml").write_text("batching: {max_batch_size: 48}\n")
    clear_cache()
    assert ModelSpec.of(tmp_path).batch_size() == 48
    assert cache_info()["loads"] == 0
    (tmp_path / "modelport.yaml").write_text("batching: {max_batch_size: 0}\n")
    assert ModelSpec.of(tmp_path).batch_size() == 1
    with pytest.raises(modelport.ArtifactNotFoundError, match=r"gone\.onnx"):
        ModelSpec.of(tmp_path / "gone.onnx").batch_size()


def test_column_mapping(tiny_onnx: Path, multi_io_onnx: Path) -> None:
    tiny, multi = modelport.load(tiny_onnx), modelport.load(multi_io_onnx)
    assert input_columns(tiny, None, ["x", "id"]) == {"x": ["x"]}
    assert input_columns(tiny, None, ["f0", "f1"]) == {"x": ["f0", "f1"]}
    assert input_columns(tiny, "f1", ["f0", "f1"]) == {"x": ["f1"]}
    assert input_columns(multi, None, ["b", "a"]) == {"a": ["a"], "b": ["b"]}
    assert input_columns(multi, {"a": "p", "b": ["q", "r"]}, ["p", "q", "r"]) == {
        "a": ["p"],
        "b": ["q", "r"],
    }


@pytest.mark.parametrize(
    ("columns", "available", "message"),
    [
        (None, ["p", "q"], r"expects inputs \['a', 'b'\] and the table has columns \['p', 'q'\]"),
        (["p"], ["p"], r"has inputs \['a', 'b'\]; map columns to each"),
        ({"a": "p", "c": "q"}, ["p", "q"], r"names input\(s\) \['c'\] that model"),
        ({"a": "p"}, ["p"], r"gives no column for input\(s\) \['b'\]"),
        ({"a": "p", "b": "z"}, ["p"], r"no column\(s\) \['z'\] in the table; it has \['p'\]"),
        ({"a": "p", "b": []}, ["p"], r"maps an input to no column"),
    ],
)
def test_column_mapping_errors(
    multi_io_onnx: Path, columns: Any, available: list[str], message: str
) -> None:
    with pytest.raises(modelport.InvalidInputError, match=message):
        input_columns(modelport.load(multi_io_onnx), columns, available)


def test_gather_stacks_casts_and_reshapes(
    tiny_onnx: Path, features: np.ndarray, expected_y: np.ndarray
) -> None:
    tiny = modelport.load(tiny_onnx)
    table = {f"f{i}": features[:, i].astype(np.float64) for i in range(4)}
    inputs = gather_inputs(tiny, {"x": ["f0", "f1", "f2", "f3"]}, table.__getitem__)
    assert inputs["x"].dtype == np.float32
    assert_rows_equal(tiny.predict_batch(inputs)["y"], expected_y)
    cells = np.empty(len(features), dtype=object)
    cells[:] = [list(r) for r in features]
    from_cells = gather_inputs(tiny, {"x": ["x"]}, {"x": cells}.__getitem__)
    np.testing.assert_array_equal(from_cells["x"], features)
    pixels = _Pixels()
    flat = np.arange(12, dtype=np.float64).reshape(3, 4)
    assert conform(pixels, "img", flat).shape == (3, 2, 2)
    assert predict_in_chunks(pixels, {"img": conform(pixels, "img", flat)}, 2)[
        "total"
    ].tolist() == [
        6.0,
        22.0,
        38.0,
    ]


def test_gather_errors_name_the_problem(tiny_onnx: Path) -> None:
    tiny = modelport.load(tiny_onnx)
    ragged = np.empty(2, dtype=object)
    ragged[:] = [[1.0, 2.0, 3.0, 4.0], [1.0]]
    with pytest.raises(modelport.InvalidInputError, match=r"column 'x': rows differ in length"):
        gather_inputs(tiny, {"x": ["x"]}, {"x": ragged}.__getitem__)
    words = {"w": np.array(["a", "b"]), "n": np.zeros(2)}
    with pytest.raises(modelport.InvalidInputError, match=r"input 'x': expected FP32 numbers"):
        gather_inputs(tiny, {"x": ["n", "w"]}, words.__getitem__)
    with pytest.raises(modelport.InvalidInputError, match=r"input 'x': dimension 1 must be 4"):
        gather_inputs(tiny, {"x": ["n", "n"]}, words.__getitem__)


def test_rows_in_rows_out(multi_io_onnx: Path, multi_inputs: dict[str, np.ndarray]) -> None:
    multi = modelport.load(multi_io_onnx)
    rows = [{"a": a, "b": b} for a, b in zip(multi_inputs["a"][:5], multi_inputs["b"][:5])]
    inputs = stack_rows(multi, rows)
    assert inputs["a"].shape == (5, 3)
    outputs = predict_in_chunks(multi, inputs, 2)
    split = split_rows(outputs)
    assert len(split) == 5
    whole = multi.predict_batch({n: a[:5] for n, a in multi_inputs.items()})
    for i, row in enumerate(split):
        np.testing.assert_array_equal(row["argmax"], whole["argmax"][i])
    with pytest.raises(modelport.InvalidInputError, match=r"an empty batch"):
        stack_rows(multi, [])
    with pytest.raises(modelport.InvalidInputError, match=r"row 1 has inputs \['a'\]"):
        stack_rows(multi, [rows[0], {"a": rows[1]["a"]}])
    with pytest.raises(modelport.InvalidInputError, match=r"rows differ in shape"):
        stack_rows(multi, [rows[0], {"a": np.zeros(2), "b": rows[1]["b"]}])


def test_an_output_with_the_wrong_row_count_is_refused() -> None:
    model = _DropsRows()
    with pytest.raises(modelport.PredictionError, match=r"returned outputs \{'out': \(1,\)\}"):
        predict_in_chunks(model, {"x": np.zeros((4, 2))}, 8)


def test_outputs_are_described_from_signature_or_by_probing(tiny_onnx: Path) -> None:
    (y,) = describe_outputs(modelport.load(tiny_onnx))
    assert (y.name, y.dtype, y.row_shape) == ("y", np.dtype(np.float32), (3,))
    pairs, n = describe_outputs(_Undeclared())
    assert (pairs.name, pairs.dtype, pairs.row_shape) == ("pairs", np.dtype(np.float64), (2, 2))
    assert (n.name, n.row_shape) == ("n", ())


def test_importing_integrations_imports_no_engine() -> None:
    code = (
        "import sys, modelport.integrations; "
        "heavy = {'apache_beam', 'pyspark', 'pyflink', 'ray', 'dask', 'distributed'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def hide(engine: str, module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """For this test, ``engine`` does not import (installed here or not), and
    ``modelport.integrations.<module>`` is imported afresh."""
    for name in [n for n in sys.modules if n.startswith(f"{engine}.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, engine, None)  # None: "import engine" raises ImportError
    monkeypatch.delitem(sys.modules, f"modelport.integrations.{module}", raising=False)


@pytest.mark.parametrize(("module", "engine"), [("beam", "apache_beam"), ("flink", "pyflink")])
def test_a_missing_engine_names_its_extra(
    module: str, engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hide(engine, module, monkeypatch)
    with pytest.raises(modelport.MissingDependencyError, match=rf"modelport\[{module}\]"):
        importlib.import_module(f"modelport.integrations.{module}")


@pytest.mark.parametrize(
    ("module", "call", "engine"),
    [
        ("dask", "predict_frame", "dask"),
        ("ray", "predict_dataset", "ray"),
        ("spark", "with_predictions", "pyspark"),
    ],
)
def test_a_missing_engine_names_its_extra_on_use(
    module: str, call: str, engine: str, tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hide(engine, module, monkeypatch)
    fn = getattr(importlib.import_module(f"modelport.integrations.{module}"), call)
    with pytest.raises(modelport.MissingDependencyError, match=rf"modelport\[{module}\]"):
        fn(None, tiny_onnx)
