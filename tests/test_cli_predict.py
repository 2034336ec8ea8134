"""``modelport predict``: batch files through the real CLI, chunk by chunk."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
import xgboost as xgb
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from modelport.cli import main

FEATURES = ["f0", "f1", "f2", "f3"]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the CLI in-process; return (exit status, stderr)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    return int(info.value.code or 0), capsys.readouterr().err


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    x, y = make_classification(
        n_samples=300, n_features=4, n_informative=3, n_redundant=0, n_classes=3, random_state=0
    )
    return x, y


@pytest.fixture(scope="module")
def classifier(data: tuple[np.ndarray, np.ndarray]) -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(*data)


@pytest.fixture(scope="module")
def skops_file(classifier: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "clf.skops"
    sio.dump(classifier, path)
    return path


@pytest.fixture
def csv_file(data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> Path:
    path = tmp_path / "rows.csv"
    pd.DataFrame(data[0], columns=FEATURES).to_csv(path, index=False)
    return path


def test_csv_to_csv(
    skops_file: Path,
    csv_file: Path,
    classifier: Pipeline,
    data: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out.csv"
    code, err = run(["predict", str(skops_file), str(csv_file), "-o", str(out)], capsys)
    assert code == 0, err
    assert f"wrote 300 rows to {out}" in err
    assert "rows/s" in err
    got = pd.read_csv(out)
    assert list(got.columns) == ["label", "probabilities_0", "probabilities_1", "probabilities_2"]
    x = pd.read_csv(csv_file).to_numpy()  # the values as the CSV carries them
    np.testing.assert_array_equal(got["label"], classifier.predict(x))
    np.testing.assert_allclose(
        got.filter(like="probabilities").to_numpy(), classifier.predict_proba(x), rtol=1e-12
    )
    assert not (tmp_path / "out.csv.partial").exists()


def test_parquet_in_several_chunks(
    skops_file: Path,
    classifier: Pipeline,
    data: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src, out = tmp_path / "rows.parquet", tmp_path / "out.parquet"
    pd.DataFrame(data[0], columns=FEATURES).to_parquet(src, row_group_size=50)
    code, err = run(["predict", str(skops_file), str(src), "-o", str(out), "-b", "7"], capsys)
    assert code == 0, err
    got = pd.read_parquet(out)
    np.testing.assert_array_equal(got["label"], classifier.predict(data[0]))
    np.testing.assert_array_equal(
        np.stack(got["probabilities"].to_numpy()), classifier.predict_proba(data[0])
    )


def test_jsonl_into_a_multi_input_model(
    multi_io_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(3)
    a = rng.standard_normal((10, 3)).astype(np.float32)
    b = rng.integers(0, 5, (10, 3))
    src, out = tmp_path / "rows.jsonl", tmp_path / "out.jsonl"
    # Column order differs from the model's, and an extra "id" column is ignored.
    src.write_text(
        "".join(
            json.dumps({"id": i, "b": b[i].tolist(), "a": a[i].tolist()}) + "\n" for i in range(10)
        )
    )
    code, err = run(["predict", str(multi_io_onnx), str(src), "-o", str(out), "-b", "4"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 10
    np.testing.assert_allclose([r["sum"] for r in rows], a + b.astype(np.float32), rtol=1e-6)
    assert [r["argmax"] for r in rows] == a.argmax(axis=1).tolist()


def test_npy_in_and_out_in_several_chunks(
    data: tuple[np.ndarray, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    x = data[0].astype(np.float32)
    booster = xgb.train(
        {"objective": "multi:softprob", "num_class": 3, "seed": 0, "nthread": 1},
        xgb.DMatrix(x, label=data[1]),
        num_boost_round=5,
    )
    booster.save_model(tmp_path / "boost.json")
    src, out = tmp_path / "x.npy", tmp_path / "p.npy"
    np.save(src, x)
    code, err = run(
        ["predict", str(tmp_path / "boost.json"), str(src), "-o", str(out), "-b", "64"], capsys
    )
    assert code == 0, err
    got = np.load(out)
    assert got.shape == (300, 3)
    np.testing.assert_array_equal(got, booster.inplace_predict(x))


@pytest.fixture
def batch_recorder(tmp_path: Path) -> Path:
    """A model whose only output is, for every row, the size of the batch it came in."""
    d = tmp_path / "recorder"
    d.mkdir()
    (d / "model.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            import modelport

            class Recorder(modelport.Model):
                signature = modelport.Signature(
                    inputs=[modelport.TensorSpec("x", "FP64", (-1, 5))],
                    outputs=[modelport.TensorSpec("batch", "INT64", (-1,))],
                )

                def predict(self, inputs):
                    rows = len(inputs["x"])
                    return {"batch": np.full(rows, rows, dtype=np.int64)}
            """
        )
    )
    return d


