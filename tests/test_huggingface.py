"""The Hugging Face runtime against ``transformers`` and ``sentence-transformers`` themselves.

Tiny models are built once per session (``tests.builders.hf_models``): a WordPiece tokenizer
trained here, random BERTs and a ViT saved with ``save_pretrained``, a sentence-transformers
directory saved with its own API, and an ONNX export of each. Every task must answer as the
``transformers`` pipeline (``SentenceTransformer.encode`` for embeddings), in PyTorch and in
ONNX, in-process and from a real server under 64 concurrent requests of mixed lengths.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import modelport
from modelport.errors import ConfigError, InvalidInputError
from modelport.frameworks.detect import detect_format, find_artifact
from tests.builders import HF_MAX_LENGTH, hf_models, png
from tests.conftest import import_or_skip

transformers = import_or_skip("transformers")
sentence_transformers = import_or_skip("sentence_transformers")
import_or_skip("onnxscript")

TEXTS = [
    "Paris is the capital of France",
    "hello",
    "Marie Curie worked in Paris and Berlin " * 3,
    "",
    "an unknownword and zzz qqq",
    "Berlin and Munich are cities in Germany, and Paris is in France. " * 6,
    "x" * 100_000,  # one word of 100,000 characters
    "the model answers " * 40_000,  # ... and 720,000 characters of words: cut to the limit
]
"""Mixed lengths: empty, short, long, and far past the model's 48 tokens."""
TASKS = ("st", "cls", "ner", "vit")


