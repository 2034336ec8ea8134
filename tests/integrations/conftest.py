"""Fixtures shared by the engine tests: input tables and their in-process predictions."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

import modelport
from tests.builders import CORPUS, image_model, png, text_model
from tests.conftest import import_or_skip

ROWS = 103  # not a multiple of any batch or partition size, so remainders are exercised
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "pipelines"


def engine(module: str, marker: str) -> ModuleType:
    """Import an engine; in its own nox session a missing engine fails instead of skipping."""
    __tracebackhide__ = True
    return import_or_skip(module, session=marker)


@pytest.fixture(scope="session")
def features() -> np.ndarray:
    """Inputs ``x`` for ``tiny_onnx``: ROWS x 4 FP32."""
    return np.random.default_rng(7).standard_normal((ROWS, 4)).astype(np.float32)


@pytest.fixture(scope="session")
def expected_y(tiny_onnx: Path, features: np.ndarray) -> np.ndarray:
    """``tiny_onnx`` on ``features``, in-process in one batch: what every engine must match."""
    return modelport.load(tiny_onnx).predict_batch({"x": features})["y"]


@pytest.fixture(scope="session")
def multi_inputs() -> dict[str, np.ndarray]:
    """Inputs ``a`` (FP32) and ``b`` (INT64), ROWS x 3 each, for ``multi_io_onnx``."""
    rng = np.random.default_rng(8)
    return {
        "a": rng.standard_normal((ROWS, 3)).astype(np.float32),
        "b": rng.integers(-5, 5, (ROWS, 3)).astype(np.int64),
    }


@pytest.fixture(scope="session")
def expected_multi(
    multi_io_onnx: Path, multi_inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """``multi_io_onnx`` on ``multi_inputs``, in-process: outputs ``sum`` and ``argmax``."""
    return modelport.load(multi_io_onnx).predict_batch(multi_inputs)


RECORDING_MODEL = """
import os

import modelport
from modelport import Signature, TensorSpec


class Recording(modelport.Model):
    \"\"\"Sums each row of x; appends "<pid> <rows>" to options["log"] for every call.\"\"\"

    signature = Signature(
        inputs=(TensorSpec("x", "FP32", (-1, 4)),), outputs=(TensorSpec("y", "FP32", (-1,)),)
    )

    def predict(self, inputs):
        x = inputs["x"]
        with open(self.options["log"], "a") as log:
            log.write(f"{os.getpid()} {len(x)}\\n")
        return {"y": x.sum(axis=1)}
"""


@pytest.fixture
def recording_model(tmp_path: Path) -> tuple[Path, Path]:
    """A model directory whose ``predict`` logs each batch's size, and that log's path."""
    directory = tmp_path / "recording"
    directory.mkdir()
    (directory / "model.py").write_text(RECORDING_MODEL)
    return directory, tmp_path / "batches.log"


def batch_sizes(log: Path) -> list[int]:
    """The row counts of every ``predict`` call the recording model logged."""
    return [int(line.split()[1]) for line in log.read_text().splitlines()]


def assert_batched(log: Path, rows: int, limit: int, full: bool = True) -> None:
    """Every row predicted once, in batches of at most ``limit``; some of exactly ``limit``
    unless ``full`` is false (then at least one batch holds more than one row)."""
    sizes = batch_sizes(log)
    assert sum(sizes) == rows, f"{sum(sizes)} rows predicted, expected {rows}: {sizes}"
    assert max(sizes) <= limit, f"a batch over {limit} rows: {sizes}"
    assert max(sizes) == limit if full else max(sizes) > 1, f"batch sizes {sizes}"


def assert_rows_equal(got: np.ndarray, want: np.ndarray) -> None:
    """Row by row, the same predictions (floats within rounding of a different batch split)."""
    assert len(got) == len(want), f"{len(got)} rows, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        g = np.asarray(g)
        assert g.shape == np.shape(w), f"row {i}: shape {g.shape}, expected {np.shape(w)}"
        if np.asarray(w).dtype.kind == "f":
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=f"row {i}")
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"row {i}")


def write_rows(path: Path, features: np.ndarray) -> Path:
    """``features`` as a Parquet file: ``id`` (INT64), then ``f0``.. (FP32)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {"id": np.arange(len(features), dtype=np.int64)}
    columns |= {f"f{i}": features[:, i] for i in range(features.shape[1])}
    pq.write_table(pa.table(columns), path)
    return path


