"""In-process calls name every missing and every unexpected input, as the servers do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import modelport

DEMO = Path(__file__).resolve().parents[1] / "demo" / "iris"


def test_predict_batch_with_a_wrong_name_names_both_sides() -> None:
    model = modelport.load(DEMO)  # input "input" FP32 [-1, 4]
    flower = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
    message = (
        "missing input(s) ['input'] and unexpected input(s) ['x']; the model expects ['input']"
    )
    with pytest.raises(modelport.InvalidInputError) as info:
        model.predict_batch({"x": flower})
    assert str(info.value) == message
    assert model.predict_batch({"input": flower})["label"].tolist() == [0]


def test_signature_check_names_missing_unexpected_or_both() -> None:
    signature = modelport.Signature(
        inputs=[modelport.TensorSpec("a", "FP32", (-1,)), modelport.TensorSpec("b", "FP32", (-1,))]
    )
    one = np.zeros(1, np.float32)
    cases = {
        "missing input(s) ['b']; the model expects ['a', 'b']": {"a": one},
        "unexpected input(s) ['c']; the model expects ['a', 'b']": {"a": one, "b": one, "c": one},
        "missing input(s) ['a', 'b'] and unexpected input(s) ['x']; the model expects ['a', 'b']": {
            "x": one
        },
    }
    for message, inputs in cases.items():
        for check in (signature.check_inputs, signature.check_input_names):
            with pytest.raises(modelport.InvalidInputError) as info:
                check(inputs)
            assert str(info.value) == message
    signature.check_inputs({"b": one, "a": one})  # order does not matter
    modelport.Signature().check_input_names({"anything": one})  # nothing declared


def test_torch_predict_names_both_sides_too(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.jit.script(torch.nn.Linear(3, 2)).save(str(tmp_path / "model.pt"))
    (tmp_path / "modelport.yaml").write_text(
        "signature:\n"
        "  inputs: [{name: a, datatype: FP32, shape: [-1, 3]}]\n"
        "  outputs: [{name: y, datatype: FP32, shape: [-1, 2]}]\n"
    )
    model = modelport.load(tmp_path)
    x = np.zeros((1, 3), np.float32)
    with pytest.raises(
        modelport.InvalidInputError, match=r"missing \['a'\] and unexpected \['x'\]"
    ):
        model.predict({"x": x})
    with pytest.raises(modelport.InvalidInputError) as info:
        model.predict_batch({"x": x})
    assert str(info.value).startswith("missing input(s) ['a'] and unexpected input(s) ['x']")
    assert model.predict_batch({"a": x})["y"].shape == (1, 2)
