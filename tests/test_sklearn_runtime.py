"""scikit-learn runtime against scikit-learn itself, on estimators fitted at test time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
import skops.io as sio
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

import modelport
from modelport.frameworks.sklearn import SklearnModel


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return make_classification(
        n_samples=120, n_features=6, n_informative=4, n_classes=3, random_state=0
    )


@pytest.fixture(scope="module")
def pipeline(data: tuple[np.ndarray, np.ndarray]) -> Pipeline:
    x, y = data
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)


@pytest.fixture(scope="module")
def pipeline_skops(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sk") / "clf.skops"
    sio.dump(pipeline, path)
    return path


@pytest.mark.parametrize("batch", [1, 37])
def test_classifier_outputs_equal_sklearn(
    pipeline: Pipeline, pipeline_skops: Path, data: tuple[np.ndarray, np.ndarray], batch: int
) -> None:
    model = modelport.load(pipeline_skops)
    x = data[0][:batch]
    out = model.predict_batch({"input": x})
    assert sorted(out) == ["label", "probabilities"]
    np.testing.assert_array_equal(out["label"], pipeline.predict(x))
    np.testing.assert_array_equal(out["probabilities"], pipeline.predict_proba(x))
    assert out["probabilities"].shape == (batch, 3)


def test_classifier_signature_and_native_estimator(pipeline_skops: Path) -> None:
    model = modelport.load(pipeline_skops)
    assert isinstance(model, SklearnModel)
    assert model.framework == "sklearn"
    assert isinstance(model.estimator, Pipeline)
    assert model.signature is not None
    assert model.signature.to_dict() == {
        "inputs": [{"name": "input", "datatype": "FP64", "shape": [-1, 6]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, 3]},
        ],
    }


def test_single_row_without_batch_dimension_through_call(
    pipeline: Pipeline, pipeline_skops: Path, data: tuple[np.ndarray, np.ndarray]
) -> None:
    model = modelport.load(pipeline_skops)
    row = data[0][5]
    out = model(row.tolist())
    assert out["label"].tolist() == pipeline.predict(row[None, :]).tolist()


def test_regressor_multi_target(tmp_path: Path) -> None:
    x, y = make_regression(n_samples=80, n_features=4, n_targets=2, random_state=1)
    ridge = Ridge(alpha=0.5).fit(x, y)
    sio.dump(ridge, tmp_path / "ridge.skops")
    model = modelport.load(tmp_path / "ridge.skops")
    assert model.signature is not None
    assert model.signature.output("predictions") is not None
    assert model.signature.outputs[0].shape == (-1, 2)
    for batch in (1, 50):
        np.testing.assert_array_equal(model.predict(x[:batch]), ridge.predict(x[:batch]))


def test_string_labels_are_bytes_outputs(tmp_path: Path) -> None:
    x, y = make_classification(n_samples=60, n_features=4, random_state=2)
    names = np.array(["cat", "dog"])[y]
    # Tree internals are outside skops' default trust: this also checks trust=True passes them.
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, names)
    sio.dump(forest, tmp_path / "forest.skops")
    model = modelport.load(tmp_path / "forest.skops", trust=True)
    assert model.signature is not None
    assert model.signature.outputs[0].datatype == "BYTES"
    out = model.predict(x[:9])
    np.testing.assert_array_equal(out["label"], forest.predict(x[:9]))
    assert set(out["label"].tolist()) <= {"cat", "dog"}


def test_estimator_fitted_on_a_dataframe_gets_its_column_names(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    x, y = make_regression(n_samples=50, n_features=3, random_state=3)
    frame = pd.DataFrame(x, columns=["age", "height", "weight"])
    ridge = Ridge().fit(frame, y)
    sio.dump(ridge, tmp_path / "named.skops")
    model = modelport.load(tmp_path / "named.skops")
    assert isinstance(model, SklearnModel)
    assert model.feature_names == ["age", "height", "weight"]
    # copy=False keeps numpy's row-major layout, so BLAS sums in the same order.
    expected = ridge.predict(pd.DataFrame(x[:4], columns=frame.columns, copy=False))
    np.testing.assert_array_equal(model.predict(x[:4]), expected)


def test_untrusted_skops_types_are_refused_unless_trusted(
    data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    x, y = data
    hgb = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(x, y)
    sio.dump(hgb, tmp_path / "hgb.skops")
    with pytest.raises(modelport.UntrustedArtifactError) as info:
        modelport.load(tmp_path / "hgb.skops")
    message = str(info.value)
    assert "hgb.skops" in message
    assert "TreePredictor" in message
    assert "trust=True" in message
    model = modelport.load(tmp_path / "hgb.skops", trust=True)
    np.testing.assert_array_equal(model.predict(x[:10])["label"], hgb.predict(x[:10]))


@pytest.mark.parametrize("suffix", [".joblib", ".pkl"])
def test_pickle_needs_explicit_trust(
    pipeline: Pipeline, data: tuple[np.ndarray, np.ndarray], tmp_path: Path, suffix: str
) -> None:
    path = tmp_path / f"clf{suffix}"
    joblib.dump(pipeline, path)
    with pytest.raises(modelport.UntrustedArtifactError) as info:
        modelport.load(path)
    message = str(info.value)
    assert path.name in message
    assert "arbitrary code" in message
    assert "trust=True" in message
    assert isinstance(info.value, PermissionError)
    model = modelport.load(path, trust=True)
    np.testing.assert_array_equal(
        model.predict(data[0][:3])["label"], pipeline.predict(data[0][:3])
    )


def test_trust_from_modelport_yaml(
    pipeline: Pipeline, data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    joblib.dump(pipeline, tmp_path / "clf.joblib")
    (tmp_path / "modelport.yaml").write_text("name: trusted\ntrust: true\n")
    model = modelport.load(tmp_path)
    assert model.name == "trusted"
    np.testing.assert_array_equal(
        model.predict(data[0][:2])["label"], pipeline.predict(data[0][:2])
    )


def test_truncated_skops_is_a_clear_error(pipeline_skops: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.skops"
    broken.write_bytes(pipeline_skops.read_bytes()[:200])
    with pytest.raises(modelport.CorruptArtifactError, match=r"broken\.skops: not a readable"):
        modelport.load(broken)


def test_truncated_pickle_is_a_clear_error(pipeline: Pipeline, tmp_path: Path) -> None:
    joblib.dump(pipeline, tmp_path / "whole.joblib")
    broken = tmp_path / "broken.joblib"
    broken.write_bytes((tmp_path / "whole.joblib").read_bytes()[:300])
    with pytest.raises(modelport.CorruptArtifactError, match=r"broken\.joblib: could not be"):
        modelport.load(broken, trust=True)


def test_skops_file_without_an_estimator(tmp_path: Path) -> None:
    sio.dump({"not": "a model"}, tmp_path / "dict.skops")
    with pytest.raises(modelport.CorruptArtifactError, match=r"dict\.skops: holds a dict"):
        modelport.load(tmp_path / "dict.skops")


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (np.zeros((2, 5)), r"expects 6 features, got shape \[2, 5\]"),
        (np.zeros(6), r"expected a 2-D array"),
        ({"input": np.zeros((1, 6)), "other": np.zeros((1, 6))}, "takes one input"),
    ],
)
def test_bad_inputs_are_clear_and_the_model_keeps_working(
    pipeline_skops: Path, data: tuple[np.ndarray, np.ndarray], bad: Any, expected: str
) -> None:
    model = modelport.load(pipeline_skops)
    with pytest.raises(modelport.InvalidInputError, match=expected):
        model.predict(bad)
    assert model.predict(data[0][:2])["label"].shape == (2,)


def test_multi_output_classifier_gives_one_label_per_target(tmp_path: Path) -> None:
    from sklearn.multioutput import MultiOutputClassifier

    x, y = make_classification(n_samples=80, n_features=4, random_state=4)
    targets = np.column_stack([y, 1 - y, (x[:, 0] > 0).astype(int)])
    clf = MultiOutputClassifier(LogisticRegression()).fit(x, targets)
    sio.dump(clf, tmp_path / "multi.skops")
    model = modelport.load(tmp_path / "multi.skops")
    assert model.signature is not None
    assert model.signature.to_dict()["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [-1, 3]}
    ]
    np.testing.assert_array_equal(model.predict(x[:6]), clf.predict(x[:6]))


def test_runtime_class_takes_trust_as_an_option(pipeline: Pipeline, tmp_path: Path) -> None:
    joblib.dump(pipeline, tmp_path / "clf.pkl")
    with pytest.raises(modelport.UntrustedArtifactError):
        SklearnModel(tmp_path / "clf.pkl").ensure_loaded()
    model = SklearnModel(tmp_path / "clf.pkl", trust=True).ensure_loaded()
    assert isinstance(model, SklearnModel)
    assert model.estimator is not None


def test_random_forest_skops_is_refused_with_the_types_the_reason_and_the_ways_to_trust_it(
    data: tuple[np.ndarray, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelport.cli import main

    x, y = data
    forest = RandomForestClassifier(n_estimators=4, random_state=0).fit(x, y)
    folder = tmp_path / "forest"
    folder.mkdir()
    sio.dump(forest, folder / "forest.skops")
    assert sio.get_untrusted_types(file=folder / "forest.skops") == ["sklearn.tree._tree.Tree"]
    with pytest.raises(modelport.UntrustedArtifactError) as info:
        modelport.load(folder / "forest.skops")
    message = str(info.value)
    assert "forest.skops: holds types that skops does not trust by default" in message
    assert "sklearn.tree._tree.Tree" in message
    assert "without bounds checks" in message and "crash the process" in message
    for way in ("modelport.load(path, trust=True)", "--trust", "'trust: true' in modelport.yaml"):
        assert way in message
    expected = forest.predict(x[:7])
    # Each of the three ways the message names lets it load.
    loaded = modelport.load(folder / "forest.skops", trust=True)
    np.testing.assert_array_equal(loaded.predict(x[:7])["label"], expected)
    with pytest.raises(SystemExit) as exit_info:
        main(["info", str(folder)])
    assert exit_info.value.code == 1
    assert "--trust" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["info", str(folder), "--trust"])
    assert exit_info.value.code in (0, None)
    assert "sklearn" in capsys.readouterr().out
    (folder / "modelport.yaml").write_text("trust: true\n")
    from_yaml = modelport.load(folder)
    np.testing.assert_array_equal(from_yaml.predict(x[:7])["label"], expected)


def test_skops_types_outside_trees_are_named_with_their_own_reason(
    data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    from sklearn.neighbors import KNeighborsClassifier

    x, y = data
    sio.dump(KNeighborsClassifier(n_neighbors=3).fit(x, y), tmp_path / "knn.skops")
    untrusted = sio.get_untrusted_types(file=tmp_path / "knn.skops")
    assert untrusted and not any("_tree.Tree" in t for t in untrusted)
    with pytest.raises(modelport.UntrustedArtifactError) as info:
        modelport.load(tmp_path / "knn.skops")
    message = str(info.value)
    assert all(t in message for t in untrusted)
    assert "skops does not vouch for" in message and "bounds checks" not in message
    assert "trust=True" in message
