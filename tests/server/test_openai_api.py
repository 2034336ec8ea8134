"""The OpenAI-compatible embeddings API, called by the real ``openai`` client on a real server.

The server serves tiny sentence-transformers models (PyTorch and ONNX, one with Matryoshka
sizes) and a text classifier, with a bearer token: the client's ``api_key``. Answers must equal
``SentenceTransformer.encode`` on the same texts.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.builders import hf_models
from tests.conftest import import_or_skip
from tests.server.conftest import LiveServer, start

openai = import_or_skip("openai")
import_or_skip("sentence_transformers")
import_or_skip("onnxscript")

TOKEN = "test-token-for-the-openai-client"
TEXTS = [
    "Paris is the capital of France",
    "hello",
    "Marie Curie worked in Paris and Berlin " * 4,
    "Berlin and Munich are cities in Germany. " * 30,
]


@pytest.fixture(scope="module")
def hf(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return hf_models(tmp_path_factory.mktemp("hf"))


@pytest.fixture(scope="module")
def encoder(hf: dict[str, Path]) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(hf["st"]), device="cpu")


@pytest.fixture(scope="module")
def server(hf: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    repo = tmp_path_factory.mktemp("openai-repo")
    (repo / "st").symlink_to(hf["st"], target_is_directory=True)
    (repo / "cls").symlink_to(hf["cls"], target_is_directory=True)
    shutil.copytree(hf["st-onnx"], repo / "st-onnx")
    (repo / "st-onnx" / "modelport.yaml").write_text("runtime: {matryoshka_dims: [8, 4]}\n")
    with start(repo, auth_token=TOKEN) as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> Iterator[Any]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=TOKEN, max_retries=0) as c:
        yield c


def vectors(response: Any) -> np.ndarray:
    assert [d.index for d in response.data] == list(range(len(response.data)))
    return np.asarray([d.embedding for d in response.data], dtype=np.float32)


@pytest.mark.parametrize("model", ["st", "st-onnx"])
def test_embeddings_equal_sentence_transformers(client: Any, encoder: Any, model: str) -> None:
    want = encoder.encode(TEXTS, batch_size=32)
    # The client asks for base64 unless told otherwise, and decodes it itself.
    response = client.embeddings.create(model=model, input=TEXTS)
    assert response.model == model and response.object == "list"
    np.testing.assert_allclose(vectors(response), want, rtol=1e-4, atol=1e-5)
    tokens = [len(encoder.tokenize([t])["input_ids"][0]) for t in TEXTS]
    assert response.usage.prompt_tokens == response.usage.total_tokens == sum(tokens)
    floats = client.embeddings.create(model=model, input=TEXTS, encoding_format="float")
    assert isinstance(floats.data[0].embedding, list)
    np.testing.assert_allclose(vectors(floats), want, rtol=1e-4, atol=1e-5)
    single = client.embeddings.create(model=model, input=TEXTS[1])
    np.testing.assert_allclose(vectors(single)[0], want[1], rtol=1e-4, atol=1e-5)


def test_64_concurrent_clients_are_batched_together(
    client: Any, encoder: Any, server: LiveServer
) -> None:
    texts = [TEXTS[i % len(TEXTS)][: 7 * i + 1] for i in range(64)]
    want = encoder.encode(texts, batch_size=32)
    before = _batches(server, "st")
    with ThreadPoolExecutor(64) as threads:
        answers = list(threads.map(lambda t: client.embeddings.create(model="st", input=t), texts))
    got = np.stack([vectors(a)[0] for a in answers])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    calls, rows = (after - first for after, first in zip(_batches(server, "st"), before))
    assert rows == 64  # every text went through the model's batcher ...
    assert calls < 64  # ... which joined requests into shared model calls


def _batches(server: LiveServer, model: str) -> tuple[float, float]:
    """(model calls, rows) the batcher has run for ``model``, from /metrics."""
    text = httpx.get(
        f"{server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    ).text

    def value(kind: str) -> float:
        pattern = rf'^modelport_batch_size_{kind}\{{[^}}]*model="{re.escape(model)}"[^}}]*\}} (\S+)'
        return sum(float(v) for v in re.findall(pattern, text, flags=re.M))

    return value("count"), value("sum")


def test_dimensions_where_the_model_allows(client: Any, encoder: Any) -> None:
    full = encoder.encode(TEXTS[:2])
    short = vectors(client.embeddings.create(model="st-onnx", input=TEXTS[:2], dimensions=8))
    cut = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    np.testing.assert_allclose(short, cut, rtol=1e-4, atol=1e-5)
    same = client.embeddings.create(model="st", input=TEXTS[:2], dimensions=16)
    np.testing.assert_allclose(vectors(same), full, rtol=1e-4, atol=1e-5)
    with pytest.raises(openai.BadRequestError, match=r"allows \[4, 8\] or 16") as info:
        client.embeddings.create(model="st-onnx", input="hello", dimensions=5)
    assert info.value.body["param"] == "dimensions"
    with pytest.raises(openai.BadRequestError, match="allows only 16"):
        client.embeddings.create(model="st", input="hello", dimensions=8)


def test_models_are_listed(client: Any) -> None:
    assert sorted(m.id for m in client.models.list()) == ["cls", "st", "st-onnx"]
    assert client.models.retrieve("st-onnx").owned_by == "modelport"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_bad_requests_are_clear_4xx_in_openai_shape(client: Any, server: LiveServer) -> None:
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"model": "nope", "input": "x"}, openai.NotFoundError, "unknown model 'nope'"),
        ({"model": "cls", "input": "x"}, openai.BadRequestError, "not an embedding model"),
        ({"model": "st", "input": []}, openai.BadRequestError, "empty list"),
        ({"model": "st", "input": [101, 2023]}, openai.BadRequestError, "token ids"),
        ({"model": "st", "input": ["ok", None]}, openai.BadRequestError, "input.1. is NoneType"),
        ({"model": "st", "input": "x", "encoding_format": "int8"}, openai.BadRequestError,
         "encoding_format"),
    ]  # fmt: skip
    for arguments, error, message in cases:
        with pytest.raises(error, match=message) as info:
            client.embeddings.create(**arguments)
        assert info.value.body["type"] == "invalid_request_error", info.value.body
    raw = httpx.post(
        f"{server.url}/v1/embeddings",
        content=b"[1, 2",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert raw.status_code == 400 and "not valid JSON" in raw.json()["error"]["message"]
    wrong = openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0)
    with wrong, pytest.raises(openai.AuthenticationError):
        wrong.embeddings.create(model="st", input="x")
    # A 100,000-character text is cut as the tokenizer says, and answered.
    long = client.embeddings.create(model="st", input="the model answers " * 6000)
    assert long.usage.prompt_tokens == 48
    # And the server still answers.
    assert len(client.embeddings.create(model="st", input="still here").data) == 1
