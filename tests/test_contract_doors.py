"""One contract at every front door: the same payload gets the same answer in-process, over
``/predict``, V2 REST (JSON and binary), gRPC, the Lambda handler and ``modelport predict``.

A real ``modelport serve`` process serves four models: the iris demo (per-payload hooks), a
text encoder (a tokenizer trained here, tokenising and pooling as batch hooks), an image
classifier (PNG bytes) and a model of named fields. Pipelines are checked in
``tests/integrations``, each in its engine's session.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

import modelport
from modelport import Model
from modelport.aws_lambda import LambdaHandler
from modelport.settings import Settings
from tests.builders import CORPUS, fields_model, image_model, png, text_model

ROOT = Path(__file__).resolve().parents[1]
HANG_GUARD = 60.0
FLOWER = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
CASES: list[tuple[str, Any]] = [
    ("iris", [5.1, 3.5, 1.4, 0.2]),
    ("iris", [FLOWER, {**FLOWER, "petal_length": 5.5, "petal_width": 2.1}]),
    ("text", "hello world"),
    ("text", {"text": ["short text", CORPUS[-1], "words the tokenizer never saw"]}),
    ("image", {"image": base64.b64encode(png(1)).decode()}),
    ("fields", {"age": 31, "income": 52000, "city": "lyon"}),
    ("fields", [{"age": 70, "income": 1000, "city": "nice"}, {"age": 5, "income": 0, "city": "?"}]),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CASES)]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("zoo")
    shutil.copytree(ROOT / "demo" / "iris", root / "iris", ignore=shutil.ignore_patterns("__*"))
    # A long gather window, so that concurrent requests meet in batches on a busy machine.
    text_model(root / "text", "{max_batch_size: 64, max_queue_delay_ms: 50}")
    image_model(root / "image")
    fields_model(root / "fields")
    return root


@pytest.fixture(scope="module")
def models(zoo: Path) -> dict[str, Model]:
    return {
        name: modelport.load(zoo / name, trust=True) for name in ("iris", "text", "image", "fields")
    }


class Served:
    def __init__(self, http: str, grpc: str) -> None:
        self.http, self.grpc = http, grpc


@pytest.fixture(scope="module")
def served(zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    http_port, grpc_port = free_port(), free_port()
    exe = shutil.which("modelport", path=str(Path(sys.executable).parent)) or "modelport"
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [exe, "serve", str(zoo), "--http-port", str(http_port), "--grpc-port",
             str(grpc_port), "--trust", "--log-format", "text"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{http_port}"
    try:
        with httpx.Client(base_url=url) as client:
            for _ in range(1200):
                if proc.poll() is not None:
                    raise AssertionError(f"server exited:\n{log.read_text()}")
                try:
                    if client.get("/v2/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                threading.Event().wait(0.05)
            else:
                raise AssertionError(f"server not ready:\n{log.read_text()}")
        yield Served(url, f"127.0.0.1:{grpc_port}")
    finally:
        proc.terminate()
        proc.wait(HANG_GUARD)


# -- what each door should answer -----------------------------------------------------------


def request_tensors(model: Model, payload: Any) -> dict[str, np.ndarray]:
    return model.request_inputs(model.preprocess(payload))[0]


def plain(value: Any) -> Any:
    """The JSON form of an answer (what ``/predict`` sends back)."""
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


def assert_same(got: Any, want: Any, where: str = "answer") -> None:
    """Equal, numbers to float32 tolerance."""
    got, want = plain(got), plain(want)
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), f"{where}: {got!r} != {want!r}"
        for key in want:
            assert_same(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6), f"{where}: {got} != {want}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def datatype(model: Model, name: str) -> str:
    sig = model.served_signature
    spec = sig.input(name) if sig else None
    assert spec is not None
    return spec.datatype


def v2_json(model: Model, tensors: Mapping[str, np.ndarray]) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": name,
                "datatype": datatype(model, name),
                "shape": list(array.shape),
                "data": plain(array.reshape(-1)),
            }
            for name, array in tensors.items()
        ]
    }


def v2_outputs(doc: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in doc["outputs"]}


# -- the table ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "payload"), CASES, ids=IDS)
def test_every_door_answers_as_in_process(
    served: Served, models: dict[str, Model], zoo: Path, name: str, payload: Any
) -> None:
    model = models[name]
    answer = model(payload)
    tensors = request_tensors(model, payload)
    outputs = model.predict_batch(tensors)
    if type(model).postprocess is Model.postprocess:
        assert_same(answer, outputs)  # no per-payload answer: the request outputs are it

    with httpx.Client(base_url=served.http, timeout=HANG_GUARD) as client:
        # /predict: the payload itself.
        got = client.post(f"/v2/models/{name}/predict", json=payload)
        assert got.status_code == 200, got.text
        assert_same(got.json(), answer, "/predict")
        # V2 REST, JSON (BYTES data are text: an image travels in binary below).
        if name != "image":
            got = client.post(f"/v2/models/{name}/infer", json=v2_json(model, tensors))
            assert got.status_code == 200, got.text
            assert_same(v2_outputs(got.json()), outputs, "V2 JSON")
        # V2 metadata: the request signature.
        meta = client.get(f"/v2/models/{name}").json()
        sig = model.served_signature
        assert sig is not None
        assert [i["name"] for i in meta["inputs"]] == sig.input_names

    # V2 REST binary and gRPC, through Triton's clients.
    for triton, url in ((triton_http, served.http[len("http://") :]), (triton_grpc, served.grpc)):
        client = triton.InferenceServerClient(url)
        inputs = []
        for key, array in tensors.items():
            tensor = triton.InferInput(key, list(array.shape), datatype(model, key))
            if triton is triton_http:
                tensor.set_data_from_numpy(array, binary_data=True)
            else:
                tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        result = client.infer(name, inputs)
        got_outputs = {key: result.as_numpy(key) for key in outputs}
        assert_same(got_outputs, outputs, triton.__name__)
        client.close()


@pytest.fixture(scope="module")
def lambda_handler(zoo: Path) -> Iterator[LambdaHandler]:
    handler = LambdaHandler(Settings(model_path=zoo, trust=True))
    yield handler
    handler.close()


def lambda_event(path: str, body: Any) -> dict[str, Any]:
    source = ROOT / "tests" / "deploy" / "events" / "function-url.json"
    event: dict[str, Any] = json.loads(source.read_text())
    event["rawPath"] = path
    event["requestContext"]["http"].update(method="POST", path=path)
    event["body"], event["isBase64Encoded"] = json.dumps(body), False
    return event


@pytest.mark.parametrize(("name", "payload"), CASES, ids=IDS)
def test_the_lambda_handler_answers_as_in_process(
    lambda_handler: LambdaHandler, models: dict[str, Model], name: str, payload: Any
) -> None:
    model = models[name]
    result = lambda_handler(lambda_event(f"/v2/models/{name}/predict", payload))
    assert result["statusCode"] == 200, result["body"]
    assert_same(json.loads(result["body"]), model(payload), "Lambda /predict")
    if name != "image":
        tensors = request_tensors(model, payload)
        result = lambda_handler(lambda_event(f"/v2/models/{name}/infer", v2_json(model, tensors)))
        assert result["statusCode"] == 200, result["body"]
        assert_same(v2_outputs(json.loads(result["body"])), model.predict_batch(tensors))


def test_modelport_predict_on_files(zoo: Path, models: dict[str, Model], tmp_path: Path) -> None:
    """Text in a JSON-lines file and named fields in a CSV go through the batch hooks."""
    texts = [" ".join(CORPUS[: 1 + i % 5]) for i in range(7)]
    (tmp_path / "texts.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    rows = [(31, 52000, "lyon"), (70, 1000, "nice"), (5, 0, "paris")]
    (tmp_path / "people.csv").write_text(
        "age,income,city\n" + "".join(f"{a},{i},{c}\n" for a, i, c in rows)
    )
    exe = shutil.which("modelport", path=str(Path(sys.executable).parent)) or "modelport"
    for name, source, payload in (
        ("text", "texts.jsonl", {"text": texts}),
        ("fields", "people.csv", [dict(zip(("age", "income", "city"), r)) for r in rows]),
    ):
        out = tmp_path / f"{name}.jsonl"
        done = subprocess.run(
            [exe, "predict", str(zoo / name), str(tmp_path / source), "-o", str(out), "-b", "2",
             "--trust"],
            capture_output=True, text=True, timeout=HANG_GUARD,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        want = models[name](payload)
        key = next(iter(want))
        assert_same([line[key] for line in lines], want[key], f"modelport predict {name}")


# -- under concurrency: texts of mixed lengths meet in one batch --------------------------------


def batch_counters(url: str, model: str) -> tuple[float, float]:
    """(model calls, rows) from the server's own batch-size histogram."""
    text = httpx.get(f"{url}/metrics").text
    found = {}
    for kind in ("count", "sum"):
        pattern = rf'^modelport_batch_size_{kind}\{{[^}}]*model="{model}"[^}}]*\}} (\S+)$'
        found[kind] = sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))
    return found["count"], found["sum"]


