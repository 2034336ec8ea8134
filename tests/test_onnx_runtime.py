from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import modelport
from tests.builders import mlp_reference, mlp_weights


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_outputs_equal_onnxruntime(tiny_onnx: Path, rng: np.random.Generator, batch: int) -> None:
    model = modelport.load(tiny_onnx)
    x = rng.standard_normal((batch, 4)).astype(np.float32)
    expected = ort.InferenceSession(str(tiny_onnx)).run(None, {"x": x})[0]
    np.testing.assert_array_equal(model.predict(x), expected)
    np.testing.assert_allclose(
        expected, mlp_reference(x, mlp_weights([4, 16, 3])), rtol=1e-5, atol=1e-5
    )
    assert model.predict_batch({"x": x})["y"].shape == (batch, 3)


def test_signature_read_from_graph(tiny_onnx: Path) -> None:
    model = modelport.load(tiny_onnx)
    assert model.name == "tiny"
    assert model.framework == "onnx"
    assert model.signature is not None
    assert model.signature.to_dict() == {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
    }


def test_multi_input_multi_output(multi_io_onnx: Path, rng: np.random.Generator) -> None:
    model = modelport.load(multi_io_onnx)
    a = rng.standard_normal((5, 3)).astype(np.float32)
    b = rng.integers(0, 10, (5, 3))
    out = model.predict({"a": a, "b": b})
    np.testing.assert_allclose(out["sum"], a + b.astype(np.float32))
    np.testing.assert_array_equal(out["argmax"], a.argmax(axis=1))
    with pytest.raises(modelport.InvalidInputError, match="2 inputs"):
        model.predict(a)


def test_thread_options_reach_the_session(tiny_onnx: Path) -> None:
    model = modelport.load(tiny_onnx, intra_op_threads=1, inter_op_threads=1)
    options = model.session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.inter_op_num_threads == 1


def test_call_runs_the_whole_contract(tiny_onnx: Path) -> None:
    model = modelport.load(tiny_onnx)
    out = model([0.5, -1.0, 2.0, 0.25])  # one example, no batch dimension: one is added
    assert out["y"].shape == (1, 3)
    expected = mlp_reference(
        np.array([[0.5, -1.0, 2.0, 0.25]], np.float32), mlp_weights([4, 16, 3])
    )
    np.testing.assert_allclose(out["y"], expected, rtol=1e-5, atol=1e-6)
