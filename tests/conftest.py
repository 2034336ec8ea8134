"""Shared fixtures: real models built at test time, with fixed seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.builders import onnx_mlp, onnx_multi_io


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_onnx(models_dir: Path) -> Path:
    """MLP 4 -> 16 -> 3 (ReLU), input ``x`` FP32 [-1, 4], output ``y`` FP32 [-1, 3]."""
    return onnx_mlp(models_dir / "tiny.onnx", [4, 16, 3])


@pytest.fixture(scope="session")
def multi_io_onnx(models_dir: Path) -> Path:
    """Inputs ``a`` FP32 [-1, 3] and ``b`` INT64 [-1, 3]; outputs ``sum`` FP32, ``argmax`` INT64."""
    return onnx_multi_io(models_dir / "multi.onnx")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
