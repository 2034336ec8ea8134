"""TensorFlow runtimes against TensorFlow itself: SavedModel directories and Keras files.

Runs in the ``tensorflow`` nox session (``nox -s tensorflow``), where a TensorFlow that does not
import fails; elsewhere skipped where TensorFlow is not installed (``scripts/test`` deselects it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import modelport
from tests.conftest import import_or_skip

pytestmark = pytest.mark.tensorflow
tf = import_or_skip("tensorflow", "tensorflow")
keras = import_or_skip("keras", "tensorflow")


def _two_heads() -> Any:
    """Inputs ``a`` FP32 [-1, 3] and ``b`` FP32 [-1, 2]; outputs ``score`` and ``prob``."""
    keras.utils.set_random_seed(0)
    a = keras.Input((3,), name="a")
    b = keras.Input((2,), name="b")
    h = keras.layers.Dense(8, activation="relu")(keras.layers.Concatenate()([a, b]))
    score = keras.layers.Dense(2, name="score")(h)
    prob = keras.layers.Dense(1, activation="sigmoid", name="prob")(h)
    return keras.Model([a, b], [score, prob])


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    model = _two_heads()
    path = tmp_path_factory.mktemp("keras") / "heads.keras"
    model.save(path)
    return path, model


@pytest.fixture(scope="module")
def keras_mlp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((4,), name="x"),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3),
        ]
    )
    path = tmp_path_factory.mktemp("keras") / "mlp.keras"
    model.save(path)
    return path, model


class _Scorer(tf.Module):
    """A SavedModel with named numeric and string inputs and dict outputs."""

    def __init__(self) -> None:
        super().__init__()
        tf.random.set_seed(2)
        self.w = tf.Variable(tf.random.normal((3, 2), seed=2))

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, 3), tf.float32, name="features"),
            tf.TensorSpec((None,), tf.string, name="text"),
        ]
    )
    def serve(self, features: Any, text: Any) -> dict[str, Any]:
        return {
            "logits": tf.matmul(features, self.w),
            "length": tf.strings.length(text, unit="UTF8_CHAR"),
        }


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    module = _Scorer()
    path = tmp_path_factory.mktemp("tf") / "scorer"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path, module


# -- parity with TensorFlow -------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 8, 64])
def test_keras_multi_io_matches_keras(
    keras_file: tuple[Path, Any], rng: np.random.Generator, batch: int
) -> None:
    path, original = keras_file
    model = modelport.load(path)
    assert type(model).__name__ == "KerasModel"
    a = rng.standard_normal((batch, 3)).astype(np.float32)
    b = rng.standard_normal((batch, 2)).astype(np.float32)
    out = model.predict({"a": a, "b": b})
    score, prob = original([a, b], training=False)
    np.testing.assert_array_equal(out["score"], np.asarray(score))
    np.testing.assert_array_equal(out["prob"], np.asarray(prob))


def test_legacy_h5_file(keras_file: tuple[Path, Any], tmp_path: Path) -> None:
    _, original = keras_file
    original.save(tmp_path / "heads.h5")
    model = modelport.load(tmp_path / "heads.h5")
    assert type(model).__name__ == "KerasModel"
    a = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
    b = np.ones((2, 2), np.float32)
    out = model.predict({"a": a, "b": b})
    np.testing.assert_allclose(
        out["score"], np.asarray(original([a, b], training=False)[0]), rtol=1e-6, atol=1e-6
    )


def test_keras_signature_is_read_from_the_model(keras_file: tuple[Path, Any]) -> None:
    model = modelport.load(keras_file[0])
    assert model.signature is not None
    assert model.signature.to_dict() == {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "b", "datatype": "FP32", "shape": [-1, 2]},
        ],
        "outputs": [
            {"name": "score", "datatype": "FP32", "shape": [-1, 2]},
            {"name": "prob", "datatype": "FP32", "shape": [-1, 1]},
        ],
    }


@pytest.mark.parametrize("batch", [1, 33])
def test_keras_single_io_with_a_bare_array(
    keras_mlp: tuple[Path, Any], rng: np.random.Generator, batch: int
) -> None:
    path, original = keras_mlp
    model = modelport.load(path)
    x = rng.standard_normal((batch, 4))  # float64: cast to the declared FP32
    expected = np.asarray(original(x.astype(np.float32), training=False))
    np.testing.assert_array_equal(model.predict(x), expected)
    assert model(x.tolist())[model.signature.output_names[0]].shape == (batch, 3)


@pytest.mark.parametrize("batch", [1, 10])
def test_saved_model_matches_tensorflow(
    saved_model: tuple[Path, Any], rng: np.random.Generator, batch: int
) -> None:
    path, module = saved_model
    model = modelport.load(path)
    assert type(model).__name__ == "SavedModelModel"
    features = rng.standard_normal((batch, 3)).astype(np.float32)
    text = np.array([("héllo" * (i + 1)).encode() for i in range(batch)], dtype=object)
    out = model.predict({"features": features, "text": text})
    expected = module.serve(tf.constant(features), tf.constant(text))
    np.testing.assert_array_equal(out["logits"], expected["logits"].numpy())
    np.testing.assert_array_equal(out["length"], [5 * (i + 1) for i in range(batch)])


def test_saved_model_signature(saved_model: tuple[Path, Any]) -> None:
    model = modelport.load(saved_model[0])
    assert model.signature is not None
    assert model.signature.to_dict() == {
        "inputs": [
            {"name": "features", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "text", "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [
            {"name": "length", "datatype": "INT32", "shape": [-1]},
            {"name": "logits", "datatype": "FP32", "shape": [-1, 2]},
        ],
    }


def test_keras_export_directory_is_a_saved_model(
    keras_file: tuple[Path, Any], tmp_path: Path, rng: np.random.Generator
) -> None:
    _, original = keras_file
    original.export(str(tmp_path / "exported"), verbose=False)
    model = modelport.load(tmp_path / "exported")
    a = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal((4, 2)).astype(np.float32)
    out = model.predict({"a": a, "b": b})
    np.testing.assert_allclose(
        out["output_0"], np.asarray(original([a, b], training=False)[0]), rtol=1e-6, atol=1e-6
    )


# -- bad inputs -------------------------------------------------------------------------------


def test_bad_inputs_are_named(
    keras_file: tuple[Path, Any], saved_model: tuple[Path, Any], rng: np.random.Generator
) -> None:
    model = modelport.load(keras_file[0])
    a = rng.standard_normal((2, 3)).astype(np.float32)
    b = rng.standard_normal((2, 2)).astype(np.float32)
    with pytest.raises(modelport.InvalidInputError, match=r"missing \['b'\]"):
        model.predict({"a": a})
    with pytest.raises(modelport.InvalidInputError, match="input 'b': dimension 1 must be 2"):
        model.predict({"a": a, "b": a})
    with pytest.raises(modelport.InvalidInputError, match="input 'a': expected FP32 numbers"):
        model.predict({"a": np.array([["x"] * 3] * 2), "b": b})
    assert model.predict({"a": a, "b": b})["score"].shape == (2, 2)
    served = modelport.load(saved_model[0])
    with pytest.raises(modelport.InvalidInputError, match="input 'text': expected BYTES"):
        served.predict({"features": a, "text": np.zeros(2)})
    with pytest.raises(modelport.InvalidInputError, match="input 'features': dimension 1"):
        served.predict({"features": b, "text": np.array([b"x", b"y"], dtype=object)})


# -- bad artifacts ----------------------------------------------------------------------------


def test_truncated_keras_file(keras_file: tuple[Path, Any], tmp_path: Path) -> None:
    data = keras_file[0].read_bytes()
    (tmp_path / "cut.keras").write_bytes(data[: len(data) // 2])
    with pytest.raises(modelport.CorruptArtifactError, match=r"cut\.keras: not a readable Keras"):
        modelport.load(tmp_path / "cut.keras")


def test_corrupt_saved_model(saved_model: tuple[Path, Any], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"\x08\x01garbage" * 8)
    with pytest.raises(modelport.CorruptArtifactError, match=r"broken: not a readable TensorFlow"):
        modelport.load(broken)


def test_unknown_signature_key(saved_model: tuple[Path, Any]) -> None:
    with pytest.raises(
        modelport.ConfigError, match=r"no serving signature 'predict'.*serving_default"
    ):
        modelport.load(saved_model[0], signature_key="predict")


def test_lambda_layers_need_trust(tmp_path: Path, rng: np.random.Generator) -> None:
    keras.utils.set_random_seed(3)
    x = keras.Input((2,), name="x")
    model = keras.Model(x, keras.layers.Lambda(lambda t: t * 2.0 + 1.0)(x))
    model.save(tmp_path / "lam.keras")
    with pytest.raises(modelport.UntrustedArtifactError, match=r"lam\.keras: holds Python code"):
        modelport.load(tmp_path / "lam.keras")
    data = rng.standard_normal((3, 2)).astype(np.float32)
    trusted = modelport.load(tmp_path / "lam.keras", trust=True)
    np.testing.assert_allclose(trusted.predict(data), data * 2.0 + 1.0, rtol=1e-6)


def test_thread_options_after_tensorflow_started(keras_mlp: tuple[Path, Any]) -> None:
    _ = tf.constant(1.0) + 1.0  # TensorFlow's thread pools exist from the first op on
    current = tf.config.threading.get_intra_op_parallelism_threads()
    with pytest.raises(modelport.ConfigError, match="intra_op_threads: TensorFlow's thread pools"):
        modelport.load(keras_mlp[0], intra_op_threads=current + 1)
    assert modelport.load(keras_mlp[0]).predict(np.zeros((1, 4), np.float32)).shape == (1, 3)


GPUS = tf.config.list_physical_devices("GPU")


@pytest.mark.skipif(bool(GPUS), reason="this machine's TensorFlow sees a GPU")
def test_cuda_without_a_gpu_is_an_error_naming_what_tensorflow_sees(
    keras_file: tuple[Path, Any], saved_model: tuple[Path, Any]
) -> None:
    for path in (keras_file[0], saved_model[0]):
        with pytest.raises(modelport.DeviceUnavailableError, match=r"TensorFlow .* sees no GPU"):
            modelport.load(path, device="cuda").ensure_loaded()


def test_auto_answers_as_the_cpu(saved_model: tuple[Path, Any], rng: np.random.Generator) -> None:
    features = rng.standard_normal((4, 3)).astype(np.float32)
    text = np.array([b"a", b"bb", b"ccc", b"dddd"], dtype=object)
    feed = {"features": features, "text": text}
    auto = modelport.load(saved_model[0], device="auto").ensure_loaded()
    assert auto.device == ("/GPU:0" if GPUS else "/CPU:0")  # type: ignore[attr-defined]
    cpu = modelport.load(saved_model[0]).ensure_loaded()
    np.testing.assert_allclose(auto.predict(feed)["logits"], cpu.predict(feed)["logits"], rtol=1e-5)
