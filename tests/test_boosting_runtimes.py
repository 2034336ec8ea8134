"""XGBoost and LightGBM runtimes against the boosters themselves, trained at test time."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
import xgboost as xgb

import modelport
from modelport.frameworks.detect import detect_format

ROWS, FEATURES = 200, 5


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.standard_normal((ROWS, FEATURES)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int) + (x[:, 2] > 1).astype(int)  # 3 classes
    return x, y


@pytest.fixture(scope="module")
def boosters(
    data: tuple[np.ndarray, np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Saved models: XGBoost multiclass (.json, .ubj) and binary; LightGBM multiclass and
    regression."""
    x, y = data
    out = tmp_path_factory.mktemp("boost")
    multi = xgb.train(
        {"objective": "multi:softprob", "num_class": 3, "seed": 0, "nthread": 1},
        xgb.DMatrix(x, label=y),
        num_boost_round=8,
    )
    multi.save_model(out / "multi.json")
    multi.save_model(out / "multi.ubj")
    binary = xgb.train(
        {"objective": "binary:logistic", "seed": 0, "nthread": 1},
        xgb.DMatrix(x, label=(y > 0).astype(int)),
        num_boost_round=8,
    )
    binary.save_model(out / "binary.json")
    params = {"seed": 0, "verbose": -1, "num_threads": 1, "deterministic": True}
    lgb.train(
        {**params, "objective": "multiclass", "num_class": 3},
        lgb.Dataset(x, y),
        num_boost_round=8,
    ).save_model(out / "multi.txt")
    lgb.train(
        {**params, "objective": "regression"},
        lgb.Dataset(x, x[:, 0] * 2.0 - x[:, 3]),
        num_boost_round=8,
    ).save_model(out / "regression.txt")
    return {p.name: p for p in out.iterdir()}


def _xgb(path: Path) -> xgb.Booster:
    booster = xgb.Booster()
    booster.load_model(str(path))
    return booster


@pytest.mark.parametrize("name", ["multi.json", "multi.ubj", "binary.json"])
@pytest.mark.parametrize("batch", [1, 64])
def test_xgboost_outputs_equal_inplace_predict(
    boosters: dict[str, Path], data: tuple[np.ndarray, np.ndarray], name: str, batch: int
) -> None:
    model = modelport.load(boosters[name])
    assert model.framework == "xgboost"
    x = data[0][:batch]
    expected = _xgb(boosters[name]).inplace_predict(x)
    got = model.predict_batch({"input": x})["predictions"]
    np.testing.assert_array_equal(got, expected)
    assert got.shape == ((batch, 3) if name.startswith("multi") else (batch,))


def test_xgboost_signature_from_the_booster(boosters: dict[str, Path]) -> None:
    multi = modelport.load(boosters["multi.json"])
    assert multi.signature is not None
    assert multi.signature.to_dict() == {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, FEATURES]}],
        "outputs": [{"name": "predictions", "datatype": "FP32", "shape": [-1, 3]}],
    }
    binary = modelport.load(boosters["binary.json"], nthread=1)
    assert binary.signature is not None
    assert binary.signature.outputs[0].shape == (-1,)


