"""The demo model, the examples and the README's Python snippets, each really run."""

from __future__ import annotations

import csv
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_iris

import modelport
from modelport.cli import main

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo" / "iris"
EXAMPLES = ROOT / "examples"
SETOSA = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}


def test_rebuilt_demo_reproduces_the_committed_model(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "demo" / "build_demo.py"),
            "--out",
            str(tmp_path / "iris"),
            "--sample",
            str(tmp_path / "iris.csv"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    x = load_iris().data.astype(np.float32)
    committed = modelport.load(DEMO).predict_batch({"input": x})
    rebuilt = modelport.load(tmp_path / "iris").predict_batch({"input": x})
    np.testing.assert_array_equal(rebuilt["label"], committed["label"])
    np.testing.assert_allclose(rebuilt["probabilities"], committed["probabilities"], atol=1e-6)
    assert (tmp_path / "iris.csv").read_text() == (ROOT / "demo" / "iris.csv").read_text()
    assert (tmp_path / "iris" / "model.py").read_text() == (DEMO / "model.py").read_text()


def test_demo_model_is_accurate_and_declared() -> None:
    model = modelport.load(DEMO)
    assert (model.name, model.framework) == ("iris", "onnx")
    assert "Iris species" in model.description
    assert model.batching.max_batch_size == 64
    iris = load_iris()
    labels = model.predict_batch({"input": iris.data.astype(np.float32)})["label"]
    assert (labels == iris.target).mean() > 0.95


@pytest.mark.parametrize(
    "payload",
    [
        SETOSA,
        [SETOSA],
        list(SETOSA.values()),
        [list(SETOSA.values())],
        {"input": [list(SETOSA.values())]},
    ],
)
def test_demo_accepts_friendly_json(payload: object) -> None:
    answer = modelport.load(DEMO)(payload)
    assert len(answer) == 1
    assert answer[0]["species"] == "setosa"
    assert set(answer[0]["probabilities"]) == {"setosa", "versicolor", "virginica"}
    assert answer[0]["probabilities"]["setosa"] > 0.9


def test_demo_names_every_species() -> None:
    iris = load_iris()
    rows = iris.data[[0, 60, 120]].tolist()
    answer = modelport.load(DEMO)(rows)
    assert [a["species"] for a in answer] == ["setosa", "versicolor", "virginica"]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"sepal_length": 5.1}, r"row 0: missing \['sepal_width'"),
        ([1.0, 2.0, 3.0], r"row 0: expected 4 numbers"),
        ([["a", "b", "c", "d"]], "expected numbers"),
    ],
)
def test_demo_rejects_bad_rows_clearly(payload: object, expected: str) -> None:
    model = modelport.load(DEMO)
    with pytest.raises(modelport.InvalidInputError, match=expected):
        model(payload)
    assert model(SETOSA)[0]["species"] == "setosa"


def test_quickstart_prediction_on_the_demo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "predictions.csv"
    with pytest.raises(SystemExit) as info:
        main(["predict", str(DEMO), str(ROOT / "demo" / "iris.csv"), "-o", str(out)])
    assert info.value.code == 0, capsys.readouterr().err
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 30
    truth = load_iris().target[::5]
    accuracy = np.mean([int(r["label"]) == t for r, t in zip(rows, truth)])
    assert accuracy > 0.9


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sentiment")
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "custom_text_model" / "build.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return out


def test_custom_text_model(sentiment: Path) -> None:
    model = modelport.load(sentiment)
    assert model.name == "sentiment"
    assert model.framework == "sklearn"
    assert type(model).__name__ == "Sentiment"
    answers = model(
        [
            "what a wonderful, brilliant film",
            "boring and awful, a waste of money",
            "great quality, I am happy",
            "the service was horrible",
        ]
    )
    assert [a["label"] for a in answers] == ["positive", "negative", "positive", "negative"]
    assert all(0.5 < a["score"] <= 1.0 for a in answers)
    assert model({"text": "a delightful story"})[0]["label"] == "positive"


def test_custom_text_model_preprocessing_is_the_tensor_the_classifier_gets(
    sentiment: Path,
) -> None:
    model = modelport.load(sentiment)
    texts, _ = model.request_inputs(model.preprocess(["Great  film", "great film"]))
    assert texts["text"].tolist() == [b"Great  film", b"great film"]  # V2 delivers bytes too
    inputs = model.preprocess_batch(texts)
    assert inputs["input"].shape == (2, 2**11)
    np.testing.assert_array_equal(inputs["input"][0], inputs["input"][1])  # case, spaces
    np.testing.assert_allclose(np.linalg.norm(inputs["input"], axis=1), 1.0)
    with pytest.raises(modelport.InvalidInputError, match="'text' field"):
        model({"body": "no text"})
    with pytest.raises(modelport.InvalidInputError, match="a text or a list of texts"):
        model([1, 2])
    # V2 and gRPC callers send the request signature's tensors and get its outputs.
    outputs = model.predict_batch({"text": np.array([b"a delightful story"], dtype=object)})
    assert outputs["label"].tolist() == ["positive"] and 0.5 < outputs["score"][0] <= 1.0


def _flask_module() -> object:
    sys.path.insert(0, str(EXAMPLES))
    try:
        import flask_app
    finally:
        sys.path.remove(str(EXAMPLES))
    return flask_app


def test_flask_app_with_the_test_client() -> None:
    app = _flask_module().create_app(DEMO)  # type: ignore[attr-defined]
    client = app.test_client()
    assert client.get("/health").get_json()["model"] == "iris"
    response = client.post("/predict", json=SETOSA)
    assert response.status_code == 200
    assert response.get_json()["predictions"][0]["species"] == "setosa"
    bad = client.post("/predict", json={"sepal_length": 1})
    assert bad.status_code == 400
    assert "missing" in bad.get_json()["error"]
    assert client.post("/predict", data="not json").status_code == 400
    assert client.post("/predict", json=[SETOSA, SETOSA]).status_code == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def flask_server() -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "flask_app.py"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60  # start-up wait, not a timed assertion
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"flask_app.py exited: {process.stderr.read() if process.stderr else ''}"
                )
            try:
                httpx.get(f"{url}/health", timeout=1.0)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail("flask_app.py did not start listening")
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stderr:
            process.stderr.close()


def test_flask_app_started_for_real(flask_server: str) -> None:
    with httpx.Client(base_url=flask_server, timeout=30) as client:
        assert client.get("/health").json() == {"status": "ok", "model": "iris", "version": "1"}
        answer = client.post("/predict", json=[SETOSA, [6.7, 3.0, 5.2, 2.3]]).json()
        assert [p["species"] for p in answer["predictions"]] == ["setosa", "virginica"]
        bad = client.post("/predict", json=[[1.0, 2.0]])
        assert bad.status_code == 400
        assert "expected 4 numbers" in bad.json()["error"]
        assert client.post("/predict", json=SETOSA).status_code == 200


def _readme_snippets() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_python_snippets_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every ```python block of the README runs, from the repository root, in order.

    (A block that cannot run alone, e.g. one that needs a running server, is fenced ``py``.)
    """
    snippets = _readme_snippets()
    assert snippets, "the README has no python snippets"
    monkeypatch.chdir(ROOT)
    namespace: dict[str, object] = {"__name__": "readme"}
    for snippet in snippets:
        exec(compile(snippet, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    # What the comments in the README promise.
    assert "['input'] ['label', 'probabilities']" in printed
    assert "setosa" in printed
    assert "[2] (1, 3)" in printed
    assert "[100.0, 0.0]" in printed