def run_example(script: str, *args: str | Path) -> None:
    """Run ``examples/pipelines/<script>`` with this interpreter; fail with its stderr."""
    # PyFlink marks its own process's environment once it ran a job; the script starts afresh.
    env = {k: v for k, v in os.environ.items() if "PYFLINK" not in k}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stderr[-3000:]}"


def read_predictions(path: Path | str, column: str = "y") -> np.ndarray:
    """The ``column`` of every Parquet file under ``path`` (or matching it), ordered by ``id``."""
    import pyarrow.dataset as ds

    table = ds.dataset(str(path), format="parquet").to_table(columns=["id", column])
    order = np.argsort(table.column("id").to_numpy())
    return np.array(table.column(column).to_pylist(), dtype=np.float32)[order]


# -- the contract's payloads: what every engine must answer as model(payload) does ------------

IRIS = Path(__file__).resolve().parents[2] / "demo" / "iris"
IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
TEXTS = [
    *CORPUS,
    "short",
    "hello world " * 9,
    "words the tokenizer never saw",
    "a",
]
"""Texts of mixed lengths (1 to 18 words) for the text model."""


@pytest.fixture(scope="session")
def text_dir(models_dir: Path) -> Path:
    """The text-embedding model of tests/builders.py (``text`` BYTES → ``embedding``)."""
    return text_model(models_dir / "text")


@pytest.fixture(scope="session")
def image_dir(models_dir: Path) -> Path:
    """The image model of tests/builders.py: ``{"image": base64 PNG}`` → ``label``, ``scores``."""
    return image_model(models_dir / "image")


def iris_rows(count: int = 12) -> list[dict[str, float]]:
    """Flowers as the iris demo takes them: ``{"sepal_length": ..., ...}``, all species."""
    rng = np.random.default_rng(11)
    base = np.array([[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.6, 2.1]])
    rows = base[np.arange(count) % 3] + rng.normal(0, 0.2, (count, 4))
    return [dict(zip(IRIS_FEATURES, map(float, r.round(2)))) for r in rows]


def images(count: int = 6) -> list[str]:
    """PNG images as base64 text, as the image model's ``preprocess`` takes them."""
    return [base64.b64encode(png(seed)).decode() for seed in range(count)]


def expected_answers(kind: str, model_dir: Path, payloads: list[Any]) -> list[dict[str, Any]]:
    """Each payload's answer from ``model(payload)`` in-process, as the row of columns a
    pipeline writes: the text model's embedding, the iris demo's one answer (species and
    probabilities), the image model's label and scores."""
    model = modelport.load(model_dir)
    out = []
    for payload in payloads:
        answer = model(payload)
        if kind == "iris":
            (row,) = answer
            out.append(row)
        else:
            out.append({name: value[0] for name, value in answer.items()})
    return out


def assert_answer(got: Any, want: Any, where: str) -> None:
    """``got`` equals ``want`` (dicts key by key, arrays and lists element-wise, floats to
    1e-5)."""
    if isinstance(want, list) and any(isinstance(w, dict) for w in want):
        assert len(got) == len(want), f"{where}: {len(got)} items, expected {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_answer(g, w, f"{where}[{i}]")
    elif isinstance(want, dict):
        got = dict(got)
        assert sorted(got) == sorted(want), f"{where}: keys {sorted(got)}, expected {sorted(want)}"
        for key in want:
            assert_answer(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, (np.ndarray, list, np.floating, float)):
        np.testing.assert_allclose(
            np.asarray(got, dtype=np.float64),
            np.asarray(want, np.float64),
            atol=1e-5,
            err_msg=where,
        )
    else:
        assert got == want, f"{where}: {got!r}, expected {want!r}"


def assert_answers(rows: list[dict[str, Any]], want: list[dict[str, Any]], kind: str) -> None:
    """Every row's columns (the ``want`` keys of it) equal its expected answer."""
    assert len(rows) == len(want), f"{kind}: {len(rows)} rows, expected {len(want)}"
    for i, (row, expected) in enumerate(zip(rows, want)):
        assert_answer({k: row[k] for k in expected}, expected, f"{kind} row {i}")