def test_xgboost_with_feature_names(data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    x, y = data
    names = [f"f_{i}" for i in range(FEATURES)]
    booster = xgb.train(
        {"objective": "reg:squarederror", "seed": 0, "nthread": 1},
        xgb.DMatrix(x, label=y.astype(float), feature_names=names),
        num_boost_round=4,
    )
    booster.save_model(tmp_path / "named.json")
    model = modelport.load(tmp_path / "named.json")
    assert getattr(model, "feature_names", None) == names
    np.testing.assert_array_equal(
        model.predict(x[:10]), booster.inplace_predict(x[:10], validate_features=False)
    )


@pytest.mark.parametrize("name", ["multi.txt", "regression.txt"])
@pytest.mark.parametrize("batch", [1, 64])
def test_lightgbm_outputs_equal_booster_predict(
    boosters: dict[str, Path], data: tuple[np.ndarray, np.ndarray], name: str, batch: int
) -> None:
    assert detect_format(boosters[name]) == "lightgbm"
    model = modelport.load(boosters[name], num_threads=1)
    assert model.framework == "lightgbm"
    x = data[0][:batch]
    expected = lgb.Booster(model_file=str(boosters[name])).predict(x)
    got = model.predict(x)
    np.testing.assert_array_equal(got, expected)
    assert model.signature is not None
    assert model.signature.inputs[0].shape == (-1, FEATURES)
    assert model.signature.outputs[0].shape == ((-1, 3) if name == "multi.txt" else (-1,))


def test_corrupt_xgboost_json_is_a_clear_one_line_error(
    boosters: dict[str, Path], tmp_path: Path
) -> None:
    text = boosters["multi.json"].read_text()
    truncated = tmp_path / "truncated.json"
    truncated.write_text(text[: len(text) // 2])
    with pytest.raises(modelport.CorruptArtifactError, match=r"truncated\.json: not valid JSON"):
        modelport.load(truncated)
    # Valid JSON that XGBoost cannot read: the message names the file, without a C++ trace.
    mangled = tmp_path / "mangled.json"
    mangled.write_text(text.replace('"trees"', '"treez"'))
    with pytest.raises(modelport.CorruptArtifactError) as info:
        modelport.load(mangled)
    message = str(info.value)
    assert "mangled.json: could not be loaded as an XGBoost model" in message
    assert "\n" not in message
    assert "Stack trace" not in message


def test_truncated_xgboost_ubj(boosters: dict[str, Path], tmp_path: Path) -> None:
    data = boosters["multi.ubj"].read_bytes()
    broken = tmp_path / "broken.ubj"
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(modelport.CorruptArtifactError, match=r"broken\.ubj: could not be loaded"):
        modelport.load(broken)


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.9, 0.97, 0.995])
def test_truncated_lightgbm_is_a_clear_error(
    boosters: dict[str, Path], tmp_path: Path, fraction: float
) -> None:
    # LightGBM itself aborts the whole process on some of these cuts.
    data = boosters["multi.txt"].read_bytes()
    broken = tmp_path / "cut.txt"
    broken.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(
        modelport.CorruptArtifactError, match=r"cut\.txt: not a complete LightGBM model"
    ):
        modelport.load(broken)


def test_lightgbm_cut_inside_feature_importances(boosters: dict[str, Path], tmp_path: Path) -> None:
    data = boosters["multi.txt"].read_bytes()
    start = data.index(b"feature_importances:")
    broken = tmp_path / "cut.txt"
    broken.write_bytes(data[: start + len(b"feature_importances:\nColumn_")])
    with pytest.raises(modelport.CorruptArtifactError, match="cut short"):
        modelport.load(broken)
    # Cut cleanly after the trees, the model is whole and loads.
    whole = tmp_path / "trees_only.txt"
    whole.write_bytes(data[: data.index(b"end of trees") + len(b"end of trees\n")])
    x = np.ones((2, FEATURES), np.float32)
    np.testing.assert_array_equal(
        modelport.load(whole).predict(x),
        lgb.Booster(model_file=str(boosters["multi.txt"])).predict(x),
    )


def test_text_file_that_is_not_lightgbm(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    with pytest.raises(modelport.UnknownFormatError, match=r"notes\.txt: unrecognised"):
        modelport.load(notes)


@pytest.mark.parametrize("name", ["multi.json", "multi.txt"])
def test_bad_input_shape_is_clear_and_the_model_keeps_working(
    boosters: dict[str, Path], data: tuple[np.ndarray, np.ndarray], name: str
) -> None:
    model = modelport.load(boosters[name])
    with pytest.raises(
        modelport.InvalidInputError, match=r"expected shape \[rows, 5\], got \[2, 4\]"
    ):
        model.predict(np.zeros((2, 4), np.float32))
    with pytest.raises(modelport.InvalidInputError, match="expected numbers"):
        model.predict(np.array([["a"] * FEATURES], dtype=object))
    assert model.predict(data[0][:2]).shape[0] == 2
