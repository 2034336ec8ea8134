"""PyTorch runtimes against PyTorch itself: TorchScript, torch.export programs, state_dicts."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import modelport

torch = pytest.importorskip("torch")

NET_SOURCE = """
import torch


class Net(torch.nn.Module):
    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(4, hidden)
        self.fc2 = torch.nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))
"""


class TwoHeads(torch.nn.Module):
    """Two inputs (FP32 features, INT64 counts), two outputs returned as a tuple."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 2)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        score = self.fc(a + b.to(a.dtype))
        return score, score.argmax(dim=1)


class DictHeads(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.fc(x)
        return {"logits": logits, "proba": torch.softmax(logits, dim=1)}


def _import(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"net_{abs(hash(path))}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _net_dir(root: Path, source: str = NET_SOURCE, **kwargs: Any) -> tuple[Path, Any]:
    """A directory with model.py (the class) and weights.pt; returns it and the seeded net."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.py").write_text(textwrap.dedent(source))
    torch.manual_seed(0)
    net = _import(root / "model.py").Net(**kwargs).eval()
    torch.save(net.state_dict(), root / "weights.pt")
    return root, net


def _ref(net: Any, *args: np.ndarray) -> Any:
    with torch.no_grad():
        out = net(*(torch.from_numpy(a) for a in args))
    if isinstance(out, dict):
        return {k: v.numpy() for k, v in out.items()}
    if isinstance(out, tuple):
        return tuple(v.numpy() for v in out)
    return out.numpy()


@pytest.fixture(scope="module")
def state_dict_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    return _net_dir(tmp_path_factory.mktemp("torch") / "mlp")


@pytest.fixture(scope="module")
def torchscript_pt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    torch.manual_seed(1)
    net = TwoHeads().eval()
    path = tmp_path_factory.mktemp("torch") / "two_heads.pt"
    torch.jit.save(torch.jit.script(net), path)
    return path, net


@pytest.fixture(scope="module")
def exported_pt2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    torch.manual_seed(2)
    net = TwoHeads().eval()
    batch = torch.export.Dim("batch")
    example = (torch.randn(2, 3), torch.ones(2, 3, dtype=torch.int64))
    program = torch.export.export(net, example, dynamic_shapes=({0: batch}, {0: batch}))
    path = tmp_path_factory.mktemp("torch") / "two_heads.pt2"
    torch.export.save(program, path)
    return path, net


# -- parity with PyTorch ----------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 9, 64])
def test_state_dict_matches_torch(
    state_dict_dir: tuple[Path, Any], rng: np.random.Generator, batch: int
) -> None:
    root, net = state_dict_dir
    model = modelport.load(root)
    assert type(model).__name__ == "StateDictModel"
    x = rng.standard_normal((batch, 4)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(x), _ref(net, x))
    out = model.predict_batch({"input_0": x})
    assert list(out) == ["output_0"]
    assert out["output_0"].shape == (batch, 3)


def test_state_dict_casts_bare_float64_to_the_module_dtype(
    state_dict_dir: tuple[Path, Any], rng: np.random.Generator
) -> None:
    root, net = state_dict_dir
    model = modelport.load(root / "weights.pt")
    x = rng.standard_normal((3, 4))  # float64, as numpy makes by default
    np.testing.assert_array_equal(model.predict(x), _ref(net, x.astype(np.float32)))


def test_safetensors_with_module_named_in_config(tmp_path: Path, rng: np.random.Generator) -> None:
    from safetensors.torch import save_file

    two_classes = NET_SOURCE + "\n\nclass Other(torch.nn.Module):\n    pass\n"
    root, net = _net_dir(tmp_path / "st", two_classes, hidden=8)
    (root / "weights.pt").unlink()
    save_file(net.state_dict(), root / "weights.safetensors")
    with pytest.raises(modelport.ConfigError, match=r"several: \['Net', 'Other'\]"):
        modelport.load(root)
    (root / "modelport.yaml").write_text(
        "name: st\nruntime: {module: Net, module_kwargs: {hidden: 8}}\n"
        "signature:\n"
        "  inputs: [{name: features, datatype: FP32, shape: [-1, 4]}]\n"
        "  outputs: [{name: scores, datatype: FP32, shape: [-1, 3]}]\n"
    )
    model = modelport.load(root)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    out = model.predict({"features": x})
    np.testing.assert_array_equal(out["scores"], _ref(net, x))
    assert model({"features": x.tolist()})["scores"].shape == (5, 3)


def test_build_module_from_the_users_model_class(tmp_path: Path, rng: np.random.Generator) -> None:
    root, net = _net_dir(tmp_path / "custom")
    (root / "model.py").write_text(
        textwrap.dedent(NET_SOURCE)
        + textwrap.dedent(
            """
            import numpy as np
            import modelport


            class Classifier(modelport.Model):
                def build_module(self):
                    return Net()

                def postprocess(self, outputs):
                    return {"label": outputs["output_0"].argmax(axis=1)}
            """
        )
    )
    model = modelport.load(root)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(x), _ref(net, x))
    np.testing.assert_array_equal(model(x)["label"], _ref(net, x).argmax(axis=1))


@pytest.mark.parametrize("batch", [1, 16])
def test_torchscript_multi_io_matches_torch(
    torchscript_pt: tuple[Path, Any], rng: np.random.Generator, batch: int
) -> None:
    path, net = torchscript_pt
    model = modelport.load(path)
    assert type(model).__name__ == "TorchScriptModel"
    a = rng.standard_normal((batch, 3)).astype(np.float32)
    b = rng.integers(0, 5, (batch, 3))
    out = model.predict({"input_0": a, "input_1": b})
    score, label = _ref(net, a, b)
    np.testing.assert_array_equal(out["output_0"], score)
    np.testing.assert_array_equal(out["output_1"], label)
    assert out["output_1"].dtype == np.int64


def test_torchscript_inputs_follow_a_declared_signature(
    torchscript_pt: tuple[Path, Any], tmp_path: Path, rng: np.random.Generator
) -> None:
    path, net = torchscript_pt
    (tmp_path / "two.pt").write_bytes(path.read_bytes())
    (tmp_path / "modelport.yaml").write_text(
        "signature:\n"
        "  inputs: [{name: a, datatype: FP32, shape: [-1, 3]},"
        " {name: b, datatype: INT64, shape: [-1, 3]}]\n"
        "  outputs: [{name: score, datatype: FP32, shape: [-1, 2]},"
        " {name: label, datatype: INT64, shape: [-1]}]\n"
    )
    model = modelport.load(tmp_path)
    a = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.integers(0, 5, (4, 3)).astype(np.int32)  # cast to the declared INT64
    out = model.predict({"b": b, "a": a})  # order of the dict does not matter
    score, label = _ref(net, a, b.astype(np.int64))
    np.testing.assert_array_equal(out["score"], score)
    np.testing.assert_array_equal(out["label"], label)
    with pytest.raises(modelport.InvalidInputError, match=r"missing \['b'\]"):
        model.predict({"a": a})
    with pytest.raises(modelport.InvalidInputError, match="dimension 1 must be 3"):
        model.predict({"a": a[:, :2], "b": b[:, :2]})
    np.testing.assert_array_equal(model.predict({"a": a, "b": b})["score"], score)


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_exported_program_matches_torch(
    exported_pt2: tuple[Path, Any], rng: np.random.Generator, batch: int
) -> None:
    path, net = exported_pt2
    model = modelport.load(path)
    assert type(model).__name__ == "ExportedProgramModel"
    a = rng.standard_normal((batch, 3)).astype(np.float32)
    b = rng.integers(0, 5, (batch, 3))
    out = model.predict({"a": a, "b": b})
    score, label = _ref(net, a, b)
    np.testing.assert_array_equal(out["output_0"], score)
    np.testing.assert_array_equal(out["output_1"], label)


def test_exported_program_signature_comes_from_the_program(
    exported_pt2: tuple[Path, Any],
) -> None:
    model = modelport.load(exported_pt2[0])
    assert model.signature is not None
    assert model.signature.to_dict() == {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "b", "datatype": "INT64", "shape": [-1, 3]},
        ],
        "outputs": [
            {"name": "output_0", "datatype": "FP32", "shape": [-1, 2]},
            {"name": "output_1", "datatype": "INT64", "shape": [-1]},
        ],
    }


def test_exported_dict_outputs_are_named_by_their_keys(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    torch.manual_seed(3)
    net = DictHeads().eval()
    program = torch.export.export(
        net, (torch.randn(2, 4),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, tmp_path / "heads.pt2")
    model = modelport.load(tmp_path / "heads.pt2")
    assert model.signature is not None
    assert model.signature.output_names == ["logits", "proba"]
    x = rng.standard_normal((5, 4)).astype(np.float32)
    out = model.predict(x)
    ref = _ref(net, x)
    np.testing.assert_array_equal(out["logits"], ref["logits"])
    np.testing.assert_array_equal(out["proba"], ref["proba"])


def test_dict_outputs_of_a_plain_module(tmp_path: Path, rng: np.random.Generator) -> None:
    torch.manual_seed(4)
    net = DictHeads().eval()
    torch.save(net.state_dict(), tmp_path / "w.pt")
    model = modelport.load(tmp_path / "w.pt", module=DictHeads)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    out = model.predict(x)
    np.testing.assert_array_equal(out["proba"], _ref(net, x)["proba"])


# -- bad inputs: a clear error, and the model keeps working -----------------------------------


def test_bad_inputs_are_named(exported_pt2: tuple[Path, Any], rng: np.random.Generator) -> None:
    model = modelport.load(exported_pt2[0])
    a = rng.standard_normal((2, 3)).astype(np.float32)
    b = np.ones((2, 3), np.int64)
    with pytest.raises(modelport.InvalidInputError, match="input 'a': dimension 1 must be 3"):
        model.predict({"a": a[:, :2], "b": b})
    with pytest.raises(modelport.InvalidInputError, match=r"input 'b'.*text"):
        model.predict({"a": a, "b": np.array([["x"] * 3] * 2)})
    with pytest.raises(modelport.InvalidInputError, match="2 inputs"):
        model.predict(a)
    with pytest.raises(modelport.InvalidInputError, match=r"unexpected \['c'\]"):
        model.predict({"a": a, "b": b, "c": b})
    assert model.predict({"a": a, "b": b})["output_0"].shape == (2, 2)


def test_positional_names_without_a_signature(torchscript_pt: tuple[Path, Any]) -> None:
    model = modelport.load(torchscript_pt[0])
    a = np.zeros((1, 3), np.float32)
    with pytest.raises(modelport.InvalidInputError, match="name them input_0, input_1"):
        model.predict({"a": a, "b": a})
    with pytest.raises(modelport.InvalidInputError, match="without gaps"):
        model.predict({"input_0": a, "input_2": a})


def test_a_failing_forward_is_a_prediction_error(
    state_dict_dir: tuple[Path, Any], rng: np.random.Generator
) -> None:
    model = modelport.load(state_dict_dir[0])
    with pytest.raises(modelport.PredictionError, match=r"shapes \{'input_0': \[2, 5\]\}"):
        model.predict(rng.standard_normal((2, 5)).astype(np.float32))
    assert model.predict(np.zeros((1, 4), np.float32)).shape == (1, 3)


def test_inputs_become_tensors_without_a_copy(state_dict_dir: tuple[Path, Any]) -> None:
    model = modelport.load(state_dict_dir[0])
    x = np.ones((5, 4), np.float32)
    (tensor,) = model.as_tensors(x)
    assert tensor.data_ptr() == x.ctypes.data  # shares numpy's memory
    (cast,) = model.as_tensors(x.astype(np.float64))  # a float64 array must be converted
    assert cast.dtype == torch.float32


def test_read_only_and_reversed_arrays(state_dict_dir: tuple[Path, Any]) -> None:
    root, net = state_dict_dir
    model = modelport.load(root)
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    frozen = x.copy()
    frozen.flags.writeable = False
    np.testing.assert_array_equal(model.predict(frozen), _ref(net, x))
    np.testing.assert_array_equal(model.predict(x[::-1]), _ref(net, x[::-1].copy()))


# -- bad artifacts: each a clear modelport error naming the file ------------------------------


def test_truncated_torchscript(torchscript_pt: tuple[Path, Any], tmp_path: Path) -> None:
    data = torchscript_pt[0].read_bytes()
    bad = tmp_path / "cut.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(modelport.CorruptArtifactError, match=r"cut\.pt: not a readable"):
        modelport.load(bad)


def test_truncated_safetensors(state_dict_dir: tuple[Path, Any], tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file(state_dict_dir[1].state_dict(), tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "w.safetensors").write_bytes(data[: len(data) - 40])
    (tmp_path / "model.py").write_text(textwrap.dedent(NET_SOURCE))
    with pytest.raises(
        modelport.CorruptArtifactError, match=r"w\.safetensors: not a readable safetensors file"
    ):
        modelport.load(tmp_path)


def test_corrupt_exported_program(tmp_path: Path) -> None:
    bad = tmp_path / "broken.pt2"
    bad.write_bytes(b"PK\x03\x04 this is not a program" * 10)
    with pytest.raises(modelport.CorruptArtifactError, match=r"broken\.pt2.*torch\.export"):
        modelport.load(bad)


def test_empty_pt(tmp_path: Path) -> None:
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(modelport.CorruptArtifactError, match=r"empty\.pt: empty file"):
        modelport.load(tmp_path / "empty.pt")


def test_state_dict_without_a_module_class(
    state_dict_dir: tuple[Path, Any], tmp_path: Path
) -> None:
    (tmp_path / "weights.pt").write_bytes((state_dict_dir[0] / "weights.pt").read_bytes())
    with pytest.raises(modelport.ConfigError, match=r"weights\.pt: plain weights need"):
        modelport.load(tmp_path / "weights.pt")
    (tmp_path / "model.py").write_text("HIDDEN = 16\n")
    with pytest.raises(
        modelport.ConfigError, match=r"nn\.Module subclass in .*model\.py, found none"
    ):
        modelport.load(tmp_path)
    (tmp_path / "modelport.yaml").write_text("runtime: {module: Missing}\n")
    with pytest.raises(modelport.ConfigError, match=r"no nn\.Module subclass named 'Missing'"):
        modelport.load(tmp_path)


def test_weights_that_do_not_fit_the_module(
    state_dict_dir: tuple[Path, Any], tmp_path: Path
) -> None:
    root = tmp_path / "misfit"
    root.mkdir()
    (root / "weights.pt").write_bytes((state_dict_dir[0] / "weights.pt").read_bytes())
    (root / "model.py").write_text(textwrap.dedent(NET_SOURCE))
    (root / "modelport.yaml").write_text("runtime: {module_kwargs: {hidden: 5}}\n")
    with pytest.raises(modelport.ConfigError, match=r"weights do not fit Net: .*size mismatch"):
        modelport.load(root)
    (root / "modelport.yaml").write_text("runtime: {module_kwargs: {width: 5}}\n")
    with pytest.raises(modelport.ConfigError, match=r"cannot construct Net\(\*\*\{'width': 5\}\)"):
        modelport.load(root)


def test_strict_false_loads_weights_that_do_not_fit_and_names_the_keys(
    state_dict_dir: tuple[Path, Any],
    tmp_path: Path,
    rng: np.random.Generator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A checkpoint with a buffer the class no longer has (BERT's position_ids) and without
    a parameter the class added: refused by default, with the way out; loaded with strict:
    false, which names both keys in one log line."""
    _, net = state_dict_dir
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    weights["embeddings.position_ids"] = torch.arange(8)
    misfit = tmp_path / "misfit"
    misfit.mkdir()
    torch.save(weights, misfit / "weights.pt")
    (misfit / "model.py").write_text(
        textwrap.dedent(NET_SOURCE)
        + "\n\nclass Scaled(Net):\n    def __init__(self):\n        super().__init__()\n"
        "        self.scale = torch.nn.Parameter(torch.ones(1))\n"
    )
    (misfit / "modelport.yaml").write_text("runtime: {module: Net}\n")
    with pytest.raises(modelport.ConfigError, match=r"Unexpected key.*position_ids.*strict: false"):
        modelport.load(misfit)
    (misfit / "modelport.yaml").write_text("runtime: {module: Scaled, strict: false}\n")
    with caplog.at_level("WARNING", logger="modelport.runtime"):
        model = modelport.load(misfit)
    lines = [r.getMessage() for r in caplog.records if "strict: false" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "missing [scale]" in lines[0] and "unexpected [embeddings.position_ids]" in lines[0]
    x = rng.standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x), _ref(net, x), rtol=1e-6, atol=1e-6)
    (misfit / "modelport.yaml").write_text("runtime: {module: Net, strict: maybe}\n")
    with pytest.raises(modelport.ConfigError, match="'strict' must be true or false"):
        modelport.load(misfit)


def test_pickled_module_needs_trust(tmp_path: Path, rng: np.random.Generator) -> None:
    torch.manual_seed(5)
    net = DictHeads().eval()
    torch.save(net, tmp_path / "whole.pt")
    with pytest.raises(modelport.UntrustedArtifactError, match=r"whole\.pt: holds pickled"):
        modelport.load(tmp_path / "whole.pt")
    model = modelport.load(tmp_path / "whole.pt", trust=True)
    x = rng.standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(x)["logits"], _ref(net, x)["logits"])


def test_checkpoint_dict_with_state_dict_key(
    state_dict_dir: tuple[Path, Any], tmp_path: Path
) -> None:
    _, net = state_dict_dir
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.py").write_text(textwrap.dedent(NET_SOURCE))
    torch.save({"epoch": 3, "model": net.state_dict()}, ckpt / "ckpt.pt")
    with pytest.raises(modelport.ConfigError, match="weights do not fit Net"):
        modelport.load(ckpt)
    with pytest.raises(modelport.ConfigError, match=r"state_dict_key 'weights' not found"):
        modelport.load(ckpt, state_dict_key="weights")
    x = np.ones((1, 4), np.float32)
    np.testing.assert_array_equal(
        modelport.load(ckpt, state_dict_key="model").predict(x), _ref(net, x)
    )


def test_thread_option_reaches_torch(state_dict_dir: tuple[Path, Any]) -> None:
    before = torch.get_num_threads()
    try:
        modelport.load(state_dict_dir[0], intra_op_threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
