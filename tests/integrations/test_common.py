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
    answer_row,
    conform,
    describe_outputs,
    gather_inputs,
    input_columns,
    make_plan,
    predict_in_chunks,
    run_plan,
    split_rows,
    stack_rows,
)
from tests.integrations.conftest import (
    IRIS,
    IRIS_FEATURES,
    TEXTS,
    assert_answers,
    assert_rows_equal,
    batch_sizes,
    expected_answers,
    images,
    iris_rows,
)


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
    # Errors name the table's columns as well as the input they feed.
    with pytest.raises(
        modelport.InvalidInputError, match=r"columns \['n', 'w'\] \(input 'x'\): expected FP32"
    ):
        gather_inputs(tiny, {"x": ["n", "w"]}, words.__getitem__)
    with pytest.raises(
        modelport.InvalidInputError, match=r"columns \['n', 'n'\] \(input 'x'\): dimension 1"
    ):
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


def _run(path: Path, table: dict[str, Any], **options: Any) -> Any:
    """``run_plan`` on a table of columns, as an engine's worker runs it."""
    spec = ModelSpec.of(path, **options.pop("load", {}))
    model = spec.load()
    plan = make_plan(spec, model, options.pop("columns", None), list(table), **options)
    rows = len(next(iter(table.values())))
    return plan, run_plan(model, plan, lambda c: np.asarray(table[c]), rows)


def _as_rows(plan: Any, result: Any) -> list[dict[str, Any]]:
    names = [o.name for o in plan.outputs]
    return [{n: result.values[n][i] for n in names} for i in range(len(result.errors))]


def test_plans_run_the_contract_row_by_row(text_dir: Path, image_dir: Path) -> None:
    # Texts (mixed lengths) feed the text model's request input; its batch hooks tokenise.
    plan, result = _run(text_dir, {"body": TEXTS}, columns="body", batch_size=4)
    assert (plan.payloads, plan.answers) == (False, False)
    assert_answers(_as_rows(plan, result), expected_answers("text", text_dir, TEXTS), "text")
    # The iris demo defines preprocess and postprocess: rows are payloads, answers columns.
    flowers = iris_rows()
    table = {f: [r[f] for r in flowers] for f in IRIS_FEATURES} | {"id": list(range(12))}
    plan, result = _run(IRIS, table, batch_size=5)
    assert (plan.payloads, plan.answers) == (True, True)
    assert plan.result_names("p_") == ["p_species", "p_probabilities"]
    assert_answers(_as_rows(plan, result), expected_answers("iris", IRIS, flowers), "iris")
    plan, result = _run(IRIS, table, columns=IRIS_FEATURES, contract="tensors")
    assert [o.name for o in plan.outputs] == ["label", "probabilities"]
    assert result.values["probabilities"].shape == (12, 3)
    # The image model's own preprocess takes {"image": base64}; its outputs are tensors.
    pictures = images()
    plan, result = _run(image_dir, {"image": pictures}, columns=["image"])
    payloads = [{"image": p} for p in pictures]
    assert_answers(_as_rows(plan, result), expected_answers("image", image_dir, payloads), "image")


def test_answers_become_one_row_of_columns() -> None:
    assert answer_row([{"a": 1, "b": "x"}], 1) == {"a": 1, "b": "x"}
    row = answer_row({"label": np.array([2]), "scores": np.array([[0.1, 0.9]])}, 1)
    assert row["label"] == 2 and row["scores"].tolist() == [0.1, 0.9]
    assert answer_row("setosa", 1) == {"prediction": "setosa"}
    assert answer_row({"all": np.arange(3)}, 3)["all"].tolist() == [0, 1, 2]


def test_bad_rows_are_found_by_halving_and_good_rows_predicted_once(
    recording_model: tuple[Path, Path], features: np.ndarray
) -> None:
    directory, log = recording_model
    cells = np.empty(len(features), dtype=object)
    cells[:] = [row[:3] if i in (3, 50) else row for i, row in enumerate(features)]
    options = {"columns": "feats", "batch_size": 16, "load": {"log": str(log)}}
    plan, result = _run(directory, {"feats": cells}, on_error="column", **options)
    assert [i for i, e in enumerate(result.errors) if e] == [3, 50]
    assert result.errors[3] == (
        "InvalidInputError: column 'feats' (input 'x'): dimension 1 must be 4, got shape "
        "[1, 3] (expected [-1, 4])"
    )
    good = [i for i in range(len(features)) if i not in (3, 50)]
    assert_rows_equal(result.values["y"][good], features.sum(axis=1)[good])
    assert sum(batch_sizes(log)) == len(good)
    assert plan.result_names() == ["y", "error"]
    with pytest.raises(
        modelport.InvalidInputError, match=r"\(row 3 of a batch of \d+: feats=\[[-\d.]+, "
    ):
        _run(directory, {"feats": cells}, **options)
    with pytest.raises(modelport.ConfigError, match=r"on_error='skip': expected one of"):
        _run(directory, {"feats": cells}, on_error="skip", **options)
