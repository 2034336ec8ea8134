from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

import modelport
from modelport.frameworks.detect import detect_format


def test_missing_artifact_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(modelport.ArtifactNotFoundError, match=r"nope\.onnx: no such file"):
        modelport.load(tmp_path / "nope.onnx")


def test_truncated_onnx_is_a_clear_error(tiny_onnx: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(tiny_onnx.read_bytes()[:100])
    with pytest.raises(
        modelport.CorruptArtifactError, match=r"broken\.onnx: could not be loaded as an ONNX model"
    ):
        modelport.load(broken)


def test_unknown_format(tmp_path: Path) -> None:
    odd = tmp_path / "weights.xyz"
    odd.write_bytes(b"\x00\x01")
    with pytest.raises(
        modelport.UnknownFormatError,
        match=r"weights\.xyz: unrecognised model artifact; expected \.onnx",
    ):
        modelport.load(odd)


def test_ambiguous_json_that_is_not_xgboost(tmp_path: Path) -> None:
    doc = tmp_path / "model.json"
    doc.write_text('{"hello": 1}')
    with pytest.raises(modelport.UnknownFormatError, match="unrecognised"):
        detect_format(doc)
    doc.write_text("{not json")
    with pytest.raises(modelport.CorruptArtifactError, match="not valid JSON"):
        detect_format(doc)


def test_directory_with_config_and_user_model(tiny_onnx: Path, tmp_path: Path) -> None:
    d = tmp_path / "iris"
    d.mkdir()
    shutil.copy(tiny_onnx, d / "model.onnx")
    (d / "modelport.yaml").write_text(
        textwrap.dedent(
            """
            name: flowers
            version: 3
            description: three scores
            batching: {max_batch_size: 8, max_queue_delay_ms: 5}
            runtime: {intra_op_threads: 1}
            """
        )
    )
    (d / "model.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            import modelport

            class Flowers(modelport.Model):
                labels = ["a", "b", "c"]

                def preprocess(self, payload):
                    return {"x": np.asarray(payload["measurements"], dtype=np.float32)}

                def postprocess(self, outputs):
                    return [self.labels[i] for i in outputs["y"].argmax(axis=1)]
            """
        )
    )
    model = modelport.load(d)
    assert (model.name, model.version, model.description) == ("flowers", "3", "three scores")
    assert model.batching.max_batch_size == 8
    assert model.options["intra_op_threads"] == 1
    assert model.framework == "onnx"
    x = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    labels = model({"measurements": x.tolist()})
    scores = modelport.load(tiny_onnx).predict(x)
    assert labels == [["a", "b", "c"][i] for i in scores.argmax(axis=1)]


def test_invalid_config_names_the_field(tiny_onnx: Path, tmp_path: Path) -> None:
    shutil.copy(tiny_onnx, tmp_path / "m.onnx")
    (tmp_path / "modelport.yaml").write_text(
        "batching: {max_batch_size: -3}\nbogus: 1\nwarmup: {batch_size: 4}\n"
    )
    with pytest.raises(modelport.ConfigError) as info:
        modelport.load(tmp_path)
    message = str(info.value)
    assert "modelport.yaml" in message
    assert "batching.max_batch_size" in message
    assert "bogus" in message
    assert "warmup.batch_size" in message  # misspelt (batch_sizes): refused, not ignored


def test_config_signature_overrides_and_validates(tiny_onnx: Path, tmp_path: Path) -> None:
    shutil.copy(tiny_onnx, tmp_path / "m.onnx")
    (tmp_path / "modelport.yaml").write_text(
        "signature:\n  inputs: [{name: x, datatype: FP99, shape: [-1, 4]}]\n"
    )
    with pytest.raises(modelport.ConfigError, match="datatype"):
        modelport.load(tmp_path)


def test_user_model_import_error_is_clear(tiny_onnx: Path, tmp_path: Path) -> None:
    shutil.copy(tiny_onnx, tmp_path / "m.onnx")
    (tmp_path / "model.py").write_text("import not_a_real_module_xyz\n")
    with pytest.raises(
        modelport.ConfigError, match=r"model\.py: failed to import: ModuleNotFoundError"
    ):
        modelport.load(tmp_path)


def test_several_artifacts_need_a_choice(
    tiny_onnx: Path, multi_io_onnx: Path, tmp_path: Path
) -> None:
    shutil.copy(tiny_onnx, tmp_path / "a.onnx")
    shutil.copy(multi_io_onnx, tmp_path / "b.onnx")
    with pytest.raises(modelport.ConfigError, match="several possible artifacts"):
        modelport.load(tmp_path)
    (tmp_path / "modelport.yaml").write_text("artifact: b.onnx\n")
    assert modelport.load(tmp_path).signature.input_names == ["a", "b"]


def test_python_only_model_directory(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            import modelport

            class Doubler(modelport.Model):
                signature = modelport.Signature(
                    inputs=[modelport.TensorSpec("x", "FP64", (-1,))],
                    outputs=[modelport.TensorSpec("y", "FP64", (-1,))],
                )

                def load(self):
                    self.factor = 2.0

                def predict(self, inputs):
                    return {"y": inputs["x"] * self.factor}
            """
        )
    )
    model = modelport.load(tmp_path)
    assert model.framework == "python"
    np.testing.assert_array_equal(model.predict_batch({"x": np.array([1.0, 2.0])})["y"], [2.0, 4.0])