@pytest.fixture(scope="session")
def hf(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return hf_models(tmp_path_factory.mktemp("hf"))


def as_bytes(values: list[Any]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = [v.encode() if isinstance(v, str) else v for v in values]
    return array


def images() -> list[bytes]:
    """PNGs of several sizes and a JPEG: the processor resizes them all."""
    from PIL import Image

    out = [png(i, 20 + 7 * i) for i in range(3)]
    jpeg = io.BytesIO()
    Image.open(io.BytesIO(png(9, 50))).save(jpeg, format="JPEG")
    return [*out, jpeg.getvalue()]


# -- what the pipelines answer ------------------------------------------------------------------


class Reference:
    """The libraries' own answers, one input at a time, computed once per input."""

    def __init__(self, hf: dict[str, Path]) -> None:
        from PIL import Image
        from sentence_transformers import SentenceTransformer
        from transformers import pipeline

        self.encoder = SentenceTransformer(str(hf["st"]), device="cpu")
        self.classify = pipeline("text-classification", model=str(hf["cls"]))
        self.entities = pipeline(
            "token-classification", model=str(hf["ner"]), aggregation_strategy="simple"
        )
        self.images = pipeline("image-classification", model=str(hf["vit"]))
        self._open = Image.open
        self._cache: dict[tuple[str, Any], Any] = {}

    def __call__(self, task: str, value: Any) -> Any:
        key = (task, value)
        if key not in self._cache:
            self._cache[key] = self._compute(task, value)
        return self._cache[key]

    def _compute(self, task: str, value: Any) -> Any:
        if task == "st":
            return self.encoder.encode([value], batch_size=32)[0]
        if task == "cls":
            return self.classify(value, truncation=True)[0]
        if task == "ner":
            return [_plain(e) for e in self.entities(value)]
        return self.images(self._open(io.BytesIO(value)), top_k=1)[0]


def _plain(entity: dict[str, Any]) -> dict[str, Any]:
    return {k: (float(v) if k == "score" else v) for k, v in entity.items()}


@pytest.fixture(scope="session")
def reference(hf: dict[str, Path]) -> Reference:
    return Reference(hf)


def assert_same(task: str, got: Any, want: Any) -> None:
    """One answer (as ``model(payload)`` gives it) against the library's."""
    if task == "st":
        np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=1e-4, atol=1e-5)
    elif task == "ner":
        assert [{k: v for k, v in e.items() if k != "score"} for e in got] == [
            {k: v for k, v in e.items() if k != "score"} for e in want
        ]
        np.testing.assert_allclose(
            [e["score"] for e in got], [e["score"] for e in want], rtol=1e-4, atol=1e-5
        )
    else:
        assert got["label"] == want["label"]
        assert got["score"] == pytest.approx(want["score"], rel=1e-4, abs=1e-5)


def inputs_of(task: str) -> list[Any]:
    return images() if task == "vit" else TEXTS


def payload_of(task: str, value: Any) -> Any:
    return base64.b64encode(value).decode() if task == "vit" else value


# -- detection ----------------------------------------------------------------------------------


def test_directories_are_detected_with_their_task(hf: dict[str, Path], tmp_path: Path) -> None:
    expected = {
        "bert": "feature-extraction",
        "st": "feature-extraction",
        "cls": "text-classification",
        "ner": "token-classification",
        "vit": "image-classification",
    }
    for name, task in expected.items():
        assert detect_format(hf[name]) == "huggingface"
        assert find_artifact(hf[name]) == hf[name]
        model = modelport.load(hf[name])
        assert model.framework == "huggingface" and model.task == task, name
        assert model.backend == "pytorch"
        if f"{name}-onnx" in hf:
            assert modelport.load(hf[f"{name}-onnx"]).backend == "onnx"
    # Sharded weights (model-0000N-of-0000M.safetensors and their index) are detected too.
    sharded = tmp_path / "sharded"
    transformers.AutoModel.from_pretrained(hf["bert"]).save_pretrained(
        sharded, max_shard_size="40KB"
    )
    shutil.copy(hf["bert"] / "tokenizer.json", sharded)
    shutil.copy(hf["bert"] / "tokenizer_config.json", sharded)
    assert len(list(sharded.glob("model-*-of-*.safetensors"))) > 1
    assert not (sharded / "model.safetensors").exists()
    np.testing.assert_allclose(
        modelport.load(sharded).predict_batch({"text": as_bytes(TEXTS[:3])})["embedding"],
        modelport.load(hf["bert"]).predict_batch({"text": as_bytes(TEXTS[:3])})["embedding"],
        rtol=1e-6,
        atol=1e-6,
    )
    # Without a tokenizer or image processor, the weights are not a servable directory.
    bare = tmp_path / "bare"
    shutil.copytree(sharded, bare)
    (bare / "tokenizer.json").unlink()
    (bare / "tokenizer_config.json").unlink()
    with pytest.raises(modelport.UnknownFormatError, match="Hugging Face"):
        detect_format(bare)


def test_task_in_modelport_yaml_overrides_detection(hf: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "cls-as-embeddings"
    shutil.copytree(hf["cls"], folder)
    (folder / "modelport.yaml").write_text("task: feature-extraction\n")
    model = modelport.load(folder)
    assert model.task == "feature-extraction"
    assert model.served_signature.output_names == ["embedding", "tokens"]
    assert model.predict_batch({"text": as_bytes(["hello"])})["embedding"].shape == (1, 32)
    (folder / "modelport.yaml").write_text("task: summarization\n")
    with pytest.raises(ConfigError, match=r"'summarization' is not served.*text-classification"):
        modelport.load(folder)
    (folder / "modelport.yaml").write_text("tsk: feature-extraction\n")
    with pytest.raises(ConfigError, match="tsk"):
        modelport.load(folder)


# -- each task against the library, in PyTorch and ONNX -----------------------------------------


@pytest.mark.parametrize("backend", ["", "-onnx"])
@pytest.mark.parametrize("task", TASKS)
def test_each_task_answers_as_the_library(
    hf: dict[str, Path], reference: Reference, task: str, backend: str
) -> None:
    model = modelport.load(hf[task + backend])
    values = inputs_of(task)
    # One at a time, as /predict runs it ...
    for value in values:
        (got,) = model(payload_of(task, value))
        assert_same(task, got, reference(task, value))
    # ... and all at once: one batch, padded once to its longest row.
    answers = model([payload_of(task, v) for v in values])
    for value, got in zip(values, answers):
        assert_same(task, got, reference(task, value))


def test_embeddings_are_pooled_and_normalised_as_sentence_transformers_says(
    hf: dict[str, Path], reference: Reference
) -> None:
    model = modelport.load(hf["st"])
    out = model.predict_batch({"text": as_bytes(TEXTS)})
    assert out["embedding"].shape == (len(TEXTS), 16)  # the Dense module's size
    np.testing.assert_allclose(np.linalg.norm(out["embedding"], axis=1), 1.0, rtol=1e-5)
    # Texts past the limit are cut to it, as the tokenizer says (48 tokens), not refused.
    assert out["tokens"][-1] == HF_MAX_LENGTH
    assert out["tokens"][-2] == 3  # one word past the WordPiece limit: [CLS] [UNK] [SEP]
    assert out["tokens"][3] == 2  # the empty text: [CLS] [SEP]
    # A plain encoder: mean pooling and no normalisation, as SentenceTransformer wraps one.
    from sentence_transformers import SentenceTransformer

    plain = modelport.load(hf["bert"]).predict_batch({"text": as_bytes(TEXTS[:3])})
    want = SentenceTransformer(str(hf["bert"]), device="cpu").encode(TEXTS[:3])
    np.testing.assert_allclose(plain["embedding"], want, rtol=1e-4, atol=1e-5)
    assert not np.allclose(np.linalg.norm(plain["embedding"], axis=1), 1.0)
    # Options override the directory: CLS pooling, normalised.
    cls = modelport.load(hf["bert"], pooling="cls", normalize=True)
    hidden = transformers.pipeline("feature-extraction", model=str(hf["bert"]))(TEXTS[0])
    first = np.asarray(hidden[0][0], np.float32)
    got = cls.predict_batch({"text": as_bytes(TEXTS[:1])})["embedding"][0]
    np.testing.assert_allclose(got, first / np.linalg.norm(first), rtol=1e-4, atol=1e-5)


def test_token_classification_aggregation_strategies(
    hf: dict[str, Path], reference: Reference
) -> None:
    from transformers import pipeline

    text = TEXTS[2]
    for strategy in ("none", "first", "max", "average"):
        model = modelport.load(hf["ner"], aggregation_strategy=strategy)
        want = pipeline(
            "token-classification", model=str(hf["ner"]), aggregation_strategy=strategy
        )(text)
        (got,) = model(text)
        assert got, strategy  # the tiny model finds entities, so the comparison means something
        assert_same("ner", got, [_plain(e) for e in want])
    assert all(
        text[e["start"] : e["end"]].lower() == e["word"] for e in got if "#" not in e["word"]
    )


def test_bad_inputs_are_refused_clearly(hf: dict[str, Path]) -> None:
    text = modelport.load(hf["cls"])
    with pytest.raises(InvalidInputError, match="text 1 is int, not text"):
        text(["fine", 5])
    with pytest.raises(InvalidInputError, match="the list is empty"):
        text([])
    with pytest.raises(InvalidInputError, match="the batch is empty"):
        text.predict_batch({"text": as_bytes([])})
    with pytest.raises(InvalidInputError, match="text 0 is not UTF-8"):
        text.predict_batch({"text": as_bytes([b"\xff\xfe"])})
    vit = modelport.load(hf["vit"])
    with pytest.raises(InvalidInputError, match="image 1 is not a readable PNG or JPEG"):
        vit.predict_batch({"image": as_bytes([png(0), b"\x89PNG\r\n\x1a\nnot really"])})
    with pytest.raises(InvalidInputError, match="image 0 is not valid base64"):
        vit("*** not base64 ***")


# -- export -------------------------------------------------------------------------------------


def test_export_has_dynamic_axes_passes_parity_and_prints_no_errors(
    hf: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import onnx

    from modelport.cli import main

    folder = tmp_path / "bert"
    shutil.copytree(hf["bert"], folder)
    capfd.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["export", "onnx", str(folder)])
    assert done.value.code in (0, None)
    out, err = capfd.readouterr()
    assert "Evaluation failed" not in out + err and "rror" not in out + err, out + err
    assert f"to {folder / 'model.onnx'}" in out
    # Real texts in three batches: mixed lengths, two short ones, one cut to the limit.
    assert re.search(r"parity on 7 rows in 3 batches \(4x48, 2x\d+, 1x48\)", out), out
    graph = onnx.load(str(folder / "model.onnx")).graph
    for tensor in graph.input:
        dims = [d.dim_param or d.dim_value for d in tensor.type.tensor_type.shape.dim]
        assert dims == ["batch", "sequence"], (tensor.name, dims)
    # The directory now serves on ONNX Runtime, at any batch size and length.
    exported = modelport.load(folder)
    assert exported.backend == "onnx"
    texts = as_bytes(TEXTS)
    np.testing.assert_allclose(
        exported.predict_batch({"text": texts})["embedding"],
        modelport.load(folder, backend="pytorch").predict_batch({"text": texts})["embedding"],
        rtol=1e-4,
        atol=1e-5,
    )


def test_backend_onnx_without_an_export_is_a_clear_error(hf: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"no model\.onnx; export one with `modelport export"):
        modelport.load(hf["cls"], backend="onnx")


# -- a real server ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(hf: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.server.conftest import start

    repo = tmp_path_factory.mktemp("hf-repo")
    for name in (*TASKS, *(f"{t}-onnx" for t in TASKS)):
        (repo / name).symlink_to(hf[name], target_is_directory=True)
    with start(repo) as live:
        yield live


@pytest.mark.parametrize("backend", ["", "-onnx"])
@pytest.mark.parametrize("task", TASKS)
def test_64_concurrent_requests_of_mixed_lengths(
    server: Any, reference: Reference, task: str, backend: str
) -> None:
    """64 clients at once, each one input of its own length (or image size), over V2 REST
    (BYTES in) and /predict: batched together, each answer is still the library's."""
    name = task + backend
    pool = inputs_of(task)
    values = [pool[i % len(pool)] for i in range(64)]
    if task != "vit":
        values = [v[: 11 * i + 1] if len(v) > 500 else v for i, v in enumerate(values)]

    def infer(i: int) -> Any:
        value = values[i]
        with httpx.Client(base_url=server.url, timeout=60) as client:
            if i % 2:  # plain JSON
                response = client.post(f"/v2/models/{name}/predict", json=payload_of(task, value))
                assert response.status_code == 200, response.text
                return response.json()[0]
            if task == "vit":  # raw image bytes: V2's binary tensor data
                return _infer_binary(client, name, "image", value)
            tensor = {"name": "text", "datatype": "BYTES", "shape": [1], "data": [value]}
            response = client.post(f"/v2/models/{name}/infer", json={"inputs": [tensor]})
            assert response.status_code == 200, response.text
            return _v2_answer(task, response.json())

    with ThreadPoolExecutor(64) as threads:
        answers = list(threads.map(infer, range(64)))
    for value, got in zip(values, answers):
        assert_same(task, got, reference(task, value))


def _v2_answer(task: str, body: dict[str, Any]) -> Any:
    outputs = {o["name"]: o["data"] for o in body["outputs"]}
    if task == "st":
        return outputs["embedding"]
    if task == "ner":
        return json.loads(outputs["entities"][0])
    return {"label": outputs["label"][0], "score": outputs["score"][0]}


def _infer_binary(client: httpx.Client, name: str, input_name: str, value: bytes) -> Any:
    """A V2 request whose BYTES input travels raw (Triton's binary data extension)."""
    import tritonclient.http as triton
    from tritonclient.http import InferInput, InferRequestedOutput

    tensor = InferInput(input_name, [1], "BYTES")
    tensor.set_data_from_numpy(as_bytes([value]), binary_data=True)
    outputs = [InferRequestedOutput(n, binary_data=False) for n in ("label", "score")]
    body, length = triton.InferenceServerClient.generate_request_body([tensor], outputs=outputs)
    headers = {"Inference-Header-Content-Length": str(length)}
    response = client.post(f"/v2/models/{name}/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    return _v2_answer("vit", response.json())


def test_bad_requests_get_a_clear_4xx_and_the_server_keeps_serving(
    server: Any, reference: Reference
) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        refused = [
            client.post("/v2/models/cls/predict", json={"text": 5}),
            client.post("/v2/models/cls/predict", json=[]),
            client.post("/v2/models/cls/predict", json=["fine", {"not": "text"}]),
            client.post(
                "/v2/models/cls/infer",
                json={"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1]}]},
            ),
            client.post(
                "/v2/models/cls/infer",
                json={"inputs": [{"name": "text", "datatype": "BYTES", "shape": [0], "data": []}]},
            ),
            client.post("/v2/models/vit/predict", json=base64.b64encode(b"GIF89a junk").decode()),
            client.post("/v2/models/vit-onnx/predict", json="%%% not base64"),
        ]
        for response in refused:
            assert 400 <= response.status_code < 500, response.text
            assert response.json()["error"], response.text
        assert "is int, not text" in refused[0].json()["error"]
        assert "not a readable PNG or JPEG" in refused[5].json()["error"]
        # 100,000 characters are cut as the tokenizer says, and answered.
        long = client.post("/v2/models/cls-onnx/predict", json="x" * 100_000)
        assert long.status_code == 200, long.text
        assert_same("cls", long.json()[0], reference("cls", "x" * 100_000))
        # Still serving, every model.
        for task in TASKS:
            value = inputs_of(task)[0]
            response = client.post(f"/v2/models/{task}/predict", json=payload_of(task, value))
            assert response.status_code == 200, response.text
            assert_same(task, response.json()[0], reference(task, value))


def test_metadata_reports_the_request_signature(server: Any) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        meta = client.get("/v2/models/ner-onnx").json()
    assert meta["platform"] == "huggingface"
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"] == [{"name": "entities", "datatype": "BYTES", "shape": [-1]}]


def test_grpc_carries_texts_as_bytes(hf: dict[str, Path], reference: Reference) -> None:
    import tritonclient.grpc as triton

    from tests.server.grpc_server import ServerThread

    served = ServerThread([modelport.load(hf["st-onnx"])])
    try:
        client = triton.InferenceServerClient(served.url)
        tensor = triton.InferInput("text", [3], "BYTES")
        tensor.set_data_from_numpy(as_bytes(TEXTS[:3]))
        result = client.infer("st-onnx", [tensor])
        embeddings = result.as_numpy("embedding")
        assert embeddings.shape == (3, 16)
        for text, got in zip(TEXTS[:3], embeddings):
            assert_same("st", got, reference("st", text))
        client.close()
    finally:
        served.close()


def test_the_docs_examples_run(hf: dict[str, Path], tmp_path: Path) -> None:
    """docs/huggingface.md: its modelport.yaml and its model.py, on a copy of the classifier."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "huggingface.md").read_text()
    (config,) = re.findall(r"```yaml\n(# modelport\.yaml.*?)```", text, flags=re.S)
    (source,) = re.findall(r"```python\n(from modelport.*?)```", text, flags=re.S)
    as_encoder = tmp_path / "encoder"
    shutil.copytree(hf["cls"], as_encoder)
    (as_encoder / "modelport.yaml").write_text(config)
    model = modelport.load(as_encoder)
    assert model.task == "feature-extraction" and model.max_length == 256
    out = model.predict_batch({"text": as_bytes(TEXTS[:2])})
    np.testing.assert_allclose(np.linalg.norm(out["embedding"], axis=1), 1.0, rtol=1e-5)
    sentiment = tmp_path / "sentiment"
    shutil.copytree(hf["cls"], sentiment)
    (sentiment / "model.py").write_text(source)
    answers = modelport.load(sentiment)(TEXTS[:2])
    assert answers == [a["label"] for a in modelport.load(hf["cls"])(TEXTS[:2])]


def test_without_transformers_the_error_names_the_extra(
    hf: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(modelport.MissingDependencyError, match=r'pip install "modelport\[hf\]"'):
        modelport.load(hf["cls"])


def test_the_lambda_handler_and_modelport_predict(
    hf: dict[str, Path], reference: Reference, tmp_path: Path
) -> None:
    """Two more front doors of the same directory: a Lambda event, and a JSON-lines file."""
    import json
    import shutil
    import subprocess
    import sys

    from modelport.aws_lambda import LambdaHandler
    from modelport.settings import Settings

    texts = ["Marie Curie worked in Paris", "a short one", "Berlin is a city " * 5]
    handler = LambdaHandler(Settings(model_path=hf["st"]))
    try:
        source = Path(__file__).parent / "deploy" / "events" / "function-url.json"
        event = json.loads(source.read_text())
        path = f"/v2/models/{modelport.load(hf['st']).name}/predict"
        event["rawPath"] = path
        event["requestContext"]["http"].update(method="POST", path=path)
        event["body"], event["isBase64Encoded"] = json.dumps({"text": texts}), False
        result = handler(event)
    finally:
        handler.close()
    assert result["statusCode"] == 200, result["body"]
    answer = json.loads(result["body"])
    for got, text in zip(answer, texts):  # one embedding per text
        np.testing.assert_allclose(got, reference("st", text), rtol=1e-4, atol=1e-5)

    rows = tmp_path / "texts.jsonl"
    rows.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    out = tmp_path / "out.jsonl"
    exe = shutil.which("modelport", path=str(Path(sys.executable).parent)) or "modelport"
    done = subprocess.run(
        [exe, "predict", str(hf["st"]), str(rows), "-o", str(out), "--keep", "id"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["id"] for line in lines] == [0, 1, 2]
    for line, text in zip(lines, texts):
        np.testing.assert_allclose(line["embedding"], reference("st", text), rtol=1e-4, atol=1e-5)