@pytest.mark.parametrize("door", ["predict", "v2", "grpc"])
def test_64_concurrent_texts_of_mixed_lengths(
    served: Served, models: dict[str, Model], door: str
) -> None:
    model = models["text"]
    words = " ".join(CORPUS).split()
    texts = [" ".join(words[: 1 + (7 * i) % 40]) for i in range(64)]
    want = [model(t)["embedding"][0] for t in texts]
    calls_before, rows_before = batch_counters(served.http, "text")
    barrier = threading.Barrier(64)

    def call(i: int) -> np.ndarray:
        body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [texts[i]]}]}
        if door == "grpc":
            client = triton_grpc.InferenceServerClient(served.grpc)
            client.is_server_ready()  # connected before the start
            tensor = triton_grpc.InferInput("text", [1], "BYTES")
            tensor.set_data_from_numpy(np.array([texts[i].encode()], dtype=object))
            barrier.wait(HANG_GUARD)
            out = client.infer("text", [tensor]).as_numpy("embedding")[0]
            client.close()
            return np.asarray(out)
        with httpx.Client(base_url=served.http, timeout=HANG_GUARD) as http:
            http.get("/v2/health/live")  # connected before the start
            barrier.wait(HANG_GUARD)
            if door == "predict":
                r = http.post("/v2/models/text/predict", json={"text": texts[i]})
                assert r.status_code == 200, r.text
                return np.asarray(r.json()["embedding"][0])
            r = http.post("/v2/models/text/infer", json=body)
            assert r.status_code == 200, r.text
            return np.asarray(r.json()["outputs"][0]["data"])

    with ThreadPoolExecutor(64) as pool:
        got = list(pool.map(call, range(64), timeout=HANG_GUARD * 2))
    for i, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=f"text {i}")
    calls, rows = batch_counters(served.http, "text")
    calls -= calls_before
    assert rows - rows_before == 64
    # Texts of 1 to 40 words join the same batches: far fewer model calls than requests.
    print(f"{door}: 64 requests in {calls:.0f} model calls")
    assert calls <= 16, f"{door}: 64 requests took {calls:.0f} model calls"


