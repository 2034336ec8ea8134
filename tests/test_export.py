"""Export to ONNX: real PyTorch, scikit-learn and Keras models, a real onnxruntime check."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelport
from modelport.cli import main
from modelport.export import ExportReport, to_onnx
from tests.conftest import import_or_skip

CLI = str(Path(sys.executable).parent / "modelport")
COUNTER_SOURCE = """
import torch


class Counter(torch.nn.Module):
    '''Python state the exported graph cannot follow: it bakes in the count at export time.'''

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.fc(x) + self.calls
"""

MLP_SOURCE = """
import torch


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 8)
        self.fc2 = torch.nn.Linear(8, 3)

    def forward(self, x):
        return torch.softmax(self.fc2(torch.tanh(self.fc1(x))), dim=1)
"""

MLP_SIGNATURE = """
signature:
  inputs: [{name: features, datatype: FP32, shape: [-1, 4]}]
  outputs: [{name: proba, datatype: FP32, shape: [-1, 3]}]
"""


def _onnx_run(path: Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    ort = import_or_skip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feed)))


def _torch_dir(root: Path, source: str, config: str = "") -> Path:
    torch = import_or_skip("torch")
    root.mkdir(parents=True)
    (root / "model.py").write_text(textwrap.dedent(source))
    if config:
        (root / "modelport.yaml").write_text(config)
    namespace: dict[str, Any] = {}
    exec(compile(textwrap.dedent(source), str(root / "model.py"), "exec"), namespace)
    cls = next(v for k, v in namespace.items() if k in {"Net", "Counter"})
    torch.manual_seed(0)
    torch.save(cls().state_dict(), root / "weights.pt")
    return root


# -- PyTorch ----------------------------------------------------------------------------------


def test_state_dict_model_exports_with_parity(tmp_path: Path, rng: np.random.Generator) -> None:
    root = _torch_dir(tmp_path / "mlp", MLP_SOURCE, MLP_SIGNATURE)
    report = to_onnx(root, tmp_path / "mlp.onnx")
    assert isinstance(report, ExportReport)
    assert report.framework == "pytorch"
    assert report.opset == 18
    assert report.inputs == ("features",) and report.outputs == ("proba",)
    assert report.rows == 9  # 8 generated rows, then the first alone
    assert 0 <= report.max_abs_diff <= 1e-4
    assert "max abs diff" in str(report)
    # The exported file is a drop-in: same names, a free batch dimension, the same numbers.
    original = modelport.load(root)
    exported = modelport.load(tmp_path / "mlp.onnx")
    x = rng.standard_normal((17, 4)).astype(np.float32)
    np.testing.assert_allclose(
        exported.predict({"features": x})["proba"],
        original.predict({"features": x})["proba"],
        atol=1e-5,
    )


def test_exported_program_multi_io(tmp_path: Path, rng: np.random.Generator) -> None:
    torch = import_or_skip("torch")
    from tests.test_torch_runtime import TwoHeads

    torch.manual_seed(7)
    net = TwoHeads().eval()
    batch = torch.export.Dim("batch")
    program = torch.export.export(
        net,
        (torch.randn(2, 3), torch.ones(2, 3, dtype=torch.int64)),
        dynamic_shapes=({0: batch}, {0: batch}),
    )
    torch.export.save(program, tmp_path / "heads.pt2")
    report = to_onnx(tmp_path / "heads.pt2", tmp_path / "heads.onnx")
    assert report.inputs == ("a", "b")
    assert report.outputs == ("output_0", "output_1")
    assert report.diffs["output_1"] == 0.0  # the argmax labels agree exactly
    a = rng.standard_normal((5, 3)).astype(np.float32)
    b = rng.integers(0, 4, (5, 3))
    got = _onnx_run(tmp_path / "heads.onnx", {"a": a, "b": b})
    with torch.no_grad():
        score, label = net(torch.from_numpy(a), torch.from_numpy(b))
    np.testing.assert_allclose(got["output_0"], score.numpy(), atol=1e-5)
    np.testing.assert_array_equal(got["output_1"], label.numpy())


def test_torchscript_needs_samples_without_a_signature(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    torch = import_or_skip("torch")
    from tests.test_torch_runtime import TwoHeads

    torch.manual_seed(8)
    net = TwoHeads().eval()
    torch.jit.save(torch.jit.script(net), tmp_path / "ts.pt")
    with pytest.raises(modelport.ExportError, match="declares no input signature"):
        to_onnx(tmp_path / "ts.pt", tmp_path / "ts.onnx")
    a = rng.standard_normal((1, 3)).astype(np.float32)
    b = np.ones((1, 3), np.int64)
    report = to_onnx(
        tmp_path / "ts.pt", tmp_path / "ts.onnx", sample_inputs={"input_0": a, "input_1": b}
    )
    assert report.rows == 1 and report.max_abs_diff <= 1e-4
    # A one-row sample still exports a free batch dimension.
    many = rng.standard_normal((6, 3)).astype(np.float32)
    got = _onnx_run(tmp_path / "ts.onnx", {"input_0": many, "input_1": np.ones((6, 3), np.int64)})
    assert got["output_0"].shape == (6, 2)


def test_parity_failure_is_a_clear_error(tmp_path: Path) -> None:
    root = _torch_dir(tmp_path / "counter", COUNTER_SOURCE)
    out = tmp_path / "counter.onnx"
    x = np.ones((3, 4), np.float32)
    with pytest.raises(
        modelport.ExportError, match=r"outputs differ .* exceeds the tolerance 0\.0001"
    ) as info:
        to_onnx(root, out, sample_inputs=x)
    assert "was not kept" in str(info.value)
    assert not out.exists()


def test_unexportable_module_is_a_clear_error(tmp_path: Path) -> None:
    torch = import_or_skip("torch")

    class DataDependent(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            return x * 2 if x.sum() > 0 else x

    torch.save(DataDependent().state_dict(), tmp_path / "dd.pt")
    model = modelport.load(tmp_path / "dd.pt", module=DataDependent)
    with pytest.raises(modelport.ExportError, match=r"export to ONNX failed: TorchExportError"):
        to_onnx(model, tmp_path / "dd.onnx", sample_inputs=np.ones((2, 4), np.float32))
    assert not (tmp_path / "dd.onnx").exists()


def test_bad_requests(tmp_path: Path, tiny_onnx: Path) -> None:
    with pytest.raises(modelport.ExportError, match="already an ONNX model"):
        to_onnx(tiny_onnx, tmp_path / "again.onnx")
    with pytest.raises(modelport.ExportError, match=r"\(python\) cannot be exported.*pytorch"):
        to_onnx(modelport.load(lambda x: x), tmp_path / "fn.onnx")
    root = _torch_dir(tmp_path / "mlp", MLP_SOURCE, MLP_SIGNATURE)
    with pytest.raises(modelport.ExportError, match="tolerance must be >= 0"):
        to_onnx(root, tmp_path / "x.onnx", tolerance=-1)
    with pytest.raises(modelport.ExportError, match="must share a batch"):
        to_onnx(
            root,
            tmp_path / "x.onnx",
            sample_inputs={"features": np.ones((2, 4)), "extra": np.ones((3, 4))},
        )
    with pytest.raises(modelport.InvalidInputError, match="expected FP32 numbers, got text"):
        to_onnx(root, tmp_path / "x.onnx", sample_inputs=np.array([["a"] * 4]))
    assert to_onnx(root, tmp_path / "x.onnx").max_abs_diff <= 1e-4


# -- scikit-learn -----------------------------------------------------------------------------


@pytest.fixture
def skops_dump() -> Any:
    import_or_skip("sklearn")
    import_or_skip("skl2onnx")
    return import_or_skip("skops.io").dump


def test_sklearn_classifier_pipeline(tmp_path: Path, skops_dump: Any) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_iris(return_X_y=True)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, names)
    skops_dump(pipe, tmp_path / "iris.skops")
    report = to_onnx(tmp_path / "iris.skops", tmp_path / "iris.onnx", sample_inputs=x[::3])
    assert report.outputs == ("label", "probabilities")  # no ZipMap: plain tensors
    assert report.diffs["label"] == 0.0
    assert report.max_abs_diff <= 1e-4
    got = _onnx_run(tmp_path / "iris.onnx", {"input": x.astype(np.float32)})
    assert (got["label"] == pipe.predict(x)).mean() > 0.99


def test_sklearn_classifier_without_probabilities(tmp_path: Path, skops_dump: Any) -> None:
    import_or_skip("pandas")
    from sklearn.datasets import load_iris
    from sklearn.svm import LinearSVC

    frame, y = load_iris(return_X_y=True, as_frame=True)  # fitted with named columns
    skops_dump(LinearSVC(random_state=0).fit(frame, y), tmp_path / "svc.skops")
    report = to_onnx(
        tmp_path / "svc.skops", tmp_path / "svc.onnx", sample_inputs=frame.to_numpy()[::5]
    )
    assert report.diffs == {"label": 0.0}  # the only output the original has


def test_sklearn_regressor_parity_failure(tmp_path: Path, skops_dump: Any) -> None:
    from sklearn.linear_model import LinearRegression

    # A coefficient float32 cannot hold exactly: ONNX (float32) and numpy (float64) must differ.
    reg = LinearRegression().fit(np.eye(2), [0.0, 1.0])
    reg.coef_ = np.array([1 / 3, 1 / 3])
    reg.intercept_ = 0.0
    skops_dump(reg, tmp_path / "third.skops")
    samples = np.ones((4, 2))
    report = to_onnx(tmp_path / "third.skops", tmp_path / "third.onnx", sample_inputs=samples)
    assert report.outputs == ("predictions",)  # renamed from skl2onnx's "variable"
    assert 0 < report.max_abs_diff < 1e-6
    with pytest.raises(modelport.ExportError, match=r"predictions=.*third\.onnx was not kept"):
        to_onnx(
            tmp_path / "third.skops", tmp_path / "third.onnx", sample_inputs=samples, tolerance=0
        )


# -- the command line -------------------------------------------------------------------------


def test_cli_prints_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _torch_dir(tmp_path / "mlp", MLP_SOURCE, MLP_SIGNATURE)
    with pytest.raises(SystemExit) as info:
        main(["export", "onnx", str(root), "-o", str(tmp_path / "out.onnx"), "--opset", "18"])
    assert info.value.code in (0, None)
    out = capsys.readouterr().out
    assert "opset 18" in out and "max abs diff" in out
    assert (tmp_path / "out.onnx").is_file()


def test_cli_failure_is_one_line(tmp_path: Path) -> None:
    root = _torch_dir(tmp_path / "counter", COUNTER_SOURCE)
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    args = ["export", "onnx", str(root), "-o", str(tmp_path / "c.onnx")]
    done = subprocess.run(
        [CLI, *args, "--samples", str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "exceeds the tolerance" in errors[0]
    assert "Traceback" not in done.stderr
    missing = subprocess.run(
        [CLI, *args, "--samples", str(tmp_path / "no.npz")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 1
    assert "no.npz: cannot read sample inputs" in missing.stderr


# -- Keras (the tensorflow nox session) -------------------------------------------------------


@pytest.mark.tensorflow
def test_keras_multi_io_exports_with_parity(tmp_path: Path, rng: np.random.Generator) -> None:
    import_or_skip("tensorflow", "tensorflow")
    import_or_skip("tf2onnx", "tensorflow")
    from tests.test_tensorflow_runtime import _two_heads

    keras_model = _two_heads()
    keras_model.save(tmp_path / "heads.keras")
    report = to_onnx(tmp_path / "heads.keras", tmp_path / "heads.onnx")
    assert report.framework == "keras"
    assert report.inputs == ("a", "b")
    assert report.outputs == ("score", "prob")  # tf2onnx's Identity:0 names, renamed
    assert report.max_abs_diff <= 1e-4
    a = rng.standard_normal((11, 3)).astype(np.float32)
    b = rng.standard_normal((11, 2)).astype(np.float32)
    got = _onnx_run(tmp_path / "heads.onnx", {"a": a, "b": b})
    score, prob = keras_model([a, b], training=False)
    np.testing.assert_allclose(got["score"], np.asarray(score), atol=1e-5)
    np.testing.assert_allclose(got["prob"], np.asarray(prob), atol=1e-5)


@pytest.mark.tensorflow
def test_saved_model_exports_with_parity(tmp_path: Path, rng: np.random.Generator) -> None:
    import_or_skip("tensorflow", "tensorflow")
    import_or_skip("tf2onnx", "tensorflow")
    from tests.test_tensorflow_runtime import _two_heads

    keras_model = _two_heads()
    keras_model.export(str(tmp_path / "served"), verbose=False)
    report = to_onnx(tmp_path / "served", tmp_path / "served.onnx")
    assert report.framework == "tensorflow"
    assert report.inputs == ("a", "b")
    assert report.outputs == ("output_0", "output_1")
    assert report.max_abs_diff <= 1e-4
    a = rng.standard_normal((3, 3)).astype(np.float32)
    b = rng.standard_normal((3, 2)).astype(np.float32)
    got = _onnx_run(tmp_path / "served.onnx", {"a": a, "b": b})
    np.testing.assert_allclose(
        got["output_1"], np.asarray(keras_model([a, b], training=False)[1]), atol=1e-5
    )
