"""Build small real models with the real frameworks, deterministically."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def mlp_weights(sizes: Sequence[int], seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        (
            (rng.standard_normal((i, o)) / np.sqrt(i)).astype(np.float32),
            (rng.standard_normal(o) * 0.1).astype(np.float32),
        )
        for i, o in itertools.pairwise(sizes)
    ]


def mlp_reference(x: np.ndarray, weights: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The MLP computed with numpy: the ground truth for the ONNX graph."""
    h = x
    for k, (w, b) in enumerate(weights):
        h = h @ w + b
        if k < len(weights) - 1:
            h = np.maximum(h, 0)
    return h


def onnx_mlp(path: Path, sizes: Sequence[int], seed: int = 0) -> Path:
    """An ONNX MLP (ReLU between layers) with input ``x`` and output ``y``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = mlp_weights(sizes, seed)
    nodes, inits = [], []
    h = "x"
    for k, (w, b) in enumerate(weights):
        inits += [numpy_helper.from_array(w, f"W{k}"), numpy_helper.from_array(b, f"B{k}")]
        out = "y" if k == len(weights) - 1 else f"h{k}"
        nodes.append(
            helper.make_node(
                "Gemm", [h, f"W{k}", f"B{k}"], [out if k == len(weights) - 1 else f"g{k}"]
            )
        )
        if k < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [f"g{k}"], [out]))
        h = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", sizes[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", sizes[-1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def onnx_multi_io(path: Path) -> Path:
    """Two inputs, two outputs: ``sum = a + float(b)``, ``argmax = argmax(a, axis=1)``."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Cast", ["b"], ["bf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["a", "bf"], ["sum"]),
        helper.make_node("ArgMax", ["a"], ["argmax"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "multi",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["batch", 3]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("argmax", TensorProto.INT64, ["batch"]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