def test_a_file_larger_than_a_read_block_goes_through_in_batches(
    batch_recorder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # About 2 MB: pyarrow reads it in 1 MiB blocks, which are cut into batches of 1000.
    rows = 30_500
    src, out = tmp_path / "big.csv", tmp_path / "out.csv"
    values = np.random.default_rng(0).standard_normal((rows, 5))
    np.savetxt(src, values, delimiter=",", header="a,b,c,d,e", comments="", fmt="%.10f")
    assert src.stat().st_size > 1.5 * 2**20
    code, err = run(
        ["predict", str(batch_recorder), str(src), "-o", str(out), "-b", "1000"], capsys
    )
    assert code == 0, err
    batches = pd.read_csv(out)["batch"].to_numpy()
    assert len(batches) == rows
    assert set(batches.tolist()) == {1000, 500}
    assert (batches == 500).sum() == 500


def test_columns_follow_the_names_a_model_was_trained_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(5)
    train = pd.DataFrame(rng.standard_normal((40, 3)), columns=["height", "age", "weight"])
    ridge = Ridge().fit(train, train["age"] * 2 - train["weight"])
    sio.dump(ridge, tmp_path / "named.skops")
    # The file has the columns in another order plus an id the model never saw.
    shuffled = train[["weight", "height", "age"]].assign(id=range(40))
    shuffled.to_csv(tmp_path / "in.csv", index=False)
    out = tmp_path / "out.csv"
    code, err = run(
        ["predict", str(tmp_path / "named.skops"), str(tmp_path / "in.csv"), "-o", str(out)], capsys
    )
    assert code == 0, err
    np.testing.assert_allclose(pd.read_csv(out)["predictions"], ridge.predict(train), rtol=1e-9)


def test_pickle_needs_trust_on_the_command_line(
    classifier: Pipeline, csv_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    joblib.dump(classifier, tmp_path / "clf.joblib")
    out = tmp_path / "out.csv"
    argv = ["predict", str(tmp_path / "clf.joblib"), str(csv_file), "-o", str(out)]
    code, err = run(argv, capsys)
    assert code == 1
    assert "arbitrary code" in err
    assert not out.exists()
    code, err = run([*argv, "--trust"], capsys)
    assert code == 0, err
    assert len(pd.read_csv(out)) == 300


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_missing_column_names_it_and_the_columns_found(
    multi_io_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "rows.jsonl"
    src.write_text(json.dumps({"a": [1.0, 2.0, 3.0], "c": [1, 2, 3]}) + "\n")
    code, err = run(
        ["predict", str(multi_io_onnx), str(src), "-o", str(tmp_path / "o.csv")], capsys
    )
    assert code == 1
    line = _error_line(err)
    assert "missing column 'b'" in line
    assert "columns found: a, c" in line
    assert not (tmp_path / "o.csv").exists()
    assert not (tmp_path / "o.csv.partial").exists()


def test_non_numeric_column(
    skops_file: Path, csv_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = pd.read_csv(csv_file)
    frame["f2"] = "tall"
    frame.to_csv(csv_file, index=False)
    code, err = run(
        ["predict", str(skops_file), str(csv_file), "-o", str(tmp_path / "o.csv")], capsys
    )
    assert code == 1
    line = _error_line(err)
    assert "column 'f2' is not numeric" in line
    assert "'tall'" in line


def test_text_in_a_late_block_of_a_numeric_column(
    skops_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "late.csv"
    values = np.random.default_rng(1).standard_normal((40_000, 4))
    np.savetxt(src, values, delimiter=",", header=",".join(FEATURES), comments="", fmt="%.8f")
    with src.open("a") as fh:
        fh.write("1.0,oops,3.0,4.0\n")
    code, err = run(["predict", str(skops_file), str(src), "-o", str(tmp_path / "o.csv")], capsys)
    assert code == 1
    line = _error_line(err)
    assert "late.csv" in line
    assert "'oops'" in line


def test_wrong_number_of_columns(
    skops_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "three.csv"
    src.write_text("a,b,c\n1,2,3\n")
    code, err = run(["predict", str(skops_file), str(src), "-o", str(tmp_path / "o.csv")], capsys)
    assert code == 1
    assert "takes 4 features per row; the file has 3 columns: a, b, c" in _error_line(err)


@pytest.mark.parametrize("which", ["input", "output"])
def test_unknown_extension(
    skops_file: Path,
    csv_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    which: str,
) -> None:
    src, out = csv_file, tmp_path / "o.csv"
    if which == "input":
        src = tmp_path / "rows.xlsx"
        src.write_bytes(b"PK")
    else:
        out = tmp_path / "o.xlsx"
    code, err = run(["predict", str(skops_file), str(src), "-o", str(out)], capsys)
    assert code == 1
    line = _error_line(err)
    assert f"unknown {which} file type '.xlsx'" in line
    assert ".csv" in line
    # The same process, the same model: the next good call works.
    good = tmp_path / "good.jsonl"
    assert run(["predict", str(skops_file), str(csv_file), "-o", str(good)], capsys)[0] == 0
    assert len(good.read_text().splitlines()) == 300


def test_npy_cannot_hold_two_outputs(
    skops_file: Path, csv_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o.npy"
    code, err = run(["predict", str(skops_file), str(csv_file), "-o", str(out)], capsys)
    assert code == 1
    assert "holds one array, and the model returns 2 outputs" in _error_line(err)
    assert not out.exists()


def test_the_installed_command_exits_non_zero_with_one_line(
    skops_file: Path, tmp_path: Path
) -> None:
    src = tmp_path / "rows.csv"
    src.write_text("f0,f1,f2,f3\n1,2,3,x\n")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from modelport.cli import main; main()",
            "predict",
            str(skops_file),
            str(src),
            "-o",
            str(tmp_path / "o.csv"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "column 'f3' is not numeric" in result.stderr
    assert "Traceback" not in result.stderr


def test_keep_copies_an_id_column_that_is_not_a_feature(
    skops_file: Path,
    csv_file: Path,
    classifier: Pipeline,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    frame = pd.read_csv(csv_file)
    frame.insert(0, "customer", [f"c{i}" for i in range(len(frame))])
    frame.to_csv(csv_file, index=False)
    out = tmp_path / "out.parquet"
    argv = ["predict", str(skops_file), str(csv_file), "-o", str(out), "-b", "64"]
    code, err = run(argv, capsys)
    assert code == 1
    assert "(pass columns that are not features, such as an id, through with --keep)" in err
    code, err = run([*argv, "--keep", "customer"], capsys)
    assert code == 0, err
    got = pd.read_parquet(out)
    assert list(got.columns) == ["customer", "label", "probabilities"]
    assert got["customer"].tolist() == frame["customer"].tolist()
    np.testing.assert_array_equal(got["label"], classifier.predict(frame[FEATURES].to_numpy()))
    code, err = run([*argv, "--keep", "nope"], capsys)
    assert code == 1
    assert "no column(s) ['nope'] to keep; columns found: customer, f0" in _error_line(err)


def test_bad_json_line_is_named(
    skops_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "rows.jsonl"
    src.write_text('{"input": [1, 2, 3, 4]}\n\n{"input": [1, 2, 3,\n')
    code, err = run(["predict", str(skops_file), str(src), "-o", str(tmp_path / "o.csv")], capsys)
    assert code == 1
    assert "rows.jsonl: line 3 is not JSON" in _error_line(err)


def test_tsv_in_and_out(
    skops_file: Path,
    classifier: Pipeline,
    data: tuple[np.ndarray, np.ndarray],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src, out = tmp_path / "rows.tsv", tmp_path / "out.tsv"
    pd.DataFrame(data[0][:20], columns=FEATURES).to_csv(src, sep="\t", index=False)
    code, err = run(["predict", str(skops_file), str(src), "-o", str(out)], capsys)
    assert code == 0, err
    got = pd.read_csv(out, sep="\t")
    np.testing.assert_array_equal(
        got["label"], classifier.predict(pd.read_csv(src, sep="\t").to_numpy())
    )
