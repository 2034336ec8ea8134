"""Pinned requirements: exactly the build environment's versions of what the model needs."""

from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
from pathlib import Path

import pytest

import modelport
from modelport.deploy import build
from modelport.deploy.requirements import framework_extras, pinned
from modelport.errors import ConfigError, MissingDependencyError
from tests.conftest import skip_unless


def as_dict(lines: list[str]) -> dict[str, str]:
    return {
        line.split("==")[0].lower().replace("_", "-"): line.split("==")[1]
        for line in lines
        if "==" in line
    }


def test_pins_are_the_installed_versions_of_the_closure() -> None:
    pins = as_dict(pinned(["onnx", "serve"]))
    for name in ("onnxruntime", "numpy", "uvicorn", "httptools", "orjson", "grpcio", "pyyaml"):
        assert pins[name] == metadata.version(name), name
    # A lean image: no converter, no reloader or websockets (uvicorn[standard]'s other parts).
    assert not {"onnx", "watchfiles", "websockets", "python-dotenv"} & pins.keys()
    assert "modelport" not in pins
    assert "pytest" not in pins  # test tools are not in the closure
    store = as_dict(pinned(["store"]))
    assert "psycopg-binary" in store  # through psycopg[binary]: extras of dependencies are followed


def test_only_the_frameworks_the_model_needs(tiny_onnx: Path) -> None:
    extras = framework_extras(modelport.load(tiny_onnx))
    assert extras == ["onnx"]
    pins = as_dict(pinned([*extras, "serve"]))
    assert "torch" not in pins and "scikit-learn" not in pins


def test_a_missing_distribution_names_what_needs_it() -> None:
    with pytest.raises(MissingDependencyError) as info:
        pinned(["onnx"], ["surely-not-installed-pkg>=1"])
    message = str(info.value)
    assert "'surely-not-installed-pkg'" in message and "the model's requirements.txt" in message


def test_a_missing_framework_names_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = metadata.distribution

    def tensorflow_hidden(name: str) -> metadata.Distribution:  # installed here or not
        if name.lower() == "tensorflow":
            raise metadata.PackageNotFoundError(name)
        return installed(name)

    monkeypatch.setattr(metadata, "distribution", tensorflow_hidden)
    with pytest.raises(MissingDependencyError, match=r'pip install "modelport\[tensorflow\]"'):
        pinned(["tensorflow"])


def test_an_installed_version_that_does_not_fit_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"numpy .* is installed but .* needs numpy<1"):
        pinned([], ["numpy<1"])
    with pytest.raises(ConfigError, match="is not a requirement"):
        pinned([], ["numpy >>> 1"])


@skip_unless(importlib.util.find_spec("torch") is not None, "torch")
def test_cpu_torch_comes_from_pytorchs_cpu_index() -> None:
    lines = pinned(["torch"])
    torch = next(line for line in lines if line.lower().startswith("torch=="))
    assert torch == f"torch=={metadata.version('torch')}"
    if "+cpu" in torch:
        assert lines[0] == "--extra-index-url https://download.pytorch.org/whl/cpu"


MODEL_PY = """
import numpy as np
from modelport import Model, Signature, TensorSpec

class Doubler(Model):
    signature = Signature(inputs=[TensorSpec("x", "FP32", [-1, 2])],
                          outputs=[TensorSpec("y", "FP32", [-1, 2])])

    def predict(self, inputs):
        return {"y": np.asarray(inputs["x"]) * 2}
"""


def test_python_model_with_its_own_requirements(tmp_path: Path) -> None:
    source = tmp_path / "doubler"
    source.mkdir()
    (source / "model.py").write_text(MODEL_PY)
    (source / "requirements.txt").write_text("# what model.py imports\nPyYAML  # config\n")
    bundle = build(source, "docker", tmp_path / "out")
    lines = (bundle.directory / "requirements.txt").read_text().splitlines()
    pins = as_dict(lines)
    assert pins["pyyaml"] == metadata.version("pyyaml")
    assert "onnxruntime" not in pins  # plain Python needs no framework
    assert bundle.models == ["doubler"]
    assert (bundle.directory / "models/doubler/requirements.txt").is_file()


def test_pip_options_in_model_requirements_are_refused(tmp_path: Path) -> None:
    source = tmp_path / "doubler"
    source.mkdir()
    (source / "model.py").write_text(MODEL_PY)
    (source / "requirements.txt").write_text("numpy\n-r more.txt\n")
    with pytest.raises(ConfigError, match=r"requirements.txt:2: '-r more.txt': pip options"):
        build(source, "docker", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything was written