# -- the batch hooks in-process ------------------------------------------------------------------


def test_bucketing_sorts_rows_by_length_and_keeps_their_order(zoo: Path, tmp_path: Path) -> None:
    whole = modelport.load(zoo / "text", trust=True)
    # The model's class declares bucket_size 4; modelport.yaml may turn it off.
    bucketed = modelport.load(text_model(tmp_path / "b", None, bucket=4), trust=True)
    off = modelport.load(text_model(tmp_path / "whole", "{bucket_size: 0}", bucket=4), trust=True)
    assert (bucketed.bucket_size, off.bucket_size) == (4, 0)
    words = " ".join(CORPUS).split()
    lengths = (30, 1, 12, 2, 25, 3, 7, 40, 1, 9, 2, 33)
    texts = np.array([" ".join(words[:n]).encode() for n in lengths], dtype=object)
    want = whole.predict_batch({"text": texts})["embedding"]
    calls = type(bucketed).calls
    calls.clear()
    got = bucketed.predict_batch({"text": texts})["embedding"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Shortest first; each group of at least 4 rows (but the last) pads to its own longest.
    rows = [r for r, _ in calls]
    assert len(calls) > 1 and sum(rows) == len(texts) and min(rows[:-1]) >= 4
    assert [n for _, n in calls] == sorted(n for _, n in calls)
    assert calls[-1][1] == max(len(t.split()) for t in texts.tolist())
    assert calls[0][1] < calls[-1][1]
    # Rows of one length stay one call; bucketing off runs the batch whole.
    calls.clear()
    bucketed.predict_batch({"text": np.array([b"hello world"] * 12, dtype=object)})
    assert calls == [(12, 2)]
    type(off).calls.clear()
    off.predict_batch({"text": texts})
    assert type(off).calls == [(12, max(len(t.split()) for t in texts.tolist()))]


def test_a_bad_row_fails_only_its_request(served: Served) -> None:
    """An empty text fails in preprocess_batch; the batcher isolates it from its batch mates."""
    texts = ["hello world", "", "short text"] * 4

    def call(text: str) -> httpx.Response:
        with httpx.Client(base_url=served.http, timeout=HANG_GUARD) as client:
            return client.post("/v2/models/text/predict", json={"text": text})

    with ThreadPoolExecutor(len(texts)) as pool:
        answers = list(pool.map(call, texts))
    for text, r in zip(texts, answers):
        if text:
            assert r.status_code == 200, r.text
        else:
            assert r.status_code == 400
            assert "is empty" in r.json()["error"]


def test_postprocess_batch_must_answer_every_row(tmp_path: Path) -> None:
    source = tmp_path / "model.py"
    source.write_text(
        "import numpy as np\nimport modelport\n\n"
        "class Drops(modelport.Model):\n"
        "    request_signature = modelport.Signature(\n"
        "        inputs=[modelport.TensorSpec('x', 'FP32', (-1,))],\n"
        "        outputs=[modelport.TensorSpec('y', 'FP32', (-1,))])\n"
        "    def preprocess_batch(self, inputs):\n"
        "        return inputs\n"
        "    def predict(self, inputs):\n"
        "        return {'y': inputs['x'] * 2}\n"
        "    def postprocess_batch(self, outputs, inputs):\n"
        "        return {'y': outputs['y'][:1]}\n"
    )
    model = modelport.load(tmp_path, trust=True)
    with pytest.raises(modelport.PredictionError, match="one row per request row"):
        model.predict_batch({"x": np.ones(3, np.float32)})


@pytest.mark.parametrize(
    ("yaml_text", "named"),
    [
        ("batching: {bucket_size: -1}", "batching.bucket_size"),
        ("request_signature: {inputs: [{name: text, datatype: TEXT, shape: [-1]}]}",
         "request_signature.inputs.0.datatype"),
    ],
)  # fmt: skip
def test_a_bad_contract_setting_names_itself(tmp_path: Path, yaml_text: str, named: str) -> None:
    text_model(tmp_path / "text", None)
    (tmp_path / "text" / "modelport.yaml").write_text(f"name: text\n{yaml_text}\n")
    with pytest.raises(modelport.ConfigError, match=re.escape(named)):
        modelport.load(tmp_path / "text", trust=True)
