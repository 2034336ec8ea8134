"""``docs/deploy-lambda.md``, really run: its build commands, and each of its ``curl`` requests
sent through :class:`modelport.aws_lambda.LambdaHandler` serving the demo iris model.

Also: every V2 tensor the docs and the README send to iris names iris' own inputs.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import modelport
from modelport.aws_lambda import LambdaHandler
from modelport.cli import main
from modelport.settings import Settings

from .conftest import ROOT

DOC = ROOT / "docs" / "deploy-lambda.md"
DEMO = ROOT / "demo" / "iris"
TOKEN = "doc-example-token-0123456789"


def _blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def _commands(block: str) -> Iterator[list[str]]:
    """Shell words of each command; continuation lines and quotes over lines joined."""
    pending = ""
    for line in block.splitlines():
        pending = f"{pending}\n{line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # a quote still open: the command goes on
            continue
        pending = ""
        if words:
            yield words


class Request:
    """What one ``curl`` line of the doc asks for."""

    def __init__(self, words: list[str]) -> None:
        self.words = words
        self.method = "GET"
        self.body = ""
        self.headers: dict[str, str] = {}
        self.signed = False
        url = ""
        args = iter(words[1:])
        for word in args:
            if word == "-X":
                self.method = next(args)
            elif word == "-d":
                self.body = next(args)
                self.method = "POST" if self.method == "GET" else self.method
            elif word == "-H":
                key, _, value = next(args).partition(":")
                self.headers[key.strip().lower()] = value.strip()
            elif word in ("--aws-sigv4", "--user") or word == "${SIGV4[@]}":
                self.signed = True
                if word != "${SIGV4[@]}":
                    next(args)
            elif "/v2" in word:
                url = word
        assert url.startswith("$API/"), words
        self.path = url[url.index("/v2") :]

    def event(self, token: str | None) -> dict[str, Any]:
        """An HTTP API (payload 2.0) event; ``$TOKEN`` becomes ``token``, or the
        ``Authorization`` header goes when ``token`` is None."""
        headers = {"content-type": "application/json", **self.headers}
        if "authorization" in headers:
            if token is None:
                del headers["authorization"]
            else:
                headers["authorization"] = headers["authorization"].replace("$TOKEN", token)
        return {
            "version": "2.0",
            "routeKey": "ANY /{proxy+}",
            "rawPath": self.path,
            "rawQueryString": "",
            "headers": headers,
            "requestContext": {"http": {"method": self.method, "path": self.path}},
            "body": self.body,
            "isBase64Encoded": False,
        }


def _requests() -> list[Request]:
    text = DOC.read_text()
    return [
        Request(words)
        for block in _blocks(text)
        for words in _commands(block)
        if words[0] == "curl"
    ]


@pytest.fixture(scope="module")
def handlers() -> Iterator[dict[str, LambdaHandler]]:
    """The function as built by default (IAM checked by API Gateway, not by the handler),
    and as built with ``--lambda-auth token``."""
    made = {
        "iam": LambdaHandler(Settings(model_path=DEMO)),
        "token": LambdaHandler.from_environment(
            {"MODELPORT_MODEL": str(DEMO), "MODELPORT_AUTH_TOKEN": TOKEN}
        ),
    }
    yield made
    for handler in made.values():
        handler.close()


def test_every_curl_of_the_doc_gets_its_answer(handlers: dict[str, LambdaHandler]) -> None:
    requests = _requests()
    routes = sorted({r.path for r in requests})
    assert routes == [
        "/v2/health/ready",
        "/v2/models/iris",
        "/v2/models/iris/infer",
        "/v2/models/iris/predict",
    ]
    signature = modelport.load(DEMO).signature
    assert signature is not None
    for request in requests:
        with_token = "authorization" in request.headers
        assert with_token != request.signed, request.words  # one way to authenticate each
        handler = handlers["token" if with_token else "iam"]
        result = handler(request.event(TOKEN))
        assert result["statusCode"] == 200, (request.words, result["body"])
        answer = json.loads(result["body"])
        if request.path.endswith("/infer"):
            sent = [t["name"] for t in json.loads(request.body)["inputs"]]
            assert sent == signature.input_names == ["input"]
            outputs = {o["name"]: o for o in answer["outputs"]}
            assert outputs["label"]["data"] == [0]  # setosa
            assert outputs["probabilities"]["shape"] == [1, 3]
        elif request.path.endswith("/predict"):
            assert answer[0]["species"] == "setosa"
        elif request.path == "/v2/models/iris":
            assert answer["name"] == "iris"
            assert [t["name"] for t in answer["inputs"]] == ["input"]
            assert [t["name"] for t in answer["outputs"]] == ["label", "probabilities"]
        if with_token:  # the same request without its token is refused
            assert handlers["token"](request.event(None))["statusCode"] == 401


def test_the_wrong_name_the_doc_once_sent_is_a_400_naming_both(
    handlers: dict[str, LambdaHandler],
) -> None:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    words = ["curl", "-X", "POST", "$API/v2/models/iris/infer", "-d", json.dumps(body)]
    result = handlers["iam"](Request(words).event(None))
    assert result["statusCode"] == 400
    assert json.loads(result["body"])["error"] == (
        "missing input(s) ['input'] and unexpected input(s) ['x']; the model expects ['input']"
    )


def test_the_build_commands_are_what_modelport_build_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    first = list(_commands(_blocks(DOC.read_text())[0]))
    assert first[0][:3] == ["modelport", "build", "./iris"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "iris").symlink_to(DEMO, target_is_directory=True)
    with pytest.raises(SystemExit) as info:
        main(first[0][1:])
    out = capsys.readouterr().out
    assert info.value.code in (0, None), out
    assert "Note: The HTTP API and the Function URL accept only AWS SigV4-signed" in out
    steps = [line.strip() for line in out.split("Next:\n", 1)[1].splitlines()]
    assert steps == [shlex.join(words) for words in first[1:]]
    template = (tmp_path / "build" / "iris-fn" / "template.yaml").read_text()
    assert "DefaultAuthorizer: AWS_IAM" in template


def _doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_iris_tensor_in_the_docs_is_named_as_iris_expects() -> None:
    """V2 bodies sent to ``/v2/models/iris/...infer`` and tritonclient inputs made for iris."""
    signature = modelport.load(DEMO).signature
    assert signature is not None
    checked = 0
    for path in _doc_files():
        text = path.read_text()
        for block in _blocks(text):
            for words in _commands(block):
                if words[0] != "curl" or not any("/models/iris/" in w for w in words):
                    continue
                if not any(w.endswith("/infer") for w in words) or "-d" not in words:
                    continue
                body = words[words.index("-d") + 1]
                if body.startswith("@"):
                    continue  # a file the reader brings
                for tensor in json.loads(body)["inputs"]:
                    assert signature.input(tensor["name"]) is not None, (path.name, tensor)
                    checked += 1
        for snippet in re.findall(r"```py(?:thon)?\n(.*?)```", text, flags=re.S):
            if '"iris"' not in snippet:
                continue
            for name in re.findall(r"InferInput\(\s*\"([^\"]+)\"", snippet):
                assert signature.input(name) is not None, (path.name, name)
                checked += 1
    assert checked >= 3  # the README's curl and tritonclient snippet, and this doc's infer
