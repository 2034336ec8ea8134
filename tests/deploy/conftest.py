"""Bundles built once per session from a real ONNX model, for every target."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelport
from modelport.aws_lambda import LambdaHandler
from modelport.deploy import Bundle, DeployOptions, build
from modelport.deploy.options import Target
from modelport.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
X = np.arange(8, dtype=np.float32).reshape(2, 4) / 4
"""Two rows of inputs for the ``iris_mlp`` model."""


def tool(name: str) -> str:
    """An executable installed into this environment by the ``test`` extra."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


@pytest.fixture(scope="session")
def iris_dir(tiny_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory: the tiny ONNX MLP plus a modelport.yaml naming it ``iris_mlp``."""
    directory = tmp_path_factory.mktemp("src") / "iris_mlp"
    directory.mkdir()
    shutil.copy2(tiny_onnx, directory / "model.onnx")
    (directory / "modelport.yaml").write_text('name: iris_mlp\nversion: "3"\n')
    return directory


def _bundle(target: Target, source: Path, factory: pytest.TempPathFactory, **kw: Any) -> Bundle:
    return build(source, target, factory.mktemp(target) / "bundle", DeployOptions(**kw))


@pytest.fixture(scope="session")
def docker_bundle(iris_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return _bundle("docker", iris_dir, tmp_path_factory)


@pytest.fixture(scope="session")
def k8s_bundle(iris_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return _bundle(
        "kubernetes",
        iris_dir,
        tmp_path_factory,
        image="registry.example.com/ml/iris:3",
        namespace="models",
        replicas=3,
        labels={"team": "search"},
    )


@pytest.fixture(scope="session")
def kserve_bundle(iris_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return _bundle("kserve", iris_dir, tmp_path_factory, image="registry.example.com/ml/iris:3")


@pytest.fixture(scope="session")
def lambda_bundle(iris_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return _bundle("lambda", iris_dir, tmp_path_factory)


@pytest.fixture(scope="session")
def expected(iris_dir: Path) -> np.ndarray:
    """``iris_mlp`` on ``X``, in-process: what every front door must answer."""
    return modelport.load(iris_dir).predict_batch({"x": X})["y"]


@pytest.fixture(scope="session")
def handler(iris_dir: Path) -> Iterator[LambdaHandler]:
    """A Lambda handler serving ``iris_mlp``, as one warm container."""
    h = LambdaHandler(Settings(model_path=iris_dir))
    yield h
    h.close()
